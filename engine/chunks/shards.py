"""Shard files: Parquet written durably, and the facts the journal keeps about them.

A shard is written to a temporary name beside its final path, flushed and fsynced, then
renamed over the final path and the directory fsynced (``durable``). A crash therefore leaves
either no shard, a complete shard, or a stray ``*.tmp-*`` file that ``durable.remove_temp_files``
sweeps up on resume; a half-written file never sits under a final name. ``shard_problem`` is
the one check of a copy of a shard against its journaled facts (staging, a destination folder,
a Hub repo all say what is wrong in the same words). Writer options are fixed so the
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from helmproc.engine.durable import replace_durably, temp_path, writing
from helmproc.engine.facts import ShardFact

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow (with numpy) is imported where it is used: the coordinator and the publishers import
# this module for its shard checks, and a job with nothing to convert never needs it (worker
# processes have it preloaded).

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
        self.temp = temp_path(self.final)
        import pyarrow.parquet as pq

        with writing(self.temp), _removed_on_error(self.temp):
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
        with writing(self.temp):
            self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.n_rows += table.num_rows

    def close(self) -> ShardFact:
        self._flush()
        with writing(self.temp):
            self._writer.close()
        replace_durably(self.temp, self.final)
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


def shard_problem(
    fact: ShardFact,
    size: int | None,
    sha256: Callable[[], str],
    rows: Callable[[], int] | None = None,
) -> str | None:
    """What is wrong with one copy of a shard, None if nothing: checked from cheapest to
    dearest, so ``sha256`` (and ``rows``, when given) are asked only if the size matches.
    ``size`` None means the copy is missing; ``rows`` may raise ``ValueError`` for a footer
    that cannot be read."""
    if size is None:
        return "missing"
    if size != fact.n_bytes:
        return f"size {size} != journaled {fact.n_bytes}"
    if sha256() != fact.sha256:
        return "sha256 differs from the journal"
    if rows is None:
        return None
    try:
        n_rows = rows()
    except ValueError as exc:
        return f"unreadable Parquet footer: {exc}"
    return None if n_rows == fact.n_rows else f"{n_rows} rows != journaled {fact.n_rows}"


def local_shard_problem(root: Path, fact: ShardFact, *, check_rows: bool = True) -> str | None:
    """``shard_problem`` of the file ``root/fact.path``."""
    path = root / fact.path
    try:
        size: int | None = path.stat().st_size
    except FileNotFoundError:
        size = None
    rows = (lambda: parquet_row_count(path)) if check_rows else None
    return shard_problem(fact, size, lambda: sha256_file(path), rows)


def shard_matches(root: Path, fact: ShardFact) -> bool:
    """True when ``root/fact.path`` exists with the journaled size and sha256."""
    return local_shard_problem(root, fact, check_rows=False) is None


def parquet_row_count(path: Path) -> int:
    """Rows of a Parquet file from its footer, without reading data pages."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
