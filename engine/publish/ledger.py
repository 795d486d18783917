"""The destination is the ledger: what a dataset already holds, read from the dataset itself.

A helmproc dataset is made of *groups*: the ``instances``, ``evaluations`` and ``runs`` files
of one chunk (or piece of a chunk, or one compacted batch) share a name (``instances/<job>/
0000/instances-000003.parquet`` and ``runs/<job>/0000/runs-000003.parquet`` are group
``<job>/0000/000003``) and hold the rows of the same runs: the group's ``runs`` file lists
them with their row counts. ``releases/`` holds the releases table, outside any group.

``read_ledger`` lists the destination once (file names and sizes: a folder walk, or the Hub's
tree listing) and downloads only the small tables (``runs``, ``releases``), never
``instances`` or ``evaluations``. From that a job knows which runs are present (ok), failed,
in a group with a missing file (damaged: converted again after the group is removed), and
which releases rows exist. Nothing here writes; a crash while reading needs no repair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from helmproc.engine.convert.schemas import RELEASES_SCHEMA, RUNS_SCHEMA
from helmproc.engine.dataset_layout import CARD_PATH
from helmproc.engine.publish.folder import LOCK_PATH, FileEntry, Publisher

GROUP_TABLES = ("instances", "evaluations", "runs")
RELEASES_TABLE = "releases"
# Files of a dataset that are no shard: the card, the Hub's attributes, the folder lock.
KNOWN_FILES = frozenset({CARD_PATH, ".gitattributes", LOCK_PATH})
READ_THREADS = 8

RunKey = tuple[str, str, str]  # (project, suite, run)
ReleaseRow = tuple[str, str, str, str]  # (project, release, suite, run)


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_nullable(True) for f in schema])


LEDGER_SCHEMA = _nullable(RUNS_SCHEMA)


def shard_group(path: str) -> tuple[str, str] | None:
    """``(table, group)`` of a group member's path, or None for any other file."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] not in GROUP_TABLES:
        return None
    table, name = parts[0], parts[-1]
    if not (name.startswith(table + "-") and name.endswith(".parquet")):
        return None
    stem = name[len(table) + 1 : -len(".parquet")]
    return table, "/".join([*parts[1:-1], stem])


def group_path(table: str, group: str) -> str:
    """Inverse of :func:`shard_group`."""
    head, _, stem = group.rpartition("/")
    return f"{table}/{head}/{table}-{stem}.parquet" if head else f"{table}/{table}-{stem}.parquet"


def is_releases_file(path: str) -> bool:
    return path.startswith(RELEASES_TABLE + "/") and path.endswith(".parquet")


@dataclass(frozen=True)
class RunState:
    """A run as the dataset holds it: its best row (ok over failed) and where."""

    outcome: str
    group: str
    source_sizes: str | None
    n_groups_ok: int = 1


@dataclass(frozen=True)
class Ledger:
    """What a destination holds, from its file listing and its two small tables."""

    files: Mapping[str, FileEntry]
    groups: Mapping[str, Mapping[str, str]]  # group -> table -> path
    runs: pa.Table  # every runs row, plus the column ``group``
    releases: frozenset[ReleaseRow]
    head: str | None = None
    runs_by_key: Mapping[RunKey, RunState] = field(default_factory=dict)
    release_rows: int = 0  # rows of the releases files (more than ``releases``: a row twice)
    unreadable: tuple[str, ...] = ()  # runs / releases files that could not be read

    @property
    def incomplete_groups(self) -> tuple[str, ...]:
        """Groups missing one of their three files (a file was deleted or never landed) or
        whose runs file cannot be read: their runs are converted again."""
        bad = set(self.unreadable)
        return tuple(
            g
            for g, members in self.groups.items()
            if len(members) < len(GROUP_TABLES) or members.get("runs") in bad
        )

    def state(self, key: RunKey) -> RunState | None:
        return self.runs_by_key.get(key)

    def present(self) -> dict[RunKey, RunState]:
        """Runs held ok in a complete group: what a job must not convert again."""
        damaged = set(self.incomplete_groups)
        return {
            k: s
            for k, s in self.runs_by_key.items()
            if s.outcome == "ok" and s.group not in damaged
        }

    def extended(
        self, files: Mapping[str, FileEntry], runs: Iterable[tuple[pa.Table, str]]
    ) -> Ledger:
        """This ledger plus files a job published since it was read (with their runs tables
        and groups), without reading the destination again."""
        all_files = {**self.files, **files}
        groups: dict[str, dict[str, str]] = {g: dict(m) for g, m in self.groups.items()}
        for path in files:
            found = shard_group(path)
            if found is not None:
                groups.setdefault(found[1], {})[found[0]] = path
        extra = [(_conform(t, LEDGER_SCHEMA), g) for t, g in runs]
        table = pa.concat_tables([self.runs, _with_groups(extra)]) if extra else self.runs
        return Ledger(
            dict(sorted(all_files.items())),
            groups,
            table,
            self.releases,
            self.head,
            _index_runs(table),
            self.release_rows,
            self.unreadable,
        )

    def files_of(self, table: str) -> list[str]:
        return sorted(p for p in self.files if p.startswith(table + "/") and p.endswith(".parquet"))

    @property
    def stray_files(self) -> tuple[str, ...]:
        """Files that no shard of the dataset accounts for (temp files, foreign files)."""
        return tuple(
            p
            for p in self.files
            if p not in KNOWN_FILES and shard_group(p) is None and not is_releases_file(p)
        )


