"""Tests of helmproc.journal against real SQLite files in tmp_path.

Crash behaviour is tested with real processes: a coordinator in a subprocess is killed with
SIGKILL and the journal / lock are checked afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helmproc.engine.errors import (
    IllegalTransitionError,
    JournalError,
    JournalLockedError,
    NoJobError,
)
from helmproc.engine.facts import ChunkPlan, RunOutcome, RunRef, ShardFact
from helmproc.journal import (
    ChunkState,
    Journal,
    StatusReport,
    migrations,
    render_text,
)
from helmproc.journal.locking import CoordinatorLock, lock_path_for
from helmproc.journal.migrations import Migration

# -- helpers ------------------------------------------------------------------------------


def run_ref(i: int, project: str = "lite") -> RunRef:
    return RunRef(
        project=project,
        suite="v1.0.0",
        run_name=f"mmlu:subject=s{i},model=openai_gpt2",
        release="v1.1.0" if i % 2 else None,
        location=f"runs/v1.0.0/mmlu:subject=s{i},model=openai_gpt2",
    )


def shard(chunk_id: int, table: str = "instances", n_rows: int = 10, n_bytes: int = 1000):
    return ShardFact(
        table=table,
        path=f"{table}/part-00000-c{chunk_id:04d}.parquet",
        n_rows=n_rows,
        n_bytes=n_bytes,
        sha256=hashlib.sha256(f"{table}{chunk_id}{n_rows}".encode()).hexdigest(),
    )


def ok(run: RunRef, n_rows: int = 10) -> RunOutcome:
    return RunOutcome(run=run, ok=True, n_instances=n_rows // 2, n_rows=n_rows)


def bad(run: RunRef, reason: str = "stats.json: not valid JSON") -> RunOutcome:
    return RunOutcome(run=run, ok=False, n_instances=0, n_rows=0, error=reason)


PLAN = [
    ChunkPlan(0, (run_ref(0), run_ref(1))),
    ChunkPlan(1, (run_ref(2),)),
    ChunkPlan(2, (run_ref(3), run_ref(4), run_ref(5))),
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with Journal.open(path) as j:
        j.start_job("job-1", {"benchmark": "lite", "chunk_size": 2}, "2024-05-01T00:00:00Z", PLAN)
        yield j


def raw(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection, bypassing helmproc (autocommit)."""
    return sqlite3.connect(path, isolation_level=None)


def move(j: Journal, chunk_id: int, state: ChunkState) -> None:
    """Drive one transition through the public API."""
    if state is ChunkState.PROCESSED:
        runs = j.plan()[chunk_id].runs
        # from uploaded / cleaned only a retry of failed runs reprocesses (test_retry_failed)
        retry = j.chunk_status(chunk_id).state in (ChunkState.UPLOADED, ChunkState.CLEANED)
        j.record_processed(chunk_id, [shard(chunk_id)], [ok(r) for r in runs], retry=retry)
    elif state is ChunkState.UPLOADED:
        j.record_uploaded(chunk_id, f"commit-{len(j.events())}")
    elif state is ChunkState.CLEANED:
        j.record_cleaned(chunk_id)
    elif state is ChunkState.FAILED:
        j.record_failed(chunk_id, "worker died")
    else:
        raise AssertionError(f"no API moves a chunk to {state}")


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout_s: float = 30) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # blocks until the child prints or exits
    if line != expected:
        proc.kill()
        _, err = proc.communicate(timeout=timeout_s)
        raise AssertionError(f"child printed {line!r}, expected {expected!r}; stderr:\n{err}")


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


# Opens the journal as coordinator, records an event, reports its pid and waits to be killed.
HOLDER = """
    import sys, time
    from pathlib import Path
    from helmproc.journal import Journal
    j = Journal.open(Path(sys.argv[1]))
    if sys.argv[2] == "record":
        j.record_failed(1, "recorded by the holder")
    print("ready", flush=True)
    time.sleep(120)
"""

