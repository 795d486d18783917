"""Memory admission and overruns: which piece of work may start, and what to do with one that
alone exceeds the memory budget.

The ``Budget`` (``budget.py``) admits a task only when it fits beside the workers already
running (read from their pid files, ``chunks/pid_files.py``) and the bytes staged on disk. A
worker over the budget is killed (SIGKILL); its task is split in halves and retried (pieces are
named ``-p0``, ``-p1``, ...) and a single run still too big is given up with the reason. A
chunk is whole again once every piece is done. The coordinator journals each split, so after a
crash the chunk's pieces are the journaled ones (``Journal.chunk_pieces``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from helmproc.engine.chunks.pid_files import running_workers
from helmproc.engine.facts import RunRef, ShardFact
from helmproc.engine.job.budget import Budget, dir_bytes, format_size
from helmproc.engine.job.progress import Progress

DISK_SAMPLE_S = 2.0


@dataclass(frozen=True)
class Task:
    """One unit of pool work: a whole chunk, or a piece of one after a memory overrun."""

    chunk_id: int
    part: str
    runs: tuple[RunRef, ...]
    skip_reasons: tuple[tuple[str, str], ...] = ()


class Overruns:
    """Admission against the budget, the watchdog that stops overrunning workers, the splits."""

    def __init__(self, budget: Budget | None, pid_dir: Path, scratch: Path, progress: Progress):
        self.budget = budget
        self.pid_dir = pid_dir
        self.scratch = scratch
        self.progress = progress
        # pieces of each split chunk still being worked on
        self.parts: dict[int, set[str]] = {}
        # (chunk, part) -> bytes used, for pieces the watchdog killed
        self._overrun: dict[tuple[int, str], int] = {}
        # a worker was killed: the pool's next BrokenProcessPool is collateral, not a failure
        self.pool_killed = False
        self._scratch_bytes = 0
        self._scratch_at = 0.0

    def _staged_bytes(self, staged: dict[int, tuple[ShardFact, ...]]) -> int:
        now = time.monotonic()
        if now - self._scratch_at >= DISK_SAMPLE_S:
            self._scratch_bytes = dir_bytes(self.scratch)
            self._scratch_at = now
        return self._scratch_bytes + sum(f.n_bytes for facts in staged.values() for f in facts)

    def admit(self, inflight: Iterable[Task], staged: dict[int, tuple[ShardFact, ...]]) -> bool:
        """Whether one more task fits beside ``inflight`` and the ``staged`` shards."""
        if self.budget is None:
            return True
        pids = {key: pid for pid, key in running_workers(self.pid_dir).items()}
        running = [(pids.get((t.chunk_id, t.part)), self.budget.estimate(None)) for t in inflight]
        return self.budget.admit(self.budget.estimate(None), running, self._staged_bytes(staged))

    def stop_overruns(self) -> None:
        """SIGKILL every worker over the budget (once each), remembering what it used."""
        if self.budget is None:
            return
        running = running_workers(self.pid_dir)
        for pid, used in self.budget.overruns(running):
            cid, part = running[pid]
            if (cid, part) in self._overrun:
                continue
            self._overrun[(cid, part)] = used
            self.progress.note(
                f"chunk {cid}{'/' + part if part else ''} uses {format_size(used)}, over the "
                f"memory budget of {format_size(self.budget.memory_budget)}: stopping it"
            )
            self.pool_killed = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def overrun_reason(self, task: Task) -> str | None:
        """Why ``task`` was stopped, if the watchdog stopped it (asked once per stop)."""
        used = self._overrun.pop((task.chunk_id, task.part), None)
        if used is None:
            return None
        assert self.budget is not None
        return (
            f"needs more memory than the budget ({format_size(used)} > "
            f"{format_size(self.budget.memory_budget)}); raise --memory-budget"
        )

    def split(self, task: Task, reason: str) -> list[Task]:
        """The tasks that replace an overrunning one: its two halves, or, for a single run,
        the same task with that run skipped for ``reason``."""
        parts = self.parts.setdefault(task.chunk_id, {task.part})
        parts.discard(task.part)
        runs = [r for r in task.runs if r.key not in dict(task.skip_reasons)]
        if len(runs) <= 1:
            skip = task.skip_reasons + tuple((r.key, reason) for r in runs)
            retry = [Task(task.chunk_id, task.part, task.runs, skip)]
        else:
            half = len(task.runs) // 2
            retry = [
                Task(task.chunk_id, task.part + "0", task.runs[:half], task.skip_reasons),
                Task(task.chunk_id, task.part + "1", task.runs[half:], task.skip_reasons),
            ]
        for t in retry:
            parts.add(t.part)
        return retry

    def piece_done(self, chunk_id: int, part: str) -> bool:
        """Mark one piece finished; True when its chunk has no piece left in flight."""
        parts = self.parts.get(chunk_id)
        if parts is None:
            return True
        parts.discard(part)
        if parts:
            return False
        del self.parts[chunk_id]
        return True

    def forget(self, chunk_id: int) -> None:
        """The chunk was given up for this session."""
        self.parts.pop(chunk_id, None)
