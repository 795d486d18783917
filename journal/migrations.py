"""Named, ordered schema migrations of the journal, recorded in ``schema_migrations``.

How it works: ``MIGRATIONS`` is an ordered tuple; migration N has version N. Opening a journal
as coordinator applies every migration newer than the highest recorded version, each in its
own ``BEGIN IMMEDIATE`` transaction that also inserts its (version, name, applied_at) row.
A journal recorded by a newer helmproc (a version this build does not know) is refused.

Across a crash: SQLite DDL is transactional, so a crash mid-migration leaves the journal at
the previous version with none of the half-applied statements; the next open applies the
migration again from the start. Applied migrations are never edited, only appended.

Schema (version 1): ``job`` (one row), ``chunks`` (the plan: chunk_id, runs JSON) and
``events`` (the append-only log of chunk state changes). Version 2 adds ``splits`` (the memory
splits of chunks, so that resume and retries work on the same pieces). Version 3 adds
``run_inputs`` (each planned run's input bytes where the source could tell them at planning:
the memory budget's admission estimates a chunk from them). Triggers make every table
append-only at the database level: UPDATE and DELETE abort, and so does an INSERT that would
replace an existing row (``INSERT OR REPLACE`` deletes without firing delete triggers).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from helmproc.engine.errors import BadJournalFileError, JournalError


@dataclass(frozen=True)
class Migration:
    """One schema step. ``statements`` run in order inside one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]


def _append_only(table: str, key: str) -> tuple[str, ...]:
    """Triggers that make ``table`` insert-only; ``key`` is its primary key column."""
    return (
        f"""CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE on {table} is not allowed');
        END""",
        f"""CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE on {table} is not allowed');
        END""",
        f"""CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table}
        WHEN EXISTS (SELECT 1 FROM {table} WHERE {key} = NEW.{key})
        BEGIN SELECT RAISE(ABORT, 'journal is append-only: {table} row already recorded');
        END""",
    )


CHUNK_STATES_SQL = "('planned', 'processed', 'uploaded', 'cleaned', 'failed')"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="create_job_chunks_events",
        statements=(
            """CREATE TABLE job (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                job_id TEXT NOT NULL CHECK (job_id <> ''),
                config TEXT NOT NULL,
                job_timestamp TEXT NOT NULL,
                started_at TEXT NOT NULL
            )""",
            """CREATE TABLE chunks (
                chunk_id INTEGER PRIMARY KEY CHECK (chunk_id >= 0),
                runs TEXT NOT NULL
            )""",
            f"""CREATE TABLE events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                chunk_id INTEGER NOT NULL REFERENCES chunks (chunk_id),
                state TEXT NOT NULL CHECK (state IN {CHUNK_STATES_SQL}),
                at TEXT NOT NULL,
                payload TEXT NOT NULL DEFAULT '{{}}'
            )""",
            "CREATE INDEX events_by_chunk ON events (chunk_id, seq)",
            *_append_only("job", "id"),
            *_append_only("chunks", "chunk_id"),
            *_append_only("events", "seq"),
            *_append_only("schema_migrations", "version"),
        ),
    ),
    Migration(
        version=2,
        name="create_splits",
        statements=(
            # A chunk's memory splits, so every later attempt works on the same pieces: a row
            # with no ``skipped`` runs halves piece ``part`` into part+'0' and part+'1'; a row
            # with ``skipped`` runs gives those runs up inside piece ``part`` (one run alone too
            # big for the budget). Replayed in ``seq`` order (``store.Journal.chunk_pieces``).
            """CREATE TABLE splits (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                chunk_id INTEGER NOT NULL REFERENCES chunks (chunk_id),
                part TEXT NOT NULL CHECK (part NOT GLOB '*[^01]*'),
                skipped TEXT NOT NULL DEFAULT '[]',
                at TEXT NOT NULL
            )""",
            *_append_only("splits", "seq"),
        ),
    ),
    Migration(
        version=3,
        name="create_run_inputs",
        statements=(
            # The bytes of each planned run's input files, recorded with the plan when the
            # source can tell them without reading (a local folder: one stat per file). Only
            # the memory budget's admission reads them; no shard path or byte depends on them.
            """CREATE TABLE run_inputs (
                run_key TEXT PRIMARY KEY,
                chunk_id INTEGER NOT NULL REFERENCES chunks (chunk_id),
                n_bytes INTEGER NOT NULL CHECK (n_bytes >= 0)
            )""",
            *_append_only("run_inputs", "run_key"),
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_SCHEMA_MIGRATIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)"""


def _check_ordered(migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration {migration.name!r} has version {migration.version}, "
                f"expected {expected}: versions must be 1, 2, 3, ... in order"
            )


_check_ordered(MIGRATIONS)


def applied_migrations(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    """(version, name, applied_at) of every recorded migration; empty for a blank file."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return []
    rows = conn.execute(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [(int(v), str(n), str(a)) for v, n, a in rows]


def check_is_journal(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a database with tables that is not a helmproc journal (before touching it).

    An empty database is a journal to be; any other needs our ``schema_migrations`` table.
    """
    tables = [
        str(row[0])
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    columns = [str(row[1]) for row in conn.execute("PRAGMA table_info(schema_migrations)")]
    if tables and columns != ["version", "name", "applied_at"]:
        raise BadJournalFileError(
            f"{path} is an SQLite database but not a helmproc journal (its tables: "
            f"{', '.join(sorted(tables)[:6])}); nothing was changed in it"
        )


def check_compatible(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Return the journal's schema version; refuse one written by a newer or different build."""
    check_is_journal(conn, path)
    applied = applied_migrations(conn)
    known = {m.version: m for m in migrations}
    for version, name, _ in applied:
        if version not in known:
            latest = migrations[-1].version if migrations else 0
            raise JournalError(
                f"journal {path} has schema version {version} ({name!r}), newer than this "
                f"helmproc supports (version {latest}); upgrade helmproc to open it"
            )
        if known[version].name != name:
            raise JournalError(
                f"journal {path} schema version {version} is {name!r} but this helmproc "
                f"calls it {known[version].name!r}; it was written by an incompatible build"
            )
    return applied[-1][0] if applied else 0


def apply_pending(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS
) -> list[Migration]:
    """Apply every migration not yet recorded, one transaction each; return those applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``) so the explicit
    transactions here are the only ones.
    """
    _check_ordered(migrations)
    check_is_journal(conn, path)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_SCHEMA_MIGRATIONS)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    applied_now: list[Migration] = []
    for migration in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the transaction: the version cannot change under us now.
            if migration.version <= check_compatible(conn, path, migrations):
                conn.execute("ROLLBACK")
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied_now.append(migration)
    return applied_now
