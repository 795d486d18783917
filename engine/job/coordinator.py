"""The coordinator: drive a planned job through process → publish → clean, journaling each step.

Only this module writes the journal, and only after the fact it records is durable. On start
(a fresh job or ``resume``) it first repairs every crash window from the journal and the disk
(``repairs.py`` has the table of what each journal state and disk state leads to).

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

Memory: the ``Budget`` admits a chunk only when its estimate (from its runs' input bytes,
recorded with the plan) fits, and the watchdog thread stops a worker (SIGKILL) when the process
tree's USS passes the budget less its headroom (``watchdog.py``, ``overruns.py``). That breaks
the pool: the loop then takes every chunk in flight at once, splits only the stopped piece,
puts the others back in the queue whole (not failures: nothing of theirs was wrong) and makes
a new pool. The split is journaled (``record_split``)
before the pieces are queued, and every later attempt (this session's retries, a resume, a
``--retry-failed``) works on the journaled pieces, so shard paths never depend on a later
memory reading and a retried chunk rewrites exactly the paths it published. A retry of an
already-published chunk that overruns is not split (new pieces would sit beside the published
ones): the retry stops and the published data stays. The chunk is journaled ``processed`` once
all its pieces are done, with the shards of every piece.

The destination is the ledger: the coordinator reads it (``publish/ledger.py``; or takes the
one planning just read) before anything else, and ``repairs.check_ledger`` compares it with
the journal. On the Hub, ``_guard`` keeps one writer at a time: a commit whose branch moved
under it first re-reads the runs another job added and stops on an overlap.

The dataset card (recomputed from what the destination holds, ``publish/card.py``: the ledger
read at start plus what this session published) rides with the session's first commit and is
refreshed every ``card_interval_s`` (riding with the next commit). At the end one commit
carries the job's ``releases`` rows and the final card, and only if it changes anything: a job
that found nothing new writes nothing. The journal says "done" when every chunk is cleaned, so
the last chunk is journaled ``cleaned`` only after that commit: a job killed during it is not
done, and ``resume`` makes the commit (or finds it landed) before saying so. Commits are
paced by the destination's ``max_commits_per_hour`` unless ``commits_per_hour`` overrides it.

A stop request (the first Ctrl-C) also ends every wait on the network within 0.1 s
(``engine/stop_waits.py``): a worker's download, a commit or a read of the Hub. A chunk whose
download was cut goes back to the queue, a commit cut (or not started: none starts after a
stop) leaves its chunks ``processed``, and the dataset's last commit waits for ``resume``; the
job then ends with ``JobInterrupted``.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from helmproc.engine.chunks.pid_files import running_workers
from helmproc.engine.chunks.worker import ChunkResult, ChunkSpec
from helmproc.engine.dataset_layout import CARD_PATH
from helmproc.engine.durable import remove_temp_files
from helmproc.engine.errors import (
    DestinationConflictError,
    DiskFullError,
    HelmprocError,
    PublishError,
    UnwritableError,
    WaitInterrupted,
)
from helmproc.engine.facts import ChunkPlan, RunOutcome, ShardFact
from helmproc.engine.job.executors import ChunkExecutor, make_executor
from helmproc.engine.job.interrupts import JobInterrupted, StopRequest
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.overruns import Overruns, Task
from helmproc.engine.job.progress import NullProgress, Progress
from helmproc.engine.job.repairs import RepairPlan, check_ledger, decide_repairs
from helmproc.engine.job.workdir import JobPaths
from helmproc.engine.publish.card import EVAL_COLUMNS, dataset_card
from helmproc.engine.publish.committer import Committer, PublishReport
from helmproc.engine.publish.folder import FileEntry, Publisher
from helmproc.engine.publish.ledger import Ledger, read_ledger, shard_group
from helmproc.engine.publish.pacer import CommitPacer
from helmproc.engine.publish.releases import ReleasesShard, releases_path
from helmproc.engine.safe_paths import make_private_dir
from helmproc.journal import (
    RETRY_ONLY_FROM,
    ChunkPieces,
    ChunkState,
    ChunkStatus,
    Journal,
    StatusReport,
)

# A worker could not write its staging or scratch folder: no retry can succeed, stop the job.
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
POLL_S = 0.2
# after the watchdog stopped a worker: how long the broken pool may take to fail its chunks
KILL_SETTLE_S = 30.0


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
        ledger: Ledger | None = None,
    ) -> None:
        self.journal = journal
        self.paths = paths
        self.source_config = source_config
        self.publisher = publisher
        self.options = options
        self.progress: Progress = progress or NullProgress()
        self.pool_factory = pool_factory or (lambda n: make_executor(options.executor, n))
        self._fatal: BaseException | None = None
        self._stop_noted = False
        self._interrupted = False  # a wait on the network was cut by a stop request
        job = journal.job()
        if job is None:
            raise ValueError("journal holds no job")
        self.job = job
        self.plan: dict[int, ChunkPlan] = {c.chunk_id: c for c in journal.plan()}
        self.budget = options.budget
        self.overruns = Overruns(
            self.budget, self.pid_dir, paths.scratch, self.progress, journal.run_input_bytes()
        )
        # finished pieces' results of each chunk still being worked on
        self._done_parts: dict[int, list[ChunkResult]] = {}
        self._retrying: set[int] = set()  # chunks processed again for --retry-failed
        self._execution = uuid.uuid4().hex  # lets workers reuse the source within this run
        self.ledger = ledger
        self._session_files: dict[str, FileEntry] = {}
        self._session_runs: list[tuple[pa.Table, str]] = []
        self._session_evals: dict[str, pa.Table] = {}
        # The job's last ``cleaned`` event waits for its final commit (releases table and card):
        # chunks not yet cleaned (read at the first clean), the last one's clean held back, and
        # whether the final step is done. See ``_clean``.
        self._not_cleaned: set[int] | None = None
        self._last_clean: tuple[int, tuple[ShardFact, ...]] | None = None
        self._finished = False

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
            source_organization=self.job.config.get("source_organization"),
            execution=self._execution,
        )

    def _clean(self, cid: int, shards: tuple[ShardFact, ...]) -> None:
        """Remove a published chunk's staged shards and journal it ``cleaned``; but the job's
        last chunk stays ``uploaded`` (its shards staged) until the final commit is done: the
        journal says "done" when every chunk is cleaned, and a job killed during its final
        commit must not look done (``resume`` would then never publish the releases table
        and the final card)."""
        if self._not_cleaned is None:
            self._not_cleaned = {
                c for c, st in self.journal.chunk_statuses().items()
                if st.state is not ChunkState.CLEANED
            }
        if not self._finished and self._not_cleaned == {cid}:
            self._last_clean = (cid, shards)
            return
        for fact in shards:
            path = self.paths.staging / fact.path
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                if exc.errno in UNWRITABLE_ERRNOS:
                    raise UnwritableError(str(path), exc.strerror or str(exc)) from None
                raise
        self.journal.record_cleaned(cid)
        self._not_cleaned.discard(cid)

    def _card_text(self, ledger: Ledger, releases: ReleasesShard | None = None) -> str:
        extra = releases.rows if releases is not None else ()
        return dataset_card(
            self.publisher, ledger, self.source_config, extra, self._session_evals
        )

    def _remember_published(self, shards: tuple[ShardFact, ...]) -> None:
        """Keep what this session published (its runs and evaluations tables, from staging,
        before they are cleaned), so the card needs no download of them."""
        for fact in shards:
            path = self.paths.staging / fact.path
            self._session_files[fact.path] = FileEntry(fact.n_bytes, fact.sha256)
            if fact.table == "runs":
                found = shard_group(fact.path)
                if found is not None:
                    self._session_runs.append((pq.read_table(path), found[1]))
            elif fact.table == "evaluations":
                self._session_evals[fact.path] = pq.read_table(path, columns=EVAL_COLUMNS)

    def _dataset_now(self) -> Ledger:
        """What the destination holds now: the ledger read at start plus this session's."""
        assert self.ledger is not None
        return self.ledger.extended(self._session_files, self._session_runs)

    def _guard(self) -> None:
        """The Hub's one-writer guard: another commit landed since the ledger was read; read
        the runs files it added and stop if they hold runs this job has still to publish."""
        assert self.ledger is not None
        fresh = read_ledger(self.publisher)
        mine = {(r.project, r.suite, r.run_name) for c in self.plan.values() for r in c.runs}
        for key, held in fresh.runs_by_key.items():
            if (
                key in mine
                and held.outcome == "ok"
                and not held.group.startswith(self.job.job_id + "/")
                and self.ledger.state(key) is None
            ):
                raise DestinationConflictError(
                    f"{'/'.join(key)} was published into the destination by another job while "
                    "this one ran; this job stops without publishing it again"
                )

    def _finish_dataset(self, releases: ReleasesShard | None) -> None:
        """The job's last step: the releases rows it adds and the card recomputed from what
        the destination now holds, in one commit, and only if either changes anything (a job
        that found nothing new writes nothing)."""
        ledger = self._dataset_now()
        card = self._card_text(ledger, releases)
        same_card = False
        if ledger.files.get(CARD_PATH) is not None:
            try:
                same_card = self.publisher.read_bytes(CARD_PATH) == card.encode("utf-8")
            except (OSError, HelmprocError):
                same_card = False
        shards = (releases.fact,) if releases is not None else ()
        if shards or not same_card:
            self.publisher.publish(
                self.paths.staging,
                shards,
                "helmproc: releases table and dataset card",
                card=None if same_card else card,
            )
        # staged by this session, or by one killed after this commit landed (then ``build``
        # found the file in the destination and staged nothing)
        (self.paths.staging / releases_path(self.job.job_id)).unlink(missing_ok=True)

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

    # -- pieces ------------------------------------------------------------------------
    def _tasks_of(self, cid: int, pieces: ChunkPieces | None) -> list[Task]:
        """The chunk's work: whole, or the pieces its journaled memory splits left (so a
        resume or a retry writes exactly the shard paths the earlier attempts wrote)."""
        runs = self.plan[cid].runs
        if pieces is None:
            return [Task(cid, "", runs)]
        tasks = []
        for part in pieces.parts:
            mine = ChunkPieces.runs_of(runs, part)
            keys = {r.key for r in mine}
            # --retry-failed gives runs given up as too big another chance (in their piece)
            given_up = () if cid in self._retrying else pieces.skipped
            skip = tuple((k, why) for k, why in given_up if k in keys)
            tasks.append(Task(cid, part, mine, skip))
        self.overruns.parts[cid] = set(pieces.parts)
        return tasks

    def _piece_done(self, result: ChunkResult) -> bool:
        """Fold a finished piece in; True (and journal ``processed``) when its chunk is whole."""
        cid = result.chunk_id
        if self.budget is not None:
            self.budget.learn(
                result.peak_rss_bytes,
                result.largest_run_bytes,
                result.baseline_bytes,
                result.baseline_uss_bytes or None,
            )
        self._done_parts.setdefault(cid, []).append(result)
        if not self.overruns.piece_done(cid, result.part):
            return False
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
        """Repair, then process, publish and clean every chunk left; the final status."""
        statuses, repairs = self._repair()
        assert self.ledger is not None
        releases = ReleasesShard.build(
            self.job.job_id,
            self.job.config.get("release_rows", []),
            self.paths.staging,
            self.ledger,
        )
        pieces = self.journal.chunk_pieces()
        queue: deque[Task] = deque(
            task for cid in repairs.to_process for task in self._tasks_of(cid, pieces.get(cid))
        )
        committer = self._committer()
        committer.submit_card(self._card_text(self.ledger))  # rides with the first commit
        for cid in repairs.to_publish:
            committer.submit(cid, statuses[cid].shards)
        staged: dict[int, tuple[ShardFact, ...]] = {
            cid: statuses[cid].shards for cid in repairs.to_publish
        }
        pool = self.pool_factory(self.options.max_workers)
        self.overruns.start()
        try:
            with StopRequest() as stop:
                try:
                    pool = self._loop(stop, pool, queue, committer, staged)
                    self._halted(stop)
                    committer.close(drain=True)
                    for report in committer.reports(timeout=0):
                        if not self._publish_interrupted(report):
                            self._check_report(report)
                    if not queue and self._fatal is None and not self._interrupted:
                        self._finish_dataset(releases)
                        self._finished = True
                        if self._last_clean is not None:
                            self._clean(*self._last_clean)
                except WaitInterrupted:  # a wait on the network (the Hub) cut by the stop
                    self._interrupted = True
        except KeyboardInterrupt:
            pool.kill()  # the second signal: stop at once; resume sweeps what they left
            raise
        finally:
            self.overruns.close()
            pool.shutdown()
            committer.close()
        if self._fatal is not None:
            raise self._fatal
        if queue or self._interrupted:
            left = sum(
                1 for s in self.journal.chunk_statuses().values()
                if s.state is not ChunkState.CLEANED
            )
            raise JobInterrupted(
                f"stopped on request after finishing the chunks in flight; {left} chunks left"
                if left
                else "stopped on request before the dataset's last commit (card, releases rows)"
            )
        report_ = self.journal.status()
        self.progress.finish(report_)
        return report_

    def _repair(self) -> tuple[dict[int, ChunkStatus], RepairPlan]:
        """Sweep what a crashed session left, decide the repairs, journal the free ones."""
        make_private_dir(self.paths.staging, own=True)
        remove_temp_files(self.paths.staging)
        shutil.rmtree(self.paths.scratch, ignore_errors=True)
        make_private_dir(self.paths.scratch, own=True)  # workers' downloads go inside
        shutil.rmtree(self.pid_dir, ignore_errors=True)
        statuses = self.journal.chunk_statuses()
        if self.ledger is None:
            self.ledger = read_ledger(self.publisher, pin=True)
        ledger = self.ledger
        sweep = getattr(self.publisher, "sweep_temp", None)
        if sweep is not None and ledger.stray_files:
            sweep(ledger.stray_files)  # temp files of writers that died (we hold the lock)
        if hasattr(self.publisher, "guard"):
            self.publisher.guard = self._guard
            if ledger.head is not None:
                self.publisher.commit_on(ledger.head)  # type: ignore[attr-defined]
            # (no head: the repo did not exist; the first commit runs the guard)
        rebuild = check_ledger(self.job.job_id, self.plan, statuses, ledger)
        if rebuild:
            self.progress.note(
                f"the destination lacks the runs of {len(rebuild)} published chunks: "
                "converting and publishing them again"
            )
        repairs = decide_repairs(
            statuses,
            self.paths.staging,
            self.publisher,
            retry_failed=self.options.retry_failed,
            rebuild=rebuild,
        )
        self._retrying = set(repairs.retried) | set(rebuild)
        if repairs.retried:
            n_runs = sum(1 for c in repairs.retried for o in statuses[c].outcomes if not o.ok)
            self.progress.note(
                f"retrying {n_runs} failed runs: processing their {len(repairs.retried)} "
                "chunks again"
            )
        kept = [  # chunks whose runs are already converted and stay as they are
            s for cid, s in statuses.items() if cid not in self._retrying and s.outcomes
            and cid not in repairs.to_process
        ]
        self.progress.start(
            total_chunks=len(self.plan),
            done_chunks=sum(
                1
                for cid, s in statuses.items()
                if s.state is ChunkState.CLEANED and cid not in self._retrying
            ),
            total_runs=sum(len(c.runs) for c in self.plan.values()),
            done_runs=sum(len(s.outcomes) for s in kept),
            done_rows=sum(o.n_rows for s in kept for o in s.outcomes),
        )
        for cid, commit in repairs.recovered_uploads:
            self.journal.record_uploaded(cid, commit)
        for cid in repairs.to_clean:
            self._clean(cid, statuses[cid].shards)
            self.progress.chunk_published(cid, len(self.plan[cid].runs))
        return statuses, repairs

    def _loop(
        self,
        stop: StopRequest,
        pool: ChunkExecutor,
        queue: deque[Task],
        committer: Committer,
        staged: dict[int, tuple[ShardFact, ...]],
    ) -> ChunkExecutor:
        """Submit admitted tasks, fold finished ones and commit reports into the journal,
        until nothing is left or a stop was asked; the pool in use at the end."""
        attempts: dict[int, int] = {}  # failures of each chunk in this session
        inflight: dict[Future[Any], Task] = {}
        card_at = time.monotonic()
        while (queue and not self._halted(stop)) or inflight or committer.pending:
            self.progress.tick()
            self._halted(stop)  # says a stop request as soon as one arrived
            while (
                queue
                and not self._halted(stop)
                and len(inflight) < self.options.max_workers
                and self.overruns.admit(queue[0], inflight.values(), staged)
            ):
                task = queue.popleft()
                inflight[pool.submit(self._spec(task.chunk_id, task))] = task
            broken = False
            if inflight:
                done, _ = wait(list(inflight), timeout=POLL_S, return_when=FIRST_COMPLETED)
                if self.overruns.pool_killed:  # the pool fails every chunk in flight: take
                    done, _ = wait(list(inflight), timeout=KILL_SETTLE_S)  # them together
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
            if broken or self.overruns.pool_killed:
                # a worker died (or the watchdog stopped one): the pool is gone with every
                # chunk in it; what is left in flight goes back to the queue (the stopped
                # piece split), and a new pool takes over
                died = BrokenProcessPool("worker died")
                for fut, task in list(inflight.items()):
                    fut.cancel()
                    self._task_failed(task, died, attempts, queue)
                inflight.clear()
                pool.shutdown()
                shutil.rmtree(self.pid_dir, ignore_errors=True)
                pool = self.pool_factory(self.options.max_workers)
                self.overruns.rearm()
            for report in committer.reports(timeout=0 if inflight else POLL_S):
                if self._publish_interrupted(report):  # resume publishes these chunks
                    for cid in report.chunk_ids:  # (still `processed`)
                        staged.pop(cid, None)
                    continue
                self._check_report(report)
                for cid in report.chunk_ids:
                    self.journal.record_uploaded(cid, report.commit_id or "")
                    self._remember_published(staged[cid])
                    self._clean(cid, staged.pop(cid))
                    self.progress.chunk_published(cid, len(self.plan[cid].runs))
            if time.monotonic() - card_at >= self.options.card_interval_s:
                # recomputed from what the destination holds now; rides with the next commit
                committer.submit_card(self._card_text(self._dataset_now()))
                card_at = time.monotonic()
        return pool

    def _publish_interrupted(self, report: PublishReport) -> bool:
        """Whether a stop request cut this commit short (then the job ends interrupted)."""
        if not isinstance(report.error, WaitInterrupted):
            return False
        self._interrupted = True
        return True

    def _halted(self, stop: StopRequest) -> bool:
        """A stop was asked (said once, here: the signal handler only sets the flag) or a
        fatal error happened."""
        if stop.requested and not self._stop_noted:
            self._stop_noted = True
            self.progress.note(
                f"{stop.requested}: finishing the chunks in flight, then stopping "
                "(again to stop at once; `helmproc resume` continues)"
            )
            for pid in running_workers(self.pid_dir):  # their network waits end too (a
                try:  # terminal's Ctrl-C reaches them already; `kill -INT` of this one does not)
                    os.kill(pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        return bool(stop.requested) or self._fatal is not None

    def _task_failed(
        self, task: Task, exc: BaseException, attempts: dict[int, int], queue: deque[Task]
    ) -> None:
        overrun = self.overruns.overrun_reason(task)
        cid = task.chunk_id
        if overrun is not None and all(k in dict(task.skip_reasons) for k in task.keys):
            # nothing of it left to split: an ordinary failed attempt (they are counted)
            exc, overrun = MemoryError(f"memory budget exceeded: {overrun}"), None
        if overrun is not None:
            if cid in self._retrying and self.journal.chunk_status(cid).state in RETRY_ONLY_FROM:
                # splitting now would publish new pieces beside the published ones
                reason = f"retry stopped, memory budget exceeded: {overrun}"
                self.progress.chunk_failed(cid, reason)
                self.overruns.forget(cid)
                self._done_parts.pop(cid, None)
                return
            self._record_failed(cid, f"memory budget exceeded: {overrun}")
            retries = self.overruns.split(task, overrun)
            given_up = () if len(retries) > 1 else retries[0].skip_reasons[len(task.skip_reasons) :]
            self.journal.record_split(cid, task.part, given_up)  # later attempts cut the same
            for retry in retries:
                queue.appendleft(retry)
            return
        if isinstance(exc, BrokenProcessPool) and self.overruns.pool_killed:
            queue.appendleft(task)  # collateral of another piece's overrun: not its fault
            return
        if isinstance(exc, WaitInterrupted):  # a network wait ended by the stop request:
            queue.appendleft(task)  # not a failure; the chunk stays as journaled for resume
            return
        reason = str(exc) if isinstance(exc, HelmprocError) else f"{type(exc).__name__}: {exc}"
        self._record_failed(task.chunk_id, reason)
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE_ERRNOS:
            where = str(exc.filename or self.paths.staging)
            exc = UnwritableError(where, exc.strerror or str(exc))
        if isinstance(exc, (DiskFullError, UnwritableError)):
            self._fatal = exc  # no retry can succeed until space is freed
            self.progress.chunk_failed(task.chunk_id, reason)
            queue.appendleft(task)
            return
        attempts[task.chunk_id] = attempts.get(task.chunk_id, 0) + 1
        self.progress.chunk_failed(task.chunk_id, reason)
        if attempts[task.chunk_id] < self.options.max_attempts:
            queue.append(task)
        else:
            self.overruns.forget(task.chunk_id)
            self._done_parts.pop(task.chunk_id, None)
