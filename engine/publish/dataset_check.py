"""Check a dataset from the dataset alone (no journal), and repair it.

``check_dataset`` lists the destination and reads its small tables (``ledger.py``), then:
every group has its three files; every Parquet file is readable (a local file is read whole;
a Hub file by its footer, two range requests);
each group's ``instances`` / ``evaluations`` row counts equal what its ``runs`` file records
(sum of ``n_rows`` / ``n_evaluations`` of its ok runs); no run is held ok in two groups; no
releases row twice; and no file that no shard of the dataset accounts for (temp files of a
killed writer, foreign files).

``repair_dataset`` deletes, in one step, every group with a problem (so the ledger no longer
lists its runs and the next ``helmproc run`` with the same source converts them again, from
the journal's plan byte-identically when the journal is there) and helmproc's own stray files
(``*.tmp-*``); other foreign files are only reported. For a run held twice, the groups after
the first (by name) are deleted. A crash mid-repair leaves a dataset that ``check_dataset``
reports again; repairing again finishes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from helmproc.engine.durable import TEMP_MARK
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.ledger import (
    GROUP_TABLES,
    Ledger,
    is_releases_file,
    parquet_source,
    read_ledger,
)


@dataclass(frozen=True)
class Problem:
    path: str
    problem: str
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "problem": self.problem, "group": self.group}


@dataclass(frozen=True)
class DatasetCheck:
    files: int
    groups: int
    runs: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_groups(self) -> tuple[str, ...]:
        return tuple(sorted({p.group for p in self.problems if p.group is not None}))

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "groups": self.groups,
            "runs": self.runs,
            "ok": self.ok,
            "problems": [p.to_json() for p in self.problems],
        }


def _row_count(publisher: Publisher, path: str, size: int) -> int:
    """Rows of a Parquet file: a local file is read whole (every page decoded); a remote one
    by its footer (range requests) where the destination can, else downloaded whole."""
    local = publisher.local_path(path)
    if local is not None:
        return pq.read_table(local).num_rows
    footer = getattr(publisher, "parquet_rows", None)
    if footer is not None:
        return int(footer(path, size))
    return pq.read_table(parquet_source(publisher, path)).num_rows


def check_dataset(publisher: Publisher, ledger: Ledger | None = None) -> DatasetCheck:
    ledger = ledger or read_ledger(publisher)
    problems: list[Problem] = []
    for group in ledger.incomplete_groups:
        members = ledger.groups[group]
        for table in GROUP_TABLES:
            if table not in members:
                problems.append(Problem(f"{table}/.../{group}", f"{table} file missing", group))
    rows: dict[str, int] = {}
    for path, entry in ledger.files.items():
        if not path.endswith(".parquet") or path in ledger.unreadable:
            continue
        try:
            rows[path] = _row_count(publisher, path, entry.size)
        except (OSError, ValueError, pa.ArrowException) as exc:
            owner = next((g for g, m in ledger.groups.items() if path in m.values()), None)
            problems.append(Problem(path, f"unreadable: {exc}", owner))
    expected: dict[str, tuple[int, int]] = {}
    if ledger.runs.num_rows:
        ok = [r for r in ledger.runs.to_pylist() if r["outcome"] == "ok"]
        for r in ok:
            n, e = expected.get(r["group"], (0, 0))
            expected[r["group"]] = (n + int(r["n_rows"] or 0), e + int(r["n_evaluations"] or 0))
    for group, members in sorted(ledger.groups.items()):
        if len(members) < len(GROUP_TABLES):
            continue
        want_rows, want_evals = expected.get(group, (0, 0))
        for table, want in (("instances", want_rows), ("evaluations", want_evals)):
            got = rows.get(members[table])
            if got is not None and got != want:
                problems.append(
                    Problem(members[table], f"{got} rows, the runs table records {want}", group)
                )
    held: dict[tuple[str, str, str], list[str]] = {}
    for r in ledger.runs.to_pylist():
        if r["outcome"] == "ok":
            held.setdefault((r["helm_project"], r["helm_suite"], r["helm_run"]), []).append(
                r["group"]
            )
    for key, groups in sorted(held.items()):
        for extra in sorted(groups)[1:]:
            problems.append(
                Problem(
                    ledger.groups[extra]["runs"],
                    f"run {'/'.join(key)} is held twice (also in {sorted(groups)[0]})",
                    extra,
                )
            )
    if ledger.release_rows != len(ledger.releases):
        twice = ledger.release_rows - len(ledger.releases)
        problems.append(Problem("releases/", f"{twice} releases rows are held twice"))
    for path in ledger.unreadable:
        owner = next((g for g, m in ledger.groups.items() if path in m.values()), None)
        problems.append(Problem(path, "unreadable", owner))
    for path in ledger.stray_files:
        problems.append(Problem(path, "no shard of the dataset accounts for this file"))
    return DatasetCheck(
        len(ledger.files),
        len(ledger.groups),
        sum(1 for s in ledger.runs_by_key.values() if s.outcome == "ok"),
        tuple(problems),
    )


def repair_dataset(publisher: Publisher, check: DatasetCheck, ledger: Ledger) -> list[str]:
    """Delete the groups with problems and helmproc's stray temp files; returns the paths."""
    paths = sorted(
        {p for g in check.bad_groups if g in ledger.groups for p in ledger.groups[g].values()}
        | {p for p in ledger.stray_files if TEMP_MARK in p.rsplit("/", 1)[-1]}
        | {
            p.path
            for p in check.problems
            if p.group is None and is_releases_file(p.path) and p.path in ledger.files
        }
    )
    if paths:
        publisher.replace_files([], paths, f"helmproc: repair: remove {len(paths)} damaged files")
    return paths
