"""The coordinator: drive a planned job through process → publish → clean, journaling each step.

Only this module writes the journal, and only after the fact it records is durable. On start
(a fresh job or ``resume``) it first repairs every crash window from the journal and the disk:

    journal says        disk says                                    action
    planned / failed    anything (stray temp files are swept)        process again
    processed           destination already holds every shard        journal uploaded (no resend)
    processed           staged shards present with journaled sha256  publish
    processed           a staged shard missing or different          process again (rebuild)
    uploaded            -                                            delete staged files, cleaned
    cleaned             -                                            nothing

With ``retry_failed`` (``helmproc resume --retry-failed``), every chunk whose latest outcomes
include a failed run is processed again as a whole, whatever its state, and only those: its ok
runs rewrite byte-identical rows at the same shard paths, its failed runs get another chance,
and the chunk is published and cleaned again. The ``processed`` event of such a reprocess is
marked ``retry`` (the journal allows uploaded/cleaned -> processed only then). If the retry
itself fails before it is processed, a published chunk stays as it was (no ``failed`` event:
its data is safe) and a later ``--retry-failed`` tries again.

Conversion is deterministic, so re-processing a chunk rewrites byte-identical shards at the
same paths; publishing is idempotent for the same reason. Chunks run in a process pool
(``w_process_chunk``), publishing in the committer thread, and this loop folds their reports
into journal events. A chunk whose worker fails (not a bad run: the machine) is journaled
``failed`` and retried up to ``max_attempts`` times in this session; later sessions retry it
again on ``resume``.

Memory: the ``Budget`` admits a chunk only when it fits (see ``engine/budget.py``). A worker
that alone exceeds the budget is killed; its piece of work is split in halves and retried
(shards of the pieces are named ``-p0``, ``-p1``, ...); a single run still too big is recorded
as failed with the reason. The chunk is journaled ``processed`` once all its pieces are done,
with the shards of every piece. Split decisions are not journaled: after a crash the chunk
starts whole again and splits the same way.

The dataset card rides with the session's first commit, is refreshed every ``card_interval_s``
(riding with the next commit) and is committed on its own at the end. Commits are paced by the
destination's ``max_commits_per_hour`` unless ``commits_per_hour`` overrides it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helmproc.engine.chunks.shards import remove_temp_files, shard_matches
from helmproc.engine.chunks.worker import ChunkResult, ChunkSpec
from helmproc.engine.errors import DiskFullError, HelmprocError, PublishError
from helmproc.engine.facts import RunOutcome, RunRef
from helmproc.engine.job.budget import Budget, dir_bytes, format_size
from helmproc.engine.job.executors import LOCAL, ChunkExecutor, make_executor
from helmproc.engine.job.interrupts import JobInterrupted, StopRequest
from helmproc.engine.job.progress import NullProgress, Progress
from helmproc.engine.job.workdir import JobPaths
from helmproc.engine.publish.card import render_card
from helmproc.engine.publish.committer import Committer, PublishReport
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.pacer import CommitPacer
from helmproc.engine.safe_paths import make_private_dir
from helmproc.journal.status import StatusReport
from helmproc.journal.store import (
    RETRY_ONLY_FROM,
    ChunkPlan,
    ChunkState,
    ChunkStatus,
    Journal,
    ShardFact,
)

POLL_S = 0.2
DEFAULT_MAX_ATTEMPTS = 3
CARD_INTERVAL_S = 600.0


DISK_SAMPLE_S = 2.0


@dataclass(frozen=True)
class ExecOptions:
    max_workers: int
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    publish_max_files: int = 50
    budget: Budget | None = field(default=None, compare=False)
    upload_workers: int = 1
    # None: the destination's own pace (Hub: 100 commits/hour; a local folder: unlimited)
    commits_per_hour: float | None = None
    card_interval_s: float = CARD_INTERVAL_S
    # "local" (process pool) or "dask://HOST:PORT"
    executor: str = LOCAL
    # process again every chunk whose latest outcomes include a failed run (resume --retry-failed)
    retry_failed: bool = False


@dataclass(frozen=True)
class Task:
    """One unit of pool work: a whole chunk, or a piece of one after a memory overrun."""

    chunk_id: int
    part: str
    runs: tuple[RunRef, ...]
    skip_reasons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RepairPlan:
    """What each unfinished chunk needs, decided from the journal and the disk."""

    to_process: tuple[int, ...]
    to_publish: tuple[int, ...]
    to_clean: tuple[int, ...]
    recovered_uploads: tuple[tuple[int, str], ...]
    # chunks in ``to_process`` only to retry their failed runs (``retry_failed``)
    retried: tuple[int, ...] = ()


def has_failed_runs(status: ChunkStatus) -> bool:
    return any(not outcome.ok for outcome in status.outcomes)


def decide_repairs(
    statuses: dict[int, ChunkStatus],
    staging: Path,
    publisher: Publisher,
    *,
    retry_failed: bool = False,
) -> RepairPlan:
    to_process: list[int] = []
    to_publish: list[int] = []
    to_clean: list[int] = []
    recovered: list[tuple[int, str]] = []
    retried: list[int] = []
    for cid in sorted(statuses):
        st = statuses[cid]
        if retry_failed and has_failed_runs(st):
            to_process.append(cid)
            retried.append(cid)
            continue
        if st.state is ChunkState.CLEANED:
            continue
        if st.state is ChunkState.UPLOADED:
            to_clean.append(cid)
        elif st.state is ChunkState.PROCESSED:
            commit = publisher.published_commit(st.shards)
            if commit is not None:
                recovered.append((cid, commit))
                to_clean.append(cid)
            elif all(shard_matches(staging, fact) for fact in st.shards):
                to_publish.append(cid)
            else:
                to_process.append(cid)
        else:
            to_process.append(cid)
    return RepairPlan(
        tuple(to_process), tuple(to_publish), tuple(to_clean), tuple(recovered), tuple(retried)
    )


class Coordinator:
    """Runs one job to completion (or until it cannot go further) in this process."""

    def __init__(
        self,
        journal: Journal,
        paths: JobPaths,
        source_config: dict[str, Any],
        publisher: Publisher,
        options: ExecOptions,
        progress: Progress | None = None,
        pool_factory: Callable[[int], ChunkExecutor] | None = None,
    ) -> None:
        self.journal = journal
        self.paths = paths
        self.source_config = source_config
        self.publisher = publisher
        self.options = options
        self.progress: Progress = progress or NullProgress()
        self.pool_factory = pool_factory or (lambda n: make_executor(options.executor, n))
        self._fatal: BaseException | None = None
        job = journal.job()
        if job is None:
            raise ValueError("journal holds no job")
        self.job = job
        self.plan: dict[int, ChunkPlan] = {c.chunk_id: c for c in journal.plan()}
        self.budget = options.budget
        # pieces of each chunk still being worked on, and finished pieces' results
        self._parts: dict[int, set[str]] = {}
        self._done_parts: dict[int, list[ChunkResult]] = {}
        self._overrun: dict[tuple[int, str], int] = {}
        self._pool_killed = False
        self._scratch_bytes = 0
        self._scratch_at = 0.0
        self._retrying: set[int] = set()  # chunks processed again for --retry-failed
        self._execution = uuid.uuid4().hex  # lets workers reuse the source within this run

    @property
    def pid_dir(self) -> Path:
        return self.paths.running

    # -- steps ---------------------------------------------------------------------------
    def _spec(self, cid: int, task: Task | None = None) -> ChunkSpec:
        task = task or Task(cid, "", self.plan[cid].runs)
        return ChunkSpec(
            job_id=self.job.job_id,
            chunk_id=cid,
            runs=task.runs,
            source_config=self.source_config,
            staging_root=str(self.paths.staging),
            scratch_root=str(self.paths.scratch),
            job_timestamp=self.job.job_timestamp,
            part=task.part,
            skip_reasons=task.skip_reasons,
            pid_dir=str(self.pid_dir),
            max_file_bytes=self.job.config.get("max_file_bytes"),
            execution=self._execution,
        )

    def _clean(self, cid: int, shards: tuple[ShardFact, ...]) -> None:
        for fact in shards:
            (self.paths.staging / fact.path).unlink(missing_ok=True)
        self.journal.record_cleaned(cid)

    def _card_text(self) -> str:
        status = self.journal.status().to_json()
        sources = [str(self.source_config.get("root") or self.source_config.get("base_url"))]
        return render_card(status, sources)

    def _committer(self) -> Committer:
        pace = self.options.commits_per_hour
        if pace is None:
            pace = self.publisher.max_commits_per_hour
        return Committer(
            self.publisher,
            self.paths.staging,
            self.options.publish_max_files,
            workers=self.options.upload_workers,
            pacer=CommitPacer(pace),
        )

    def _check_report(self, report: PublishReport) -> None:
        if report.error is None:
            return
        if isinstance(report.error, HelmprocError):  # already names the destination and a hint
            raise report.error
        raise PublishError(
            f"publishing chunks {list(report.chunk_ids)} failed: {report.error}"
        ) from report.error

    # -- budget --------------------------------------------------------------------------
    def _staged_bytes(self, staged: dict[int, tuple[ShardFact, ...]]) -> int:
        now = time.monotonic()
        if now - self._scratch_at >= DISK_SAMPLE_S:
            self._scratch_bytes = dir_bytes(self.paths.scratch)
            self._scratch_at = now
        return self._scratch_bytes + sum(f.n_bytes for facts in staged.values() for f in facts)

    def _running_pids(self) -> dict[int, tuple[int, str]]:
        """pid -> (chunk id, part) of every worker that announced itself."""
        found: dict[int, tuple[int, str]] = {}
        for path in self.pid_dir.glob("*.pid"):
            try:
                pid = int(path.read_text())
            except (OSError, ValueError):
                continue
            cid_text, _, part = path.stem.partition("-")
            found[pid] = (int(cid_text), "" if part == "all" else part)
        return found

    def _admit(self, task: Task, inflight: dict[Future[ChunkResult], Task], staged: dict) -> bool:
        if self.budget is None:
            return True
        pids = {key: pid for pid, key in self._running_pids().items()}
        running = [
            (pids.get((t.chunk_id, t.part)), self.budget.estimate(None)) for t in inflight.values()
        ]
        return self.budget.admit(self.budget.estimate(None), running, self._staged_bytes(staged))

    def _stop_overruns(self) -> None:
        if self.budget is None:
            return
        running = self._running_pids()
        for pid, used in self.budget.overruns(running):
            cid, part = running[pid]
            if (cid, part) in self._overrun:
                continue
            self._overrun[(cid, part)] = used
            self.progress.note(
                f"chunk {cid}{'/' + part if part else ''} uses {format_size(used)}, over the "
                f"memory budget of {format_size(self.budget.memory_budget)}: stopping it"
            )
            self._pool_killed = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _split(self, task: Task, used: int, queue: deque[Task]) -> None:
        """Retry an overrunning piece as two halves, or fail its single run."""
        assert self.budget is not None
        parts = self._parts.setdefault(task.chunk_id, {task.part})
        parts.discard(task.part)
        reason = (
            f"needs more memory than the budget ({format_size(used)} > "
            f"{format_size(self.budget.memory_budget)}); raise --memory-budget"
        )
        self._record_failed(task.chunk_id, f"memory budget exceeded: {reason}")
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
            queue.appendleft(t)

    def _piece_done(self, result: ChunkResult) -> bool:
        """Fold a finished piece in; True (and journal ``processed``) when its chunk is whole."""
        cid = result.chunk_id
        if self.budget is not None:
            self.budget.learn(
                result.peak_rss_bytes, result.largest_run_bytes, result.baseline_bytes
            )
        parts = self._parts.get(cid)
        self._done_parts.setdefault(cid, []).append(result)
        if parts is not None:
            parts.discard(result.part)
            if parts:
                return False
            del self._parts[cid]
        pieces = self._done_parts.pop(cid)
        shards = tuple(sorted((f for r in pieces for f in r.shards), key=lambda f: f.path))
        by_key: dict[str, RunOutcome] = {o.run.key: o for r in pieces for o in r.outcomes}
        outcomes = tuple(by_key[ref.key] for ref in self.plan[cid].runs if ref.key in by_key)
        self.journal.record_processed(cid, shards, outcomes, retry=cid in self._retrying)
        self.progress.chunk_processed(ChunkResult(cid, shards, outcomes, 0))
        return True

    def _record_failed(self, cid: int, reason: str) -> None:
        """Journal a failed attempt, except for a published chunk being retried (its data is
        safe; it stays as it was and a later ``--retry-failed`` tries again)."""
        if cid in self._retrying and self.journal.chunk_status(cid).state in RETRY_ONLY_FROM:
            return
        self.journal.record_failed(cid, reason)

    # -- the loop ------------------------------------------------------------------------
    def execute(self) -> StatusReport:
        make_private_dir(self.paths.staging, own=True)
        remove_temp_files(self.paths.staging)
        shutil.rmtree(self.paths.scratch, ignore_errors=True)
        make_private_dir(self.paths.scratch, own=True)  # workers' downloads go inside
        shutil.rmtree(self.pid_dir, ignore_errors=True)
        statuses = self.journal.chunk_statuses()
        repairs = decide_repairs(
            statuses, self.paths.staging, self.publisher, retry_failed=self.options.retry_failed
        )
        self._retrying = set(repairs.retried)
        if repairs.retried:
            n_runs = sum(1 for c in repairs.retried for o in statuses[c].outcomes if not o.ok)
            self.progress.note(
                f"retrying {n_runs} failed runs: processing their {len(repairs.retried)} "
                "chunks again"
            )
        self.progress.start(
            total_chunks=len(self.plan),
            done_chunks=sum(
                1
                for cid, s in statuses.items()
                if s.state is ChunkState.CLEANED and cid not in self._retrying
            ),
            total_runs=sum(len(c.runs) for c in self.plan.values()),
        )
        for cid, commit in repairs.recovered_uploads:
            self.journal.record_uploaded(cid, commit)
        for cid in repairs.to_clean:
            self._clean(cid, statuses[cid].shards)
            self.progress.chunk_published(cid, len(self.plan[cid].runs))

        attempts: dict[int, int] = {}  # failures of each chunk in this session
        queue: deque[Task] = deque(Task(cid, "", self.plan[cid].runs) for cid in repairs.to_process)
        committer = self._committer()
        committer.submit_card(self._card_text())  # rides with the session's first commit
        card_at = time.monotonic()
        for cid in repairs.to_publish:
            committer.submit(cid, statuses[cid].shards)
        staged: dict[int, tuple[ShardFact, ...]] = {
            cid: statuses[cid].shards for cid in repairs.to_publish
        }
        pool = self.pool_factory(self.options.max_workers)
        inflight: dict[Future[Any], Task] = {}
        stop = StopRequest(on_first=self._stopping)
        try:
            stop.__enter__()
            while (queue and not self._halted(stop)) or inflight or committer.pending:
                while (
                    queue
                    and not self._halted(stop)
                    and len(inflight) < self.options.max_workers
                    and self._admit(queue[0], inflight, staged)
                ):
                    task = queue.popleft()
                    inflight[pool.submit(self._spec(task.chunk_id, task))] = task
                if inflight:
                    done, _ = wait(list(inflight), timeout=POLL_S, return_when=FIRST_COMPLETED)
                    self._stop_overruns()
                    broken = False
                    for fut in done:
                        task = inflight.pop(fut)
                        try:
                            result = pool.collect(fut, self.paths.staging)
                        except Exception as exc:
                            lost = isinstance(exc, pool.lost_worker_errors)
                            broken = broken or (lost and pool.restart_on_loss)
                            self._task_failed(task, exc, attempts, queue)
                            continue
                        if self._piece_done(result):
                            cid = result.chunk_id
                            staged[cid] = self.journal.chunk_status(cid).shards
                            committer.submit(cid, staged[cid])
                    if broken:
                        died = BrokenProcessPool("worker died")
                        for fut, task in list(inflight.items()):
                            fut.cancel()
                            self._task_failed(task, died, attempts, queue)
                        inflight.clear()
                        self._pool_killed = False
                        pool.shutdown()
                        shutil.rmtree(self.pid_dir, ignore_errors=True)
                        pool = self.pool_factory(self.options.max_workers)
                for report in committer.reports(timeout=0 if inflight else POLL_S):
                    self._check_report(report)
                    for cid in report.chunk_ids:
                        self.journal.record_uploaded(cid, report.commit_id or "")
                        self._clean(cid, staged.pop(cid))
                        self.progress.chunk_published(cid, len(self.plan[cid].runs))
                if time.monotonic() - card_at >= self.options.card_interval_s:
                    committer.submit_card(self._card_text())  # rides with the next commit
                    card_at = time.monotonic()
            if not queue:
                committer.submit_card(self._card_text(), alone=True)  # the final card
            committer.close(drain=True)
            for report in committer.reports(timeout=0):
                self._check_report(report)
        except KeyboardInterrupt:
            pool.kill()  # the second signal: stop at once; resume sweeps what they left
            raise
        finally:
            stop.__exit__()
            pool.shutdown()
            committer.close()
        if self._fatal is not None:
            raise self._fatal
        if queue:
            raise JobInterrupted(
                f"stopped on request after finishing the chunks in flight; {len(queue)} "
                "chunks left"
            )
        report_ = self.journal.status()
        self.progress.finish(report_)
        return report_

    def _stopping(self, signal_name: str) -> None:
        self.progress.note(
            f"{signal_name}: finishing the chunks in flight, then stopping "
            "(again to stop at once; `helmproc resume` continues)"
        )

    def _halted(self, stop: StopRequest) -> bool:
        return stop.requested or self._fatal is not None

    def _task_failed(
        self, task: Task, exc: BaseException, attempts: dict[int, int], queue: deque[Task]
    ) -> None:
        used = self._overrun.pop((task.chunk_id, task.part), None)
        if used is not None:
            self._split(task, used, queue)
            return
        if isinstance(exc, BrokenProcessPool) and self._pool_killed:
            queue.appendleft(task)  # collateral of another piece's overrun: not its fault
            return
        reason = str(exc) if isinstance(exc, HelmprocError) else f"{type(exc).__name__}: {exc}"
        self._record_failed(task.chunk_id, reason)
        if isinstance(exc, DiskFullError):
            self._fatal = exc  # no retry can succeed until space is freed
            self.progress.chunk_failed(task.chunk_id, reason)
            queue.appendleft(task)
            return
        attempts[task.chunk_id] = attempts.get(task.chunk_id, 0) + 1
        self.progress.chunk_failed(task.chunk_id, reason)
        if attempts[task.chunk_id] < self.options.max_attempts:
            queue.append(task)
        else:
            self._parts.pop(task.chunk_id, None)
            self._done_parts.pop(task.chunk_id, None)