def read_tables(
    publisher: Publisher, paths: Iterable[str], schema: pa.Schema, columns: list[str] | None = None
) -> list[pa.Table]:
    """The Parquet files ``paths`` of the destination, each as a table (of ``schema``:
    columns a file lacks read as null), in the order given. Local files are read directly;
    remote ones are downloaded (threads), never cached on disk."""
    return [t for t in _read_tables(publisher, paths, schema, columns, tolerant=False) if t]


def _read_tables(
    publisher: Publisher,
    paths: Iterable[str],
    schema: pa.Schema,
    columns: list[str] | None,
    tolerant: bool,
) -> list[pa.Table | None]:
    paths = list(paths)
    wanted = columns or schema.names

    def one(path: str) -> pa.Table | None:
        try:
            return _one(path)
        except (OSError, ValueError, pa.ArrowException):
            if tolerant:
                return None
            raise

    def _one(path: str) -> pa.Table:
        return _conform(pq.read_table(parquet_source(publisher, path)), schema).select(wanted)

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return list(pool.map(one, paths))


def parquet_source(publisher: Publisher, path: str) -> Path | pa.BufferReader:
    """What ``pq.read_table`` reads a Parquet file of the destination from: the local file,
    or the remote file's bytes copied into memory Arrow owns. Not a Python ``bytes``/``BytesIO``:
    Arrow's I/O threads can release such a buffer after the read returned, which needs the
    interpreter, and a process exiting then (Ctrl-C while the ledger is read) aborts with
    "terminate called without an active exception"."""
    local = publisher.local_path(path)
    if local is not None:
        return local
    data = publisher.read_bytes(path)
    owned = pa.allocate_buffer(len(data))
    pa.FixedSizeBufferWriter(owned).write(data)
    return pa.BufferReader(owned)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (absent ones null, as an older file)."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(table.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def read_ledger(publisher: Publisher, *, pin: bool = False) -> Ledger:
    """What ``publisher``'s destination holds. With ``pin`` (a Hub destination) the branch
    head is read first and everything is read at it; later commits on top of anything else
    fail (the one-writer guard)."""
    head = None
    pin_head = getattr(publisher, "pin_head", None)
    if pin and pin_head is not None:
        head = pin_head()
    files = publisher.list_files()
    groups: dict[str, dict[str, str]] = {}
    for path in files:
        found = shard_group(path)
        if found is not None:
            groups.setdefault(found[1], {})[found[0]] = path
    run_groups = sorted(g for g, members in groups.items() if "runs" in members)
    run_paths = [groups[g]["runs"] for g in run_groups]
    tables = _read_tables(publisher, run_paths, LEDGER_SCHEMA, None, tolerant=True)
    unreadable = [p for p, t in zip(run_paths, tables, strict=True) if t is None]
    runs = _with_groups(
        [(t, g) for t, g in zip(tables, run_groups, strict=True) if t is not None]
    )
    releases_paths = [p for p in files if is_releases_file(p)]
    releases: set[ReleaseRow] = set()
    n_release_rows = 0
    read = _read_tables(publisher, releases_paths, _nullable(RELEASES_SCHEMA), None, True)
    for path, table in zip(releases_paths, read, strict=True):
        if table is None:
            unreadable.append(path)
            continue
        n_release_rows += table.num_rows
        releases.update(zip(*(table.column(i).to_pylist() for i in range(4)), strict=True))
    return Ledger(
        files,
        groups,
        runs,
        frozenset(releases),
        head,
        _index_runs(runs),
        n_release_rows,
        tuple(unreadable),
    )


def _with_groups(tables: list[tuple[pa.Table, str]]) -> pa.Table:
    with_group = [
        t.append_column("group", pa.repeat(pa.scalar(g), t.num_rows).cast(pa.string()))
        for t, g in tables
    ]
    if not with_group:
        return LEDGER_SCHEMA.append(pa.field("group", pa.string())).empty_table()
    return pa.concat_tables(with_group)


def _index_runs(runs: pa.Table) -> dict[RunKey, RunState]:
    cols = {
        name: runs.column(name).to_pylist()
        for name in ("helm_project", "helm_suite", "helm_run", "outcome", "group", "source_sizes")
    }
    out: dict[RunKey, RunState] = {}
    for i in range(runs.num_rows):
        key = (cols["helm_project"][i], cols["helm_suite"][i], cols["helm_run"][i])
        outcome = cols["outcome"][i]
        seen = out.get(key)
        if seen is None or (seen.outcome != "ok" and outcome == "ok"):
            n_ok = (seen.n_groups_ok if seen else 0) + (outcome == "ok")
            out[key] = RunState(outcome, cols["group"][i], cols["source_sizes"][i], n_ok)
        elif outcome == "ok":
            out[key] = RunState(seen.outcome, seen.group, seen.source_sizes, seen.n_groups_ok + 1)
    return out