# Tries to open the journal as coordinator; prints the error type and message.
CONTENDER = """
    import sys
    from pathlib import Path
    from helmproc.journal import Journal
    try:
        Journal.open(Path(sys.argv[1])).close()
    except Exception as exc:
        print(type(exc).__name__)
        print(exc)
    else:
        print("opened")
"""


# -- transitions --------------------------------------------------------------------------

P, PR, U, C, F = (
    ChunkState.PLANNED,
    ChunkState.PROCESSED,
    ChunkState.UPLOADED,
    ChunkState.CLEANED,
    ChunkState.FAILED,
)

TRANSITIONS = [
    # (history after planned, target, legal)
    ((), PR, True),  # planned -> processed: the normal first step
    ((), F, True),  # planned -> failed: the chunk's worker crashed
    ((), U, False),  # planned -> uploaded: nothing to upload yet
    ((), C, False),  # planned -> cleaned: nothing to clean yet
    ((F,), PR, True),  # failed -> processed: retry succeeded
    ((F,), F, True),  # failed -> failed: retry failed again
    ((F,), U, False),  # failed -> uploaded: no durable shards to upload
    ((F,), C, False),  # failed -> cleaned: never processed
    ((PR,), PR, True),  # processed -> processed: shard rebuilt after repair
    ((PR,), U, True),  # processed -> uploaded: commit confirmed
    ((PR,), F, True),  # processed -> failed: upload failed terminally
    ((PR,), C, False),  # processed -> cleaned: would delete unpublished shards
    ((PR, U), U, True),  # uploaded -> uploaded: commit re-confirmed on resume
    ((PR, U), C, True),  # uploaded -> cleaned: local files deleted
    ((PR, U), PR, True),  # uploaded -> processed: reprocessed to retry its failed runs
    ((PR, U), F, False),  # uploaded -> failed: the data is safe remotely
    ((PR, U, C), PR, True),  # cleaned -> processed: reprocessed to retry its failed runs
    ((PR, U, C), U, False),  # cleaned -> uploaded: nothing new to upload
    ((PR, U, C), C, False),  # cleaned -> cleaned: nothing left to delete
    ((PR, U, C), F, False),  # cleaned -> failed: the published data is safe
    ((F, PR, F, PR, U), C, True),  # a chunk that failed twice still finishes
    ((PR, U, C, PR, U), C, True),  # a retried chunk is published and cleaned again
]


@pytest.mark.parametrize(
    ("history", "target", "legal"),
    TRANSITIONS,
    ids=[f"{'-'.join(['planned', *h])}->{t}" for h, t, _ in TRANSITIONS],
)
def test_transition_table(
    journal: Journal, history: tuple[ChunkState, ...], target: ChunkState, legal: bool
) -> None:
    for state in history:
        move(journal, 1, state)
    before = journal.chunk_status(1)
    n_events = len(journal.events())
    if legal:
        move(journal, 1, target)
        assert journal.chunk_status(1).state is target
        assert len(journal.events()) == n_events + 1
    else:
        with pytest.raises(IllegalTransitionError) as info:
            move(journal, 1, target)
        message = str(info.value)
        assert message.startswith(f"chunk 1: illegal transition {before.state} -> {target}")
        assert journal.chunk_status(1) == before
        assert len(journal.events()) == n_events


def test_planned_cannot_be_recorded_again(journal: Journal) -> None:
    with pytest.raises(AssertionError, match="no API"):
        move(journal, 0, ChunkState.PLANNED)


def test_unknown_chunk_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="chunk 99 is not in the plan"):
        journal.record_failed(99, "x")
    with pytest.raises(JournalError, match="chunk 99 is not in the plan"):
        journal.chunk_status(99)


