"""Shard files: Parquet written durably, and the facts the journal keeps about them.

A shard is written to a temporary name beside its final path, flushed and fsynced, then
renamed over the final path and the directory fsynced. A crash therefore leaves either no
shard, a complete shard, or a stray ``*.tmp-*`` file that ``remove_temp_files`` sweeps up on
resume; a half-written file never sits under a final name. Writer options are fixed so the
same rows always produce the same bytes (sha256 equality is how resume and publishers detect
work already done).

Each ``write_table`` call starts a new Parquet row group, and a row group has a fixed cost per
leaf column (46 in ``evaluations``), so a writer given ``coalesce_bytes`` buffers tables until
they add up to that many Arrow bytes and writes them in one call: a chunk of small runs then
costs a few row groups instead of one per run and table (30 MMLU-like runs of 100 instances:
writing them run by run cost twice the CPU of one write for ``instances``, ten times for
``evaluations``). Buffer boundaries depend on the tables only, so the bytes stay deterministic.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from helmproc.engine.durable import fsync_dir
from helmproc.engine.errors import disk_full_as_error
from helmproc.engine.facts import ShardFact

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow (with numpy) and psutil are imported where they are used: the coordinator and the
# publishers import this module for its file helpers, and a job with nothing to convert never
# needs them (worker processes have them preloaded).

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
ROW_GROUP_ROWS = 64 * 1024
# Parquet's default (1 MiB) dictionary page limit is reached after ~400 few-shot prompts, and
# the column chunk then falls back to plain encoding: every row's copy of its prompt is
# written and compressed. 16 MiB keeps a row group's prompts in the dictionary: on MMLU-like
# runs writing costs ~15% less CPU and shards are ~17% smaller (bench/run_bench.py corpus).
DICTIONARY_PAGE_BYTES = 16 << 20
HASH_BLOCK_BYTES = 1 << 20
# Columns of free text (prompts, outputs, hashes, key/value lists) get no min/max statistics:
# nobody filters on them, Parquet truncates such values anyway, and computing them was ~10%
# of writing an instances shard. Every other column keeps its statistics for readers' pruning.
NO_STATISTICS = ("input", "output", "messages", "error", "sample_hash", "metadata",
                 "performance.additional_details")
TEMP_MARK = ".tmp-"


@functools.lru_cache(maxsize=16)
def statistics_columns(schema: pa.Schema) -> list[str]:
    """The schema's Parquet leaf column paths that get statistics (all but ``NO_STATISTICS``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), buffer)
    leaves = pq.ParquetFile(pa.BufferReader(buffer.getvalue())).schema
    paths = [leaves.column(i).path for i in range(len(leaves))]
    return [
        path for path in paths
        if not any(path == top or path.startswith(top + ".") for top in NO_STATISTICS)
    ]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _removed_on_error(path: Path) -> Iterator[None]:
    """Remove ``path`` if the block fails (a writer that could not even start, e.g. on a full
    disk, leaves no temp file: nobody would hold it to abort)."""
    try:
        yield
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class ShardWriter:
    """Streams tables of one schema into one Parquet file; ``close`` makes it durable."""

    def __init__(
        self, root: Path, rel_path: str, table: str, schema: pa.Schema, coalesce_bytes: int = 0
    ) -> None:
        self.root = root
        self.rel_path = rel_path
        self.table = table
        self.final = root / rel_path
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.temp = self.final.with_name(f"{self.final.name}{TEMP_MARK}{os.getpid()}")
        import pyarrow.parquet as pq

        with disk_full_as_error(self.temp), _removed_on_error(self.temp):
            self._writer = pq.ParquetWriter(
                self.temp,
                schema,
                compression=COMPRESSION,
                compression_level=COMPRESSION_LEVEL,
                dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES,
                write_statistics=statistics_columns(schema),
            )
        self.n_rows = 0
        self.coalesce_bytes = coalesce_bytes
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self.coalesce_bytes <= 0:
            self._write(table)
            return
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= self.coalesce_bytes:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            import pyarrow as pa

            pending, self._pending, self._pending_bytes = self._pending, [], 0
            self._write(pending[0] if len(pending) == 1 else pa.concat_tables(pending))

    def _write(self, table: pa.Table) -> None:
        with disk_full_as_error(self.temp):
            self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.n_rows += table.num_rows

    def close(self) -> ShardFact:
        self._flush()
        with disk_full_as_error(self.temp):
            self._writer.close()
            with open(self.temp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(self.temp, self.final)
        fsync_dir(self.final.parent)
        return ShardFact(
            table=self.table,
            path=self.rel_path,
            n_rows=self.n_rows,
            n_bytes=self.final.stat().st_size,
            sha256=sha256_file(self.final),
        )

    def abort(self) -> None:
        """Drop the shard: its temp file is removed even when closing the writer fails (a
        full disk fails the close too; raising here would leave the other tables' temp files
        of the chunk behind)."""
        self._pending = []
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001, S110 - the shard is being dropped either way
            pass
        finally:
            self.temp.unlink(missing_ok=True)


def write_bytes_durably(root: Path, rel_path: str, data: bytes) -> None:
    """Write ``data`` to ``root/rel_path`` the same durable way shards are written."""
    final = root / rel_path
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f"{final.name}{TEMP_MARK}{os.getpid()}")
    with disk_full_as_error(temp):
        with open(temp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(temp, final)
    fsync_dir(final.parent)


def shard_matches(root: Path, fact: ShardFact) -> bool:
    """True when ``root/fact.path`` exists with the journaled size and sha256."""
    path = root / fact.path
    try:
        if path.stat().st_size != fact.n_bytes:
            return False
    except FileNotFoundError:
        return False
    return sha256_file(path) == fact.sha256


def parquet_row_count(path: Path) -> int:
    """Rows of a Parquet file from its footer, without reading data pages."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def remove_orphan_temp_files(folder: Path) -> int:
    """Delete ``*.tmp-<pid>`` files directly in ``folder`` whose writing process is gone.

    For folders other jobs may write to at the same time (a dataset destination, an export
    folder): a temp file of a live process is a write in flight and stays. Returns how many.
    """
    import psutil

    n = 0
    for path in folder.glob(f"*{TEMP_MARK}*"):
        suffix = path.name.rsplit(TEMP_MARK, 1)[-1]
        if not suffix.isdigit() or int(suffix) == os.getpid() or psutil.pid_exists(int(suffix)):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            n += 1
    return n


def remove_temp_files(root: Path) -> int:
    """Delete leftovers of interrupted writes under ``root``; returns how many."""
    n = 0
    if root.exists():
        for path in root.rglob(f"*{TEMP_MARK}*"):
            path.unlink(missing_ok=True)
            n += 1
    return n
