"""The checkpoint journal: one SQLite file recording a job's plan and every chunk transition.

How it works: ``start_job`` writes the job row, the deterministic plan (every chunk with its
runs) and a ``planned`` event per chunk in one transaction. After that, each ``record_*``
call checks the chunk's current state against ``LEGAL_TRANSITIONS`` and appends one event in
its own ``BEGIN IMMEDIATE`` transaction. Nothing is ever updated or deleted (triggers in the
schema abort UPDATE and DELETE), so a chunk's state is the fold of its events in ``seq``
order, and the event log is the audit trail.

Across a crash: the file is in WAL mode with ``synchronous=FULL``, so when a ``record_*``
call returns its event is on disk; an event whose transaction had not committed when the
process died (even ``kill -9``) is simply absent, and the chunk is still in its previous
state. The caller journals a fact only after the fact is durable (shard fsynced and renamed,
remote commit confirmed), so every gap between two events is repairable on resume.

Only the coordinator writes: a writable open takes the coordinator lock (``locking``);
``readonly=True`` opens with ``mode=ro`` and no lock, for ``helmproc status`` while a
coordinator runs.

A file that is not a usable journal raises ``BadJournalFileError`` naming it, never a
traceback: a writable open runs ``PRAGMA quick_check`` and refuses another program's database
(``migrations.check_is_journal``) before anything writes to the file; a read that meets a
garbled record (a truncated page, a payload that is not JSON) raises it too. The file is
created 0600 (``safe_paths``); SQLite gives ``-wal`` and ``-shm`` the same mode.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, TypeVar, cast

from helmproc.engine.durable import fsync_dir
from helmproc.engine.errors import (
    BadJournalFileError,
    IllegalTransitionError,
    JournalError,
    NoJobError,
)
from helmproc.engine.facts import ChunkPlan, RunOutcome, RunRef, ShardFact
from helmproc.engine.safe_paths import create_private_file, make_private_dir
from helmproc.engine.url_secrets import strip_config
from helmproc.journal import migrations
from helmproc.journal.locking import CoordinatorLock
from helmproc.journal.records import (
    LEGAL_TRANSITIONS,
    RETRY_ONLY_FROM,
    ChunkPieces,
    ChunkState,
    ChunkStatus,
    JobRecord,
)
from helmproc.journal.status import StatusReport, build_report

BUSY_TIMEOUT_MS = 10_000


@dataclass
class _Fold:
    """Mutable accumulator for one chunk while folding its events."""

    chunk_id: int
    state: ChunkState = ChunkState.PLANNED
    attempts: int = 0
    shards: tuple[ShardFact, ...] = ()
    outcomes: tuple[RunOutcome, ...] = ()
    commit_id: str | None = None
    error: str | None = None
    updated_at: str = ""

    def apply(self, state: ChunkState, at: str, payload: dict[str, Any]) -> None:
        self.state = state
        self.updated_at = at
        self.error = None
        if state is ChunkState.PROCESSED:
            self.attempts += 1
            self.shards = tuple(ShardFact.from_json(s) for s in payload.get("shards", ()))
            self.outcomes = tuple(RunOutcome.from_json(o) for o in payload.get("outcomes", ()))
        elif state is ChunkState.FAILED:
            self.attempts += 1
            self.error = payload.get("error") or "unknown error (none recorded)"
        elif state is ChunkState.UPLOADED:
            self.commit_id = payload.get("commit_id")

    def freeze(self) -> ChunkStatus:
        return ChunkStatus(
            chunk_id=self.chunk_id,
            state=self.state,
            attempts=self.attempts,
            shards=self.shards,
            outcomes=self.outcomes,
            commit_id=self.commit_id,
            error=self.error,
            updated_at=self.updated_at,
        )


def utc_now() -> str:
    """Wall-clock UTC time as ISO-8601 (journal bookkeeping only; never inside shard rows)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


