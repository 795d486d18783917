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

Conversion is deterministic, so re-processing a chunk rewrites byte-identical shards at the
same paths; publishing is idempotent for the same reason. Chunks run in a process pool
(``w_process_chunk``), publishing in the committer thread, and this loop folds their reports
into journal events. A chunk whose worker fails (not a bad run: the machine) is journaled
``failed`` and retried up to ``max_attempts`` times in this session; later sessions retry it
again on ``resume``.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.committer import Committer
from helmproc.engine.dataset_card import render_card
from helmproc.engine.errors import PublishError
from helmproc.engine.jobs import JobPaths
from helmproc.engine.progress import NullProgress, Progress
from helmproc.engine.publishers import Publisher
from helmproc.engine.shards import remove_temp_files, shard_matches
from helmproc.engine.worker import ChunkResult, ChunkSpec, w_process_chunk
from helmproc.journal.status import StatusReport
from helmproc.journal.store import ChunkPlan, ChunkState, ChunkStatus, Journal, ShardFact

POLL_S = 0.2
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class ExecOptions:
    max_workers: int
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    publish_max_files: int = 50


@dataclass(frozen=True)
class RepairPlan:
    """What each unfinished chunk needs, decided from the journal and the disk."""

    to_process: tuple[int, ...]
    to_publish: tuple[int, ...]
    to_clean: tuple[int, ...]
    recovered_uploads: tuple[tuple[int, str], ...]


def make_pool(max_workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["helmproc.engine.worker"])
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=ctx)


def decide_repairs(
    statuses: dict[int, ChunkStatus], staging: Path, publisher: Publisher
) -> RepairPlan:
    to_process: list[int] = []
    to_publish: list[int] = []
    to_clean: list[int] = []
    recovered: list[tuple[int, str]] = []
    for cid in sorted(statuses):
        st = statuses[cid]
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
    return RepairPlan(tuple(to_process), tuple(to_publish), tuple(to_clean), tuple(recovered))


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
        pool_factory: Callable[[int], ProcessPoolExecutor] = make_pool,
    ) -> None:
        self.journal = journal
        self.paths = paths
        self.source_config = source_config
        self.publisher = publisher
        self.options = options
        self.progress: Progress = progress or NullProgress()
        self.pool_factory = pool_factory
        job = journal.job()
        if job is None:
            raise ValueError("journal holds no job")
        self.job = job
        self.plan: dict[int, ChunkPlan] = {c.chunk_id: c for c in journal.plan()}
        self._card_written = False

    # -- steps ---------------------------------------------------------------------------
    def _spec(self, cid: int) -> ChunkSpec:
        return ChunkSpec(
            job_id=self.job.job_id,
            chunk_id=cid,
            runs=self.plan[cid].runs,
            source_config=self.source_config,
            staging_root=str(self.paths.staging),
            scratch_root=str(self.paths.scratch),
            job_timestamp=self.job.job_timestamp,
        )

    def _clean(self, cid: int, shards: tuple[ShardFact, ...]) -> None:
        for fact in shards:
            (self.paths.staging / fact.path).unlink(missing_ok=True)
        self.journal.record_cleaned(cid)

    def _write_card(self) -> None:
        status = self.journal.status().to_json()
        sources = [str(self.source_config.get("root") or self.source_config.get("base_url"))]
        self.publisher.write_card(render_card(status, sources))
        self._card_written = True

    # -- the loop ------------------------------------------------------------------------
    def execute(self) -> StatusReport:
        self.paths.staging.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.paths.staging)
        shutil.rmtree(self.paths.scratch, ignore_errors=True)
        statuses = self.journal.chunk_statuses()
        repairs = decide_repairs(statuses, self.paths.staging, self.publisher)
        self.progress.start(
            total_chunks=len(self.plan),
            done_chunks=sum(1 for s in statuses.values() if s.state is ChunkState.CLEANED),
            total_runs=sum(len(c.runs) for c in self.plan.values()),
        )
        for cid, commit in repairs.recovered_uploads:
            self.journal.record_uploaded(cid, commit)
        for cid in repairs.to_clean:
            self._clean(cid, statuses[cid].shards)
            self.progress.chunk_published(cid, len(self.plan[cid].runs))

        attempts: dict[int, int] = {}  # failures of each chunk in this session
        queue: deque[int] = deque(repairs.to_process)
        committer = Committer(self.publisher, self.paths.staging, self.options.publish_max_files)
        for cid in repairs.to_publish:
            committer.submit(cid, statuses[cid].shards)
        staged: dict[int, tuple[ShardFact, ...]] = {
            cid: statuses[cid].shards for cid in repairs.to_publish
        }
        pool = self.pool_factory(self.options.max_workers)
        inflight: dict[Future[ChunkResult], int] = {}
        try:
            while queue or inflight or committer.pending:
                while queue and len(inflight) < self.options.max_workers:
                    cid = queue.popleft()
                    inflight[pool.submit(w_process_chunk, self._spec(cid))] = cid
                if inflight:
                    done, _ = wait(list(inflight), timeout=POLL_S, return_when=FIRST_COMPLETED)
                    broken = False
                    for fut in done:
                        cid = inflight.pop(fut)
                        exc = fut.exception()
                        if exc is None:
                            result = fut.result()
                            self.journal.record_processed(cid, result.shards, result.outcomes)
                            self.progress.chunk_processed(result)
                            staged[cid] = result.shards
                            committer.submit(cid, result.shards)
                            continue
                        broken = broken or isinstance(exc, BrokenProcessPool)
                        self._chunk_failed(cid, exc, attempts, queue)
                    if broken:
                        for fut, cid in list(inflight.items()):
                            fut.cancel()
                            died = BrokenProcessPool("worker died")
                            self._chunk_failed(cid, died, attempts, queue)
                        inflight.clear()
                        pool.shutdown(wait=True, cancel_futures=True)
                        pool = self.pool_factory(self.options.max_workers)
                for report in committer.reports(timeout=0 if inflight else POLL_S):
                    if report.error is not None:
                        raise PublishError(
                            f"publishing chunks {list(report.chunk_ids)} failed: {report.error}"
                        ) from report.error
                    for cid in report.chunk_ids:
                        self.journal.record_uploaded(cid, report.commit_id or "")
                        self._clean(cid, staged.pop(cid))
                        self.progress.chunk_published(cid, len(self.plan[cid].runs))
                    if not self._card_written:
                        self._write_card()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            committer.close()
        self._write_card()
        report_ = self.journal.status()
        self.progress.finish(report_)
        return report_

    def _chunk_failed(
        self, cid: int, exc: BaseException, attempts: dict[int, int], queue: deque[int]
    ) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.journal.record_failed(cid, reason)
        attempts[cid] = attempts.get(cid, 0) + 1
        self.progress.chunk_failed(cid, reason)
        if attempts[cid] < self.options.max_attempts:
            queue.append(cid)
