"""Find one run's rows in a helmproc dataset folder without reading the other runs.

How it works. A table (``instances``, ``evaluations``, ``runs``) is every ``*.parquet`` file
under ``<dataset>/<table>/`` (any depth; stray ``*.tmp-*`` files of interrupted writes do not
end in ``.parquet`` and are ignored). :class:`TableIndex` reads only the Parquet footers and,
for each row group, the min/max statistics of the run identity columns (``helm_project``,
``helm_suite``, ``helm_run``). A row group with min == max for all three (a big run's rows,
or a chunk of one run) is filed under that run and read without filtering. The shard writer
coalesces small runs into shared row groups (``chunks/shards.py``), so a row group may hold
several runs; such a row group, or one without statistics, is kept in a "mixed" list, and a
run reads each mixed row group whose ranges could contain it and keeps only its own rows.

So the memory of reading one run is one Arrow record batch (:data:`BATCH_ROWS` rows) plus
the index (one small record per row group; parsed footers are not kept), whatever the
dataset's size; the order rows come back in is the file
order (paths sorted, then row group, then row), which makes exports deterministic. Nothing is
written, so there is nothing to repair after a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH_ROWS = 1024
RUN_COLUMNS = ("helm_project", "helm_suite", "helm_run")


@dataclass(frozen=True, order=True)
class RunKey:
    """A run's identity in the dataset: (project, suite, run name)."""

    project: str
    suite: str
    run: str

    def __str__(self) -> str:
        return f"{self.project}/{self.suite}/{self.run}"


# Per identity column: (min, max), or None when the row group has no usable statistics.
Ranges = tuple[tuple[str, str] | None, ...]


@dataclass(frozen=True)
class RowGroupRef:
    """One row group of one file; ``ranges`` are its identity columns' (min, max)."""

    path: Path
    index: int
    n_rows: int
    ranges: Ranges

    def may_hold(self, key: RunKey) -> bool:
        values = (key.project, key.suite, key.run)
        return all(r is None or r[0] <= v <= r[1] for r, v in zip(self.ranges, values, strict=True))


def table_files(dataset: Path, table: str) -> list[Path]:
    """The Parquet files of ``table`` in dataset folder ``dataset``, sorted by path."""
    root = dataset / table
    return sorted(root.rglob("*.parquet")) if root.is_dir() else []


def _leaf_indices(metadata: pq.FileMetaData) -> dict[str, int]:
    schema = metadata.schema
    return {schema.column(i).path: i for i in range(metadata.num_columns)}


def _ranges(row_group: pq.RowGroupMetaData, leaves: dict[str, int]) -> Ranges:
    ranges: list[tuple[str, str] | None] = []
    for name in RUN_COLUMNS:
        stats = row_group.column(leaves[name]).statistics if name in leaves else None
        if stats is None or not stats.has_min_max or row_group.num_rows == 0:
            ranges.append(None)
        else:
            ranges.append((str(stats.min), str(stats.max)))
    return tuple(ranges)


@dataclass
class TableIndex:
    """Where each run's rows are in one table (see the module docstring)."""

    files: list[Path]
    pure: dict[RunKey, list[RowGroupRef]] = field(default_factory=dict)
    mixed: list[RowGroupRef] = field(default_factory=list)
    n_rows: int = 0

    @classmethod
    def build(cls, dataset: Path, table: str) -> TableIndex:
        index = cls(files=table_files(dataset, table))
        for path in index.files:
            metadata = pq.read_metadata(path)
            index.n_rows += metadata.num_rows
            leaves = _leaf_indices(metadata)
            for i in range(metadata.num_row_groups):
                row_group = metadata.row_group(i)
                if row_group.num_rows == 0:
                    continue
                ref = RowGroupRef(path, i, row_group.num_rows, _ranges(row_group, leaves))
                if all(r is not None and r[0] == r[1] for r in ref.ranges):
                    key = RunKey(*(r[0] for r in ref.ranges if r is not None))
                    index.pure.setdefault(key, []).append(ref)
                else:
                    index.mixed.append(ref)
        return index

    def row_groups(self, key: RunKey) -> list[tuple[RowGroupRef, bool]]:
        """(row group, needs filtering) for every row group that may hold ``key``'s rows,
        in file order."""
        found = [(ref, False) for ref in self.pure.get(key, [])]
        found += [(ref, True) for ref in self.mixed if ref.may_hold(key)]
        return sorted(found, key=lambda item: (item[0].path, item[0].index))

    def batches(self, key: RunKey, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """``key``'s rows, at most :data:`BATCH_ROWS` at a time, in file order."""
        for ref, needs_filter in self.row_groups(key):
            file = _open(ref.path)
            try:
                batches = file.iter_batches(
                    BATCH_ROWS, row_groups=[ref.index], columns=columns, use_threads=False
                )
                for batch in batches:
                    if needs_filter:
                        batch = batch.filter(_run_mask(batch, key))
                    if batch.num_rows:
                        yield batch
            finally:
                file.close()

    def count(self, key: RunKey) -> int:
        """How many rows ``key`` has (footers only, unless a mixed row group may hold it)."""
        total = 0
        for ref, needs_filter in self.row_groups(key):
            if not needs_filter:
                total += ref.n_rows
                continue
            file = _open(ref.path)
            try:
                part = file.read_row_group(ref.index, columns=list(RUN_COLUMNS))
            finally:
                file.close()
            total += pc.sum(_run_mask(part, key)).as_py() or 0
        return total

    def rows(self, key: RunKey) -> list[dict[str, Any]]:
        """All of ``key``'s rows as dicts (for small tables: ``evaluations``, ``runs``)."""
        return [row for batch in self.batches(key) for row in batch.to_pylist()]

    def all_rows(self, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row of the table as a dict, in file order (for the small ``runs`` table)."""
        for path in self.files:
            file = _open(path)
            try:
                for batch in file.iter_batches(BATCH_ROWS, columns=columns, use_threads=False):
                    yield from batch.to_pylist()
            finally:
                file.close()

    def keys(self) -> set[RunKey]:
        """Every run with rows in this table (reads only the identity columns)."""
        keys = set(self.pure)
        for ref in self.mixed:
            file = _open(ref.path)
            try:
                part = file.read_row_group(ref.index, columns=list(RUN_COLUMNS))
            finally:
                file.close()
            distinct = part.group_by(list(RUN_COLUMNS)).aggregate([])
            keys.update(
                RunKey(r["helm_project"], r["helm_suite"], r["helm_run"])
                for r in distinct.to_pylist()
            )
        return keys


def _open(path: Path) -> pq.ParquetFile:
    """Open one file for reading (its footer is parsed again: keeping every parsed footer
    would cost memory in proportion to the dataset)."""
    return pq.ParquetFile(path, pre_buffer=False)


def _run_mask(data: pa.RecordBatch | pa.Table, key: RunKey) -> pa.Array:
    mask = None
    for name, value in zip(RUN_COLUMNS, (key.project, key.suite, key.run), strict=True):
        equal = pc.fill_null(pc.equal(data.column(name), pa.scalar(value, pa.string())), False)
        mask = equal if mask is None else pc.and_(mask, equal)
    return mask