def test_chunk_status_folds_attempts_shards_commit_and_error(journal: Journal) -> None:
    runs = PLAN[2].runs
    journal.record_failed(2, "worker OOM")
    status = journal.chunk_status(2)
    assert (status.state, status.attempts, status.error) == (ChunkState.FAILED, 1, "worker OOM")
    assert status.shards == () and status.outcomes == () and status.commit_id is None

    first = [shard(2, n_rows=1)]
    journal.record_processed(2, first, [ok(runs[0]), bad(runs[1]), ok(runs[2])])
    rebuilt = [shard(2, n_rows=7), shard(2, table="runs", n_rows=3)]
    journal.record_processed(2, rebuilt, [ok(r) for r in runs])  # repair rebuilt the shard
    journal.record_uploaded(2, "c1")
    journal.record_uploaded(2, "c2")  # re-confirmed on resume under a newer commit
    status = journal.chunk_status(2)
    assert status.state is ChunkState.UPLOADED
    assert status.attempts == 3  # 1 failed + 2 processed events
    assert status.shards == tuple(rebuilt)  # latest processed event wins
    assert status.outcomes == tuple(ok(r) for r in runs)
    assert status.commit_id == "c2"
    assert status.error is None  # only set while the chunk is failed
    assert status.updated_at == journal.events()[-1]["at"]
    assert journal.chunk_statuses()[2] == status


def test_shards_and_outcomes_survive_a_later_failure(journal: Journal) -> None:
    journal.record_processed(0, [shard(0)], [ok(r) for r in PLAN[0].runs])
    journal.record_failed(0, "upload refused: 403")
    status = journal.chunk_status(0)
    assert status.state is ChunkState.FAILED
    assert status.shards == (shard(0),)
    assert status.error == "upload refused: 403"


def test_outcome_for_a_run_outside_the_chunk_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="not planned in this chunk: lite/v1.0.0/mmlu"):
        journal.record_processed(1, [shard(1)], [ok(run_ref(0))])
    assert journal.chunk_status(1).state is ChunkState.PLANNED


@pytest.mark.parametrize(
    "bad_path",
    [
        "/abs/instances/part.parquet",  # absolute
        "../instances/part.parquet",  # escapes the dataset root
        "instances\\part.parquet",  # Windows separator
        "",  # empty
    ],
)
def test_shard_path_must_be_relative(journal: Journal, bad_path: str) -> None:
    fact = ShardFact("instances", bad_path, 1, 1, "0" * 64)
    with pytest.raises(JournalError, match="must be relative to the dataset root"):
        journal.record_processed(1, [fact], [ok(PLAN[1].runs[0])])


def test_events_are_the_raw_log(journal: Journal) -> None:
    journal.record_failed(1, "boom")
    events = journal.events()
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert [(e["chunk_id"], e["state"]) for e in events] == [
        (0, "planned"),
        (1, "planned"),
        (2, "planned"),
        (1, "failed"),
    ]
    assert events[-1]["payload"] == {"error": "boom"}
    assert events[-1]["at"].endswith("+00:00")


# -- the job and its plan -----------------------------------------------------------------


def test_plan_round_trips_run_refs_exactly(path: Path) -> None:
    odd = RunRef("classic", "v0.2.4", 'näive:x=ü,y="q"', None, "runs/v0.2.4/näive%3Ax")
    plan = [
        ChunkPlan(5, (run_ref(9), odd, run_ref(1))),  # run order is kept, not sorted
        ChunkPlan(0, ()),  # an empty chunk
        ChunkPlan(3, (run_ref(2, project="mmlu"),)),
    ]
    with Journal.open(path) as j:
        j.start_job("j", {}, "t", plan)
    with Journal.open(path) as j:  # a fresh process-like reopen
        assert j.plan() == sorted(plan, key=lambda c: c.chunk_id)
        assert j.plan()[2].runs[1] is not odd and j.plan()[2].runs[1] == odd


def test_job_record_round_trips(journal: Journal) -> None:
    job = journal.job()
    assert job is not None
    assert job.job_id == "job-1"
    assert job.config == {"benchmark": "lite", "chunk_size": 2}
    assert job.job_timestamp == "2024-05-01T00:00:00Z"
    assert job.started_at == journal.events()[0]["at"]


def test_start_job_twice_is_refused(journal: Journal) -> None:
    with pytest.raises(JournalError, match="already holds job 'job-1'"):
        journal.start_job("job-2", {}, "t", [ChunkPlan(7, (run_ref(7),))])
    assert journal.job() is not None and journal.job().job_id == "job-1"  # type: ignore[union-attr]
    assert [c.chunk_id for c in journal.plan()] == [0, 1, 2]