F = TypeVar("F", bound=Callable[..., Any])
# What SQLite calls a file that is not a database, or one whose pages do not hold together.
DAMAGE_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _error_for(exc: sqlite3.Error) -> type[JournalError]:
    damaged = getattr(exc, "sqlite_errorname", "") in DAMAGE_ERRORS
    return BadJournalFileError if damaged else JournalError


def _check_file(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file, or another program's database, before anything writes to it."""
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        detail = "; ".join(" ".join(problems).split("\n")[:3])
        raise BadJournalFileError(
            f"journal {path} is damaged (SQLite quick_check: {detail[:300]}); nothing was "
            "written to it"
        )
    migrations.check_is_journal(conn, path)


def _reads(method: F) -> F:
    """Mark a read: what a damaged file makes SQLite or the decoding of a record raise becomes
    ``BadJournalFileError`` naming the file, not a traceback."""

    @functools.wraps(method)
    def read(self: Journal, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _error_for(exc)(f"cannot read journal {self.path}: {exc}") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise BadJournalFileError(
                f"journal {self.path} is damaged: a record does not decode "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    return cast(F, read)


class Journal:
    """The SQLite checkpoint journal of one job. Open with ``Journal.open``."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        readonly: bool,
        lock: CoordinatorLock | None,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._mutex = threading.RLock()

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Journal:
        """Open (creating unless ``readonly``) the journal at ``path``.

        A writable open takes the coordinator lock, sets WAL and ``synchronous=FULL`` and
        applies pending migrations. A readonly open takes no lock and never writes; it raises
        ``NoJobError`` if the file is missing and ``JournalError`` if its schema is not this
        build's.
        """
        path = Path(path)
        if readonly:
            return cls._open_readonly(path)
        make_private_dir(path.parent)
        lock = CoordinatorLock.acquire(path)
        try:
            created = create_private_file(path)  # 0600; SQLite gives -wal/-shm the same
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                _check_file(conn, path)  # before anything writes to it
                cls._configure(conn, path)
                migrations.apply_pending(conn, path)
            except BaseException:
                conn.close()
                raise
            if created:
                fsync_dir(path.parent)
        except sqlite3.Error as exc:
            lock.release()
            raise _error_for(exc)(f"cannot open journal {path}: {exc}") from exc
        except BaseException:
            lock.release()
            raise
        return cls(path, conn, readonly=False, lock=lock)

    @classmethod
    def _open_readonly(cls, path: Path) -> Journal:
        if not path.is_file():
            raise NoJobError(
                f"no journal at {path}: start a job with 'helmproc run' or pass the right path"
            )
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _error_for(exc)(f"cannot open journal {path} readonly: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = migrations.check_compatible(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            raise _error_for(exc)(f"cannot read journal {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if version < migrations.LATEST_VERSION:
            conn.close()
            raise JournalError(
                f"journal {path} has schema version {version}, older than this helmproc's "
                f"{migrations.LATEST_VERSION}; open it once with 'helmproc resume' to upgrade it"
            )
        return cls(path, conn, readonly=True, lock=None)

    @staticmethod
    def _configure(conn: sqlite3.Connection, path: Path) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        """Close the database and release the coordinator lock (idempotent)."""
        with self._mutex:
            conn, self._conn = self._conn, None
            try:
                if conn is not None:
                    conn.close()
            finally:
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction; rolled back on any error.

        SQLite's own errors (disk full, I/O error, a constraint) become ``JournalError``
        naming the journal; nothing of the transaction is kept.
        """
        if self.readonly:
            raise JournalError(
                f"journal {self.path} is open readonly; only the coordinator records changes"
            )
        with self._mutex:
            conn = self._db
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path}: write failed: {exc}") from exc

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction: the reads inside see one commit of the journal (WAL snapshot)."""
        with self._mutex:
            conn = self._db
            conn.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                conn.execute("COMMIT")

    # -- the job and its plan -----------------------------------------------------------

    def start_job(
        self,
        job_id: str,
        config: dict[str, Any],
        job_timestamp: str,
        plan: Sequence[ChunkPlan],
        run_bytes: Mapping[str, int] | None = None,
    ) -> None:
        """Record the job, its whole plan and a ``planned`` event per chunk, atomically;
        ``run_bytes`` (run key -> input bytes, for the runs whose sizes the source knew) goes
        into ``run_inputs`` in the same transaction."""
        try:
            config_json = _dumps(strip_config(config))  # no credential reaches the disk
        except (TypeError, ValueError) as exc:
            raise JournalError(f"job {job_id}: config is not JSON-serialisable: {exc}") from exc
        _check_plan(plan)
        now = utc_now()
        with self._write() as conn:
            existing = conn.execute("SELECT job_id FROM job").fetchone()
            if existing is not None:
                raise JournalError(
                    f"journal {self.path} already holds job {existing[0]!r}; "
                    f"continue it with 'helmproc resume' or use a new journal for job {job_id!r}"
                )
            conn.execute(
                "INSERT INTO job (id, job_id, config, job_timestamp, started_at) "
                "VALUES (1, ?, ?, ?, ?)",
                (job_id, config_json, job_timestamp, now),
            )
            for chunk in plan:
                runs_json = _dumps([run.to_json() for run in chunk.runs])
                conn.execute(
                    "INSERT INTO chunks (chunk_id, runs) VALUES (?, ?)",
                    (chunk.chunk_id, runs_json),
                )
                conn.execute(
                    "INSERT INTO events (chunk_id, state, at, payload) VALUES (?, ?, ?, '{}')",
                    (chunk.chunk_id, ChunkState.PLANNED.value, now),
                )
                for run in chunk.runs:
                    n_bytes = (run_bytes or {}).get(run.key)
                    if n_bytes is not None:
                        conn.execute(
                            "INSERT INTO run_inputs (run_key, chunk_id, n_bytes) VALUES (?, ?, ?)",
                            (run.key, chunk.chunk_id, int(n_bytes)),
                        )

    @_reads
    def job(self) -> JobRecord | None:
        """The job this journal belongs to, or None before ``start_job``."""
        with self._mutex:
            row = self._db.execute(
                "SELECT job_id, config, job_timestamp, started_at FROM job"
            ).fetchone()
        if row is None:
            return None
        return JobRecord(
            job_id=row[0], config=json.loads(row[1]), job_timestamp=row[2], started_at=row[3]
        )

    @_reads
    def plan(self) -> list[ChunkPlan]:
        """Every planned chunk in chunk_id order, runs in their recorded order."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT chunk_id, runs FROM chunks ORDER BY chunk_id"
            ).fetchall()
        return [
            ChunkPlan(chunk_id=cid, runs=tuple(RunRef.from_json(r) for r in json.loads(runs)))
            for cid, runs in rows
        ]

    @_reads
    def run_input_bytes(self) -> dict[str, int]:
        """Run key -> input bytes of the planned runs whose sizes were known at planning
        (empty for a job planned before ``run_inputs`` existed)."""
        with self._mutex:
            rows = self._db.execute("SELECT run_key, n_bytes FROM run_inputs").fetchall()
        return {str(key): int(n) for key, n in rows}

    # -- transitions --------------------------------------------------------------------

    def record_processed(
        self,
        chunk_id: int,
        shards: Sequence[ShardFact],
        outcomes: Sequence[RunOutcome],
        *,
        retry: bool = False,
    ) -> None:
        """The chunk's shards are durable on local disk; ``outcomes`` has one entry per run.

        ``retry`` marks a chunk processed again to retry its failed runs
        (``resume --retry-failed``): the event's payload gets ``"retry": true``, and only such
        an event may follow ``uploaded`` or ``cleaned``.
        """
        for shard in shards:
            _check_shard_path(chunk_id, shard)
        payload: dict[str, Any] = {
            "shards": [s.to_json() for s in shards],
            "outcomes": [o.to_json() for o in outcomes],
        }
        if retry:
            payload["retry"] = True
        with self._write() as conn:
            planned = self._planned_run_keys(conn, chunk_id)
            strangers = sorted({o.run.key for o in outcomes} - planned)
            if strangers:
                raise JournalError(
                    f"chunk {chunk_id}: outcomes for runs not planned in this chunk: "
                    + ", ".join(strangers)
                )
            self._append(conn, chunk_id, ChunkState.PROCESSED, payload)

    def record_uploaded(self, chunk_id: int, commit_id: str) -> None:
        """The chunk's shards are confirmed in the destination at ``commit_id``."""
        with self._write() as conn:
            self._append(conn, chunk_id, ChunkState.UPLOADED, {"commit_id": commit_id})

    def record_cleaned(self, chunk_id: int) -> None:
        """The chunk's local shard files are deleted."""
        with self._write() as conn:
            self._append(conn, chunk_id, ChunkState.CLEANED, {})

    def record_failed(self, chunk_id: int, error: str) -> None:
        """Working on the chunk failed as a whole (not a single run) with ``error``."""
        with self._write() as conn:
            self._append(conn, chunk_id, ChunkState.FAILED, {"error": error})

    def record_split(
        self, chunk_id: int, part: str, skipped: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Piece ``part`` of the chunk overran the memory budget: halve it, or, with
        ``skipped`` (run key, reason), give those runs up inside it. Every later attempt
        works on the pieces this leaves (``chunk_pieces``)."""
        with self._write() as conn:
            self._planned_run_keys(conn, chunk_id)  # refuses a chunk that is not planned
            conn.execute(
                "INSERT INTO splits (chunk_id, part, skipped, at) VALUES (?, ?, ?, ?)",
                (chunk_id, part, _dumps([list(s) for s in skipped]), utc_now()),
            )

    @_reads
    def chunk_pieces(self) -> dict[int, ChunkPieces]:
        """The pieces of every chunk that was ever split (others are whole)."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT chunk_id, part, skipped FROM splits ORDER BY seq"
            ).fetchall()
        parts: dict[int, list[str]] = {}
        skipped: dict[int, dict[str, str]] = {}
        for chunk_id, part, given_up in rows:
            leaves = parts.setdefault(chunk_id, [""])
            runs = json.loads(given_up)
            if runs:
                skipped.setdefault(chunk_id, {}).update({k: r for k, r in runs})
            elif part in leaves:
                leaves[leaves.index(part) : leaves.index(part) + 1] = [part + "0", part + "1"]
        return {
            cid: ChunkPieces(tuple(leaves), tuple(sorted(skipped.get(cid, {}).items())))
            for cid, leaves in sorted(parts.items())
        }

    def _planned_run_keys(self, conn: sqlite3.Connection, chunk_id: int) -> set[str]:
        row = conn.execute("SELECT runs FROM chunks WHERE chunk_id = ?", (chunk_id,)).fetchone()
        if row is None:
            raise JournalError(f"chunk {chunk_id} is not in the plan of journal {self.path}")
        return {RunRef.from_json(r).key for r in json.loads(row[0])}

    def _append(
        self, conn: sqlite3.Connection, chunk_id: int, to_state: ChunkState, payload: dict
    ) -> None:
        row = conn.execute(
            "SELECT state FROM events WHERE chunk_id = ? ORDER BY seq DESC LIMIT 1", (chunk_id,)
        ).fetchone()
        if row is None:  # start_job writes a planned event with every chunk
            raise JournalError(f"chunk {chunk_id} is not in the plan of journal {self.path}")
        from_state = ChunkState(row[0])
        if to_state not in LEGAL_TRANSITIONS[from_state]:
            allowed = ", ".join(sorted(LEGAL_TRANSITIONS[from_state])) or "nothing (final)"
            raise IllegalTransitionError(
                f"chunk {chunk_id}: illegal transition {from_state} -> {to_state} "
                f"(from {from_state} a chunk may go to: {allowed})"
            )
        if from_state in RETRY_ONLY_FROM and to_state is ChunkState.PROCESSED:
            if not payload.get("retry"):
                raise IllegalTransitionError(
                    f"chunk {chunk_id}: illegal transition {from_state} -> {to_state} "
                    "(a published chunk is processed again only to retry its failed runs: "
                    "'helmproc resume --retry-failed')"
                )
        conn.execute(
            "INSERT INTO events (chunk_id, state, at, payload) VALUES (?, ?, ?, ?)",
            (chunk_id, to_state.value, utc_now(), _dumps(payload)),
        )

    # -- reading state ------------------------------------------------------------------

    @_reads
    def chunk_status(self, chunk_id: int) -> ChunkStatus:
        """The current state of one chunk; ``JournalError`` if it is not planned."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT state, at, payload FROM events WHERE chunk_id = ? ORDER BY seq",
                (chunk_id,),
            ).fetchall()
        if not rows:
            raise JournalError(f"chunk {chunk_id} is not in the plan of journal {self.path}")
        fold = _Fold(chunk_id)
        for state, at, payload in rows:
            fold.apply(ChunkState(state), at, json.loads(payload))
        return fold.freeze()

    @_reads
    def chunk_statuses(self) -> dict[int, ChunkStatus]:
        """The current state of every chunk, by chunk_id (ascending)."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT chunk_id, state, at, payload FROM events ORDER BY seq"
            ).fetchall()
        folds: dict[int, _Fold] = {}
        for chunk_id, state, at, payload in rows:
            fold = folds.setdefault(chunk_id, _Fold(chunk_id))
            fold.apply(ChunkState(state), at, json.loads(payload))
        return {cid: folds[cid].freeze() for cid in sorted(folds)}

    @_reads
    def events(self) -> list[dict[str, Any]]:
        """The raw event log in ``seq`` order: seq, chunk_id, state, at, payload (decoded)."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT seq, chunk_id, state, at, payload FROM events ORDER BY seq"
            ).fetchall()
        return [
            {"seq": s, "chunk_id": c, "state": st, "at": at, "payload": json.loads(p)}
            for s, c, st, at, p in rows
        ]

    @_reads
    def last_event_at(self) -> str | None:
        """Time of the most recent event, or None if there are none."""
        with self._mutex:
            row = self._db.execute("SELECT at FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def status(self) -> StatusReport:
        """The status report, computed from the journal alone."""
        with self._snapshot():
            return build_report(
                job=self.job(),
                plan=self.plan(),
                statuses=self.chunk_statuses(),
                updated_at=self.last_event_at(),
            )


def _check_plan(plan: Sequence[ChunkPlan]) -> None:
    """Refuse a plan with bad or repeated chunk ids, or a run planned twice (it would run twice)."""
    seen_chunks: set[int] = set()
    seen_runs: dict[str, int] = {}
    for chunk in plan:
        if not isinstance(chunk.chunk_id, int) or chunk.chunk_id < 0:
            raise JournalError(f"plan has chunk id {chunk.chunk_id!r}; ids are integers >= 0")
        if chunk.chunk_id in seen_chunks:
            raise JournalError(f"plan lists chunk {chunk.chunk_id} twice")
        seen_chunks.add(chunk.chunk_id)
        for run in chunk.runs:
            if run.key in seen_runs:
                raise JournalError(
                    f"plan lists run {run.key} in chunk {seen_runs[run.key]} "
                    f"and chunk {chunk.chunk_id}"
                )
            seen_runs[run.key] = chunk.chunk_id


def _check_shard_path(chunk_id: int, shard: ShardFact) -> None:
    path = PurePosixPath(shard.path)
    if not shard.path or path.is_absolute() or ".." in path.parts or "\\" in shard.path:
        raise JournalError(
            f"chunk {chunk_id}: shard path {shard.path!r} must be relative to the dataset "
            f"root, with '/' separators (e.g. 'instances/part-00000-c0003.parquet')"
        )
