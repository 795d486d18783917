"""Memory admission and overruns: which piece of work may start, and what to do with one that
would push the process tree over the memory budget.

The ``Budget`` (``budget.py``) admits a task only when its estimate (from its largest run's
input bytes, recorded with the plan) fits beside the workers already running (read from their
pid files, ``chunks/pid_files.py``, each counted at its own estimate) and the bytes staged on
disk. The ``Watchdog`` (``watchdog.py``, a thread started by ``start``) stops a worker (SIGKILL)
when the tree's USS passes the budget less its headroom; that breaks the pool, and the
coordinator then splits only the stopped task in halves (pieces are named ``-p0``, ``-p1``,
...; a single run still too big is given up with the reason) and sends the other tasks in
flight back to the queue whole (``pool_killed``: not their failure). A chunk is whole again
once every piece is done. The coordinator journals each split, so after a crash the chunk's
pieces are the journaled ones (``Journal.chunk_pieces``); nothing here is persisted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from helmproc.engine.chunks.pid_files import running_workers
from helmproc.engine.facts import RunRef, ShardFact
from helmproc.engine.job.budget import Budget, dir_bytes, format_size
from helmproc.engine.job.progress import Progress
from helmproc.engine.job.watchdog import Watchdog

DISK_SAMPLE_S = 2.0


@dataclass(frozen=True)
class Task:
    """One unit of pool work: a whole chunk, or a piece of one after a memory overrun."""

    chunk_id: int
    part: str
    runs: tuple[RunRef, ...]
    skip_reasons: tuple[tuple[str, str], ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(r.key for r in self.runs)


class Overruns:
    """Admission against the budget, the watchdog that stops workers, the splits."""

    def __init__(
        self,
        budget: Budget | None,
        pid_dir: Path,
        scratch: Path,
        progress: Progress,
        run_bytes: dict[str, int] | None = None,
    ):
        self.budget = budget
        self.pid_dir = pid_dir
        self.scratch = scratch
        self.progress = progress
        self.run_bytes = run_bytes or {}
        self.watchdog = Watchdog(budget.memory_budget, pid_dir) if budget is not None else None
        # pieces of each split chunk still being worked on
        self.parts: dict[int, set[str]] = {}
        self._scratch_bytes = 0
        self._scratch_at = 0.0

    def start(self) -> None:
        if self.watchdog is not None:
            self.watchdog.start()

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()

    @property
    def pool_killed(self) -> bool:
        """The watchdog stopped a worker: the pool is broken (until ``rearm``)."""
        return self.watchdog is not None and self.watchdog.killed

    def rearm(self) -> None:
        """A new pool replaced the broken one."""
        if self.watchdog is not None:
            self.watchdog.rearm()

    def largest_run_bytes(self, task: Task) -> int | None:
        """Input bytes of the task's largest run still to convert (None: a size unknown)."""
        skipped = dict(task.skip_reasons)
        sizes = [self.run_bytes.get(r.key) for r in task.runs if r.key not in skipped]
        if any(size is None for size in sizes):
            return None
        return max((size for size in sizes if size is not None), default=0)

    def _staged_bytes(self, staged: dict[int, tuple[ShardFact, ...]]) -> int:
        now = time.monotonic()
        if now - self._scratch_at >= DISK_SAMPLE_S:
            self._scratch_bytes = dir_bytes(self.scratch)
            self._scratch_at = now
        return self._scratch_bytes + sum(f.n_bytes for facts in staged.values() for f in facts)

    def admit(
        self, task: Task, inflight: Iterable[Task], staged: dict[int, tuple[ShardFact, ...]]
    ) -> bool:
        """Whether ``task`` fits beside ``inflight`` and the ``staged`` shards."""
        if self.budget is None:
            return True
        if self.pool_killed:
            return False  # the pool is going down: nothing starts until it is replaced
        pids = {key: pid for pid, key in running_workers(self.pid_dir).items()}
        budget = self.budget
        running = [
            (pids.get((t.chunk_id, t.part)), budget.estimate(self.largest_run_bytes(t)))
            for t in inflight
        ]
        estimate = budget.estimate(self.largest_run_bytes(task))
        return budget.admit(estimate, running, self._staged_bytes(staged))

    def overrun_reason(self, task: Task) -> str | None:
        """Why ``task`` was stopped, if the watchdog stopped it (asked once per stop)."""
        if self.watchdog is None or self.budget is None:
            return None
        stop = self.watchdog.stopped(task.chunk_id, task.part)
        if stop is None:
            return None
        self.budget.learn_stopped(stop.grown, self.largest_run_bytes(task))
        piece = f"{task.chunk_id}{'/' + task.part if task.part else ''}"
        self.progress.note(
            f"chunk {piece} took the process tree to {format_size(stop.tree)} (its worker "
            f"{format_size(stop.used)}), over the memory budget of "
            f"{format_size(self.budget.memory_budget)}: stopped it"
        )
        return (
            f"needs more memory than the budget (the process tree reached "
            f"{format_size(stop.tree)}, this worker {format_size(stop.used)}; budget "
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