def test_start_job_is_one_transaction(path: Path) -> None:
    # The second chunk's run cannot be serialised, after chunk 0 and its event were inserted.
    unserialisable = RunRef("p", "s", "r", object(), "loc")  # type: ignore[arg-type]
    with Journal.open(path) as j:
        with pytest.raises(TypeError):
            j.start_job(
                "j", {}, "t", [ChunkPlan(0, (run_ref(0),)), ChunkPlan(1, (unserialisable,))]
            )
        assert j.job() is None and j.plan() == [] and j.events() == []
        j.start_job("j", {}, "t", PLAN)  # nothing left behind blocks a clean start
        assert len(j.plan()) == 3


def test_sqlite_errors_during_a_write_become_journal_errors(journal: Journal) -> None:
    # A trigger stands in for a disk-full or I/O error raised by SQLite mid-transaction.
    conn = raw(journal.path)
    conn.execute(
        "CREATE TRIGGER disk_full BEFORE INSERT ON events "
        "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    conn.close()
    with pytest.raises(JournalError, match=r"write failed: database or disk is full") as info:
        journal.record_failed(0, "x")
    assert str(journal.path) in str(info.value)
    assert journal.chunk_status(0).state is ChunkState.PLANNED


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([ChunkPlan(0, ()), ChunkPlan(0, ())], "plan lists chunk 0 twice"),
        ([ChunkPlan(-1, ())], "plan has chunk id -1; ids are integers >= 0"),
        (
            [ChunkPlan(0, (run_ref(1),)), ChunkPlan(1, (run_ref(1),))],
            "plan lists run lite/v1.0.0/mmlu:subject=s1,model=openai_gpt2 in chunk 0 and chunk 1",
        ),
    ],
)
def test_bad_plan_is_refused(path: Path, plan: list[ChunkPlan], message: str) -> None:
    with Journal.open(path) as j:
        with pytest.raises(JournalError, match=message):
            j.start_job("j", {}, "t", plan)
        assert j.job() is None


def test_config_must_be_json(path: Path) -> None:
    with Journal.open(path) as j, pytest.raises(JournalError, match="not JSON-serialisable"):
        j.start_job("j", {"path": Path("/x")}, "t", PLAN)


def test_journal_before_start_job_is_empty(path: Path) -> None:
    with Journal.open(path) as j:
        assert j.job() is None and j.plan() == [] and j.chunk_statuses() == {}
        report = j.status()
    assert report.job_id is None and report.done is False
    assert render_text(report) == "no job recorded in this journal yet\n"


# -- database rules -----------------------------------------------------------------------


def test_pragmas_wal_and_synchronous_full(journal: Journal) -> None:
    conn = journal._db
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


REWRITES = [
    "UPDATE events SET state = 'cleaned'",  # rewrite a chunk's history
    "DELETE FROM events WHERE state = 'failed'",  # forget a failure
    "INSERT OR REPLACE INTO events (seq, chunk_id, state, at, payload) "
    "VALUES (1, 0, 'cleaned', 'x', '{}')",  # replace deletes without delete triggers
    "UPDATE job SET job_timestamp = 'later'",  # would break determinism across resume
    "DELETE FROM job",
    "INSERT OR REPLACE INTO job VALUES (1, 'other', '{}', 't', 't')",
    "UPDATE chunks SET runs = '[]'",  # change the plan after the fact
    "DELETE FROM chunks WHERE chunk_id = 2",
    "INSERT INTO chunks (chunk_id, runs) VALUES (0, '[]') "
    "ON CONFLICT (chunk_id) DO UPDATE SET runs = excluded.runs",  # upsert is an update
    "UPDATE schema_migrations SET version = 0",
    "DELETE FROM schema_migrations",
]


@pytest.mark.parametrize("sql", REWRITES)
def test_history_cannot_be_rewritten_even_with_raw_sql(path: Path, sql: str) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
        j.record_failed(1, "boom")
    conn = raw(path)
    dump_before = list(conn.iterdump())
    with pytest.raises(sqlite3.IntegrityError, match="journal is append-only"):
        conn.execute(sql)
    assert list(conn.iterdump()) == dump_before
    conn.close()


def test_raw_inserts_of_new_events_are_still_allowed(journal: Journal) -> None:
    # Append-only means appending works; the transition rules live in the Journal API.
    conn = raw(journal.path)
    conn.execute(
        "INSERT INTO events (chunk_id, state, at, payload) VALUES (0, 'failed', 't', ?)",
        (json.dumps({"error": "appended by hand"}),),
    )
    conn.close()
    status = journal.chunk_status(0)
    assert (status.state, status.error) == (ChunkState.FAILED, "appended by hand")


def test_events_reference_planned_chunks(journal: Journal) -> None:
    conn = raw(journal.path)
    conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO events (chunk_id, state, at) VALUES (99, 'failed', 't')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO events (chunk_id, state, at) VALUES (0, 'lost', 't')")
    conn.close()


def test_events_survive_close_and_reopen(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
        move(j, 0, ChunkState.PROCESSED)
        move(j, 0, ChunkState.UPLOADED)
        before = j.chunk_statuses()
    with Journal.open(path) as j:
        assert j.chunk_statuses() == before


def test_event_is_durable_when_record_returns_even_under_kill9(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
    script = """
        import os, signal, sys
        from pathlib import Path
        from helmproc.journal import Journal
        j = Journal.open(Path(sys.argv[1]))
        j.record_failed(2, "before the crash")
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no checkpoint, no atexit
    """
    proc = spawn(script, str(path))
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    with Journal.open(path) as j:  # the lock died with the process; the event did not
        status = j.chunk_status(2)
    assert (status.state, status.error) == (ChunkState.FAILED, "before the crash")


# -- migrations ---------------------------------------------------------------------------


def test_migrations_are_recorded(journal: Journal) -> None:
    rows = raw(journal.path).execute("SELECT version, name, applied_at FROM schema_migrations")
    recorded = [(v, n) for v, n, _ in rows]
    assert recorded == [(m.version, m.name) for m in migrations.MIGRATIONS]
    assert recorded[-1][0] == migrations.LATEST_VERSION


def test_reopen_is_idempotent(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
        first = migrations.applied_migrations(j._db)
    for _ in range(2):
        with Journal.open(path) as j:
            assert migrations.applied_migrations(j._db) == first  # same rows, same applied_at
            assert j.job() is not None and len(j.plan()) == 3


def test_newer_schema_is_refused(path: Path) -> None:
    Journal.open(path).close()
    conn = raw(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 't')")
    conn.close()
    for readonly in (False, True):
        with pytest.raises(JournalError) as info:
            Journal.open(path, readonly=readonly)
        assert str(info.value) == (
            f"journal {path} has schema version 999 ('from_the_future'), newer than this "
            f"helmproc supports (version {migrations.LATEST_VERSION}); upgrade helmproc to open it"
        )
    CoordinatorLock.acquire(path).release()  # the refused open released its lock


def test_renamed_migration_is_refused(path: Path) -> None:
    Journal.open(path).close()
    renamed = (Migration(1, "something_else", ()),)
    with pytest.raises(JournalError, match="written by an incompatible build"):
        migrations.check_compatible(raw(path), path, renamed)


LATEST = migrations.LATEST_VERSION


def test_pending_migrations_apply_in_order_and_once(path: Path) -> None:
    Journal.open(path).close()
    extra = (
        *migrations.MIGRATIONS,
        Migration(LATEST + 1, "add_notes", ("CREATE TABLE notes (x TEXT)",)),
        Migration(LATEST + 2, "add_index", ("CREATE INDEX notes_x ON notes (x)",)),
    )
    conn = raw(path)
    assert [m.name for m in migrations.apply_pending(conn, path, extra)] == [
        "add_notes",
        "add_index",
    ]
    assert migrations.apply_pending(conn, path, extra) == []
    applied = [v for v, _, _ in migrations.applied_migrations(conn)]
    assert applied == list(range(1, LATEST + 3))


def test_failed_migration_leaves_nothing_behind(path: Path) -> None:
    Journal.open(path).close()
    broken = (
        *migrations.MIGRATIONS,
        Migration(LATEST + 1, "half_done", ("CREATE TABLE notes (x TEXT)", "THIS IS NOT SQL")),
    )
    conn = raw(path)
    with pytest.raises(sqlite3.OperationalError):
        migrations.apply_pending(conn, path, broken)
    assert [v for v, _, _ in migrations.applied_migrations(conn)] == list(range(1, LATEST + 1))
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "notes" not in tables


def test_migration_versions_must_be_contiguous(path: Path) -> None:
    Journal.open(path).close()
    gap = (*migrations.MIGRATIONS, Migration(LATEST + 2, "skips_one", ()))
    with pytest.raises(ValueError, match=f"expected {LATEST + 1}"):
        migrations.apply_pending(raw(path), path, gap)


def test_not_a_database_is_a_journal_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite, just a file that happens to sit here" * 20)
    with pytest.raises(JournalError, match=f"cannot open journal {path}"):
        Journal.open(path)
    with pytest.raises(JournalError, match=f"cannot read journal {path}"):
        Journal.open(path, readonly=True)


# -- the coordinator lock -----------------------------------------------------------------


def test_second_coordinator_in_another_process_is_refused(journal: Journal) -> None:
    proc = spawn(CONTENDER, str(journal.path))
    out, err = proc.communicate(timeout=60)
    kind, message = out.strip().split("\n", 1)
    assert kind == "JournalLockedError", err
    assert message == (
        f"journal {journal.path} is in use by another helmproc coordinator (pid {os.getpid()}); "
        f"wait for it to finish, or stop it (kill {os.getpid()}) and run the command again"
    )


def test_lock_held_by_other_process_is_released_by_sigkill(journal: Journal) -> None:
    path = journal.path
    journal.close()
    holder = spawn(HOLDER, str(path), "idle")
    try:
        wait_for_line(holder, "ready")
        with pytest.raises(JournalLockedError) as info:
            Journal.open(path)
        assert str(journal.path) in str(info.value)
        assert f"pid {holder.pid}" in str(info.value)
        assert "wait for it to finish, or stop it" in str(info.value)
    finally:
        kill9(holder)
    with Journal.open(path) as j:  # no stale lock: the kernel released it
        assert j.job() is not None
    assert (path.parent / (path.name + ".lock")).read_text().strip() == str(os.getpid())


def test_lock_is_not_kept_alive_by_forked_children(journal: Journal) -> None:
    # A fork-based pool worker inherits the coordinator's descriptors; if it kept the lock,
    # resume after kill -9 of the coordinator would be refused until every worker exited.
    path = journal.path
    journal.close()
    script = """
        import os, sys, time
        from pathlib import Path
        from helmproc.journal import Journal
        j = Journal.open(Path(sys.argv[1]))
        child = os.fork()
        if child == 0:
            time.sleep(120)
            os._exit(0)
        print(child, flush=True)
        print("ready", flush=True)
        time.sleep(120)
    """
    holder = spawn(script, str(path))
    assert holder.stdout is not None
    child_pid = int(holder.stdout.readline())
    lock_file = lock_path_for(path).resolve()

    def child_has_lock_open() -> bool:
        return lock_file in {Path(f.path).resolve() for f in psutil.Process(child_pid).open_files()}

    try:
        wait_for_line(holder, "ready")
        # the child closes its inherited copy in its after-fork hook, which it may not have run
        # yet when the parent prints "ready": wait for that (without the hook, it never does)
        deadline = time.monotonic() + 20
        while child_has_lock_open() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not child_has_lock_open(), "the forked child kept the inherited lock descriptor"
        kill9(holder)
        os.kill(child_pid, 0)  # the forked child is still alive ...
        Journal.open(path).close()  # ... and does not hold the lock
    finally:
        try:
            os.kill(child_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_same_process_second_open_is_refused_until_close(path: Path) -> None:
    first = Journal.open(path)
    with pytest.raises(JournalLockedError):
        Journal.open(path)
    first.close()
    first.close()  # idempotent
    Journal.open(path).close()


def test_closed_journal_refuses_use(path: Path) -> None:
    j = Journal.open(path)
    j.close()
    with pytest.raises(JournalError, match="is closed"):
        j.plan()


# -- readonly opens -----------------------------------------------------------------------


def test_readonly_open_while_a_coordinator_runs_sees_its_events(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
    holder = spawn(HOLDER, str(path), "record")
    try:
        wait_for_line(holder, "ready")
        with Journal.open(path, readonly=True) as ro:
            status = ro.chunk_status(1)
            assert (status.state, status.error) == (ChunkState.FAILED, "recorded by the holder")
            assert ro.status().chunks["failed"] == 1
            with pytest.raises(JournalError, match="open readonly"):
                ro.record_cleaned(0)
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                ro._db.execute("INSERT INTO events (chunk_id, state, at) VALUES (0, 'failed', 't')")
    finally:
        kill9(holder)


def test_readonly_open_never_writes(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
        move(j, 0, ChunkState.PROCESSED)
    before = path.read_bytes()
    with Journal.open(path, readonly=True) as ro:
        report = ro.status()
    assert report.chunks["processed"] == 1
    assert path.read_bytes() == before


def test_readonly_open_of_missing_journal(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "journal.sqlite"
    with pytest.raises(NoJobError, match=f"no journal at {missing}"):
        Journal.open(missing, readonly=True)
    assert not missing.parent.exists()


def test_readonly_open_of_unmigrated_file_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    raw(path).close()  # an empty SQLite database
    with pytest.raises(JournalError, match="schema version 0, older than"):
        Journal.open(path, readonly=True)


# -- the status report --------------------------------------------------------------------


def synthetic(path: Path) -> Journal:
    """Chunk 0 cleaned, 1 failed, 2 uploaded with one bad run, 3 processed, 4 planned."""
    plan = [*PLAN, ChunkPlan(3, (run_ref(6),)), ChunkPlan(4, (run_ref(7), run_ref(8)))]
    j = Journal.open(path)
    j.start_job("lite-2024", {"benchmark": "lite"}, "2024-05-01T00:00:00Z", plan)
    j.record_processed(0, [shard(0, n_rows=20, n_bytes=2000)], [ok(r, 10) for r in plan[0].runs])
    j.record_uploaded(0, "c0")
    j.record_cleaned(0)
    j.record_failed(1, "worker died")
    j.record_failed(1, "worker died again")
    r3, r4, r5 = plan[2].runs
    j.record_processed(2, [shard(2, n_rows=5, n_bytes=1)], [bad(r3), ok(r4, 1), ok(r5, 2)])
    j.record_processed(
        2,
        [shard(2, n_rows=6, n_bytes=300), shard(2, table="runs", n_rows=3, n_bytes=50)],
        [bad(r3, "run_spec.json: missing"), ok(r4, 2), ok(r5, 4)],
    )
    j.record_uploaded(2, "c2")
    j.record_processed(3, [shard(3, n_rows=7, n_bytes=700)], [ok(plan[3].runs[0], 7)])
    return j


def test_status_report_numbers(path: Path) -> None:
    with synthetic(path) as j:
        report = j.status()
        last_at = j.events()[-1]["at"]
        job = j.job()
    assert job is not None
    assert report.to_json() == {
        "job_id": "lite-2024",
        "done": False,
        "n_chunks": 5,
        "n_runs": 9,
        "chunks": {"planned": 1, "processed": 1, "uploaded": 1, "cleaned": 1, "failed": 1},
        "runs": {"ok": 5, "failed": 1},
        "rows": 10 + 10 + 2 + 4 + 7,
        "shards": 1 + 2 + 1,
        "bytes": 2000 + 300 + 50 + 700,
        "failures": [
            {
                "run": "lite/v1.0.0/mmlu:subject=s3,model=openai_gpt2",
                "reason": "run_spec.json: missing",
            }
        ],
        "failures_by_reason": [
            {
                "reason": "run_spec.json: missing",
                "count": 1,
                "runs": ["lite/v1.0.0/mmlu:subject=s3,model=openai_gpt2"],
                "example": "run_spec.json: missing",
            }
        ],
        "chunk_failures": [{"chunk_id": 1, "attempts": 2, "reason": "worker died again"}],
        "started_at": job.started_at,
        "updated_at": last_at,
        # a synthetic journal: no dataset was read at planning, so nothing matched there
        "already_present": 0,
        "matched": None,
        "changed": [],
    }
    json.dumps(report.to_json())  # serialisable as is


def test_status_is_the_same_through_a_readonly_open(path: Path) -> None:
    synthetic(path).close()
    with Journal.open(path) as j:
        writer_view = j.status()
    with Journal.open(path, readonly=True) as ro:
        assert ro.status() == writer_view


def test_status_done_when_every_chunk_is_cleaned(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("job-1", {}, "t", PLAN)
        for chunk in PLAN:
            for state in (ChunkState.PROCESSED, ChunkState.UPLOADED):
                move(j, chunk.chunk_id, state)
            assert not j.status().done
            move(j, chunk.chunk_id, ChunkState.CLEANED)
        report = j.status()
    assert report.done
    assert report.chunks == {"planned": 0, "processed": 0, "uploaded": 0, "cleaned": 3, "failed": 0}
    assert report.runs == {"ok": 6, "failed": 0}


def test_status_done_for_a_job_with_zero_chunks(path: Path) -> None:
    with Journal.open(path) as j:
        j.start_job("empty", {}, "t", [])
        report = j.status()
    assert report.done and report.n_chunks == 0 and report.updated_at is None


def test_render_text(path: Path) -> None:
    with synthetic(path) as j:
        text = render_text(j.status())
    lines = text.splitlines()
    assert lines[0] == "job      lite-2024  (not done)"
    assert "chunks   5: 1 planned, 1 processed, 1 uploaded, 1 cleaned, 1 failed" in lines
    assert "runs     9: 5 ok, 1 failed, 3 pending" in lines
    assert "output   33 rows in 4 shards, 3.0 KB" in lines
    assert "failed runs (1) by reason:" in lines
    assert "  run_spec.json: missing: 1 run" in lines
    assert "    lite/v1.0.0/mmlu:subject=s3,model=openai_gpt2" in lines
    assert "  chunk 1 after 2 attempt(s): worker died again" in lines
    assert len(lines) < 15


def test_render_text_truncates_long_failure_lists() -> None:
    from helmproc.journal.status import MAX_FAILURES_SHOWN, RunFailure

    report = StatusReport(
        job_id="j",
        done=False,
        n_chunks=1,
        n_runs=50,
        chunks={s.value: 0 for s in ChunkState},
        runs={"ok": 0, "failed": 50},
        rows=0,
        shards=0,
        bytes=0,
        failures=tuple(RunFailure(f"p/s/r{i}", f"f{i}.json: bad") for i in range(50)),
        chunk_failures=(),
        started_at="t",
        updated_at="t",
    )
    text = render_text(report)
    assert text.count(".json: bad: 1 run") == MAX_FAILURES_SHOWN  # one line per reason
    assert "'helmproc status --json' lists all" in text


def test_run_input_bytes_are_recorded_with_the_plan_and_append_only(path: Path) -> None:
    sizes = {PLAN[0].runs[0].key: 1234, PLAN[2].runs[2].key: 0}
    with Journal.open(path) as j:
        assert j.run_input_bytes() == {}
        j.start_job("job-1", {}, "t", PLAN, run_bytes=sizes)
        assert j.run_input_bytes() == sizes  # runs whose size was unknown have no row
    conn = raw(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE run_inputs SET n_bytes = 1")
    with Journal.open(path, readonly=True) as j:
        assert j.run_input_bytes() == sizes
