"""Hold a run's instance batches until the whole run has converted, then hand them to a shard.

A chunk's ``instances`` shard must never hold part of a run: a run that fails midway is a
``failed`` outcome with no rows. Most runs are one batch (``instance_rows.BATCH_BYTES`` of
estimated rows), kept in memory as before. A run with more batches is spooled, batch by
batch, to a Parquet file in the chunk's scratch folder while it converts (one row group per
batch); only when the batch iterator is exhausted are the batches copied into the shard, read
back one row group at a time. So memory stays at about one batch whatever the run's size, and
a failure while converting leaves only the spool file, which :meth:`StagedInstances.discard`
deletes (the worker's scratch cleanup sweeps it after a crash).

Parquet (lz4) rather than Arrow IPC for the spool: rows repeat their entry's prompt and outputs
once per metric, and Parquet's dictionary encoding stores each once; on generated batches
writing and reading back cost about a third of IPC with zstd. The shard receives tables equal
to the converter's, batch for batch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from helmproc.engine.convert import ConvertedRun
from helmproc.engine.shards import ShardWriter
from helmproc.engine.tables import INSTANCES_SCHEMA

__all__ = ["StagedInstances"]

SPOOL_COMPRESSION = "lz4"
_spool_counter = itertools.count()


class StagedInstances:
    """The instance tables of one fully converted run: in memory, or in a spool file."""

    def __init__(self, tables: list[pa.Table], spool: Path | None = None) -> None:
        self.tables = tables
        self.spool = spool

    @classmethod
    def stage(cls, converted: ConvertedRun, scratch: Path) -> StagedInstances:
        """Run ``converted``'s batch iterator to the end (errors propagate, leaving nothing)."""
        batches = converted.instance_batches()
        first = next(batches, None)
        if first is None:
            return cls([])
        second = next(batches, None)
        if second is None:
            return cls([first])
        head = [first, second]  # the only references, so each is freed once written
        del first, second
        scratch.mkdir(parents=True, exist_ok=True)
        path = scratch / f"instances-spool-{os.getpid()}-{next(_spool_counter)}.parquet"
        try:
            _spool(path, _drain(head, batches))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return cls([], path)

    def tables_in_order(self) -> Iterator[pa.Table]:
        """The run's tables as the converter produced them (read back one at a time)."""
        yield from self.tables
        if self.spool is None:
            return
        spooled = pq.ParquetFile(self.spool)
        try:
            for group in range(spooled.num_row_groups):
                yield spooled.read_row_group(group).cast(INSTANCES_SCHEMA)
        finally:
            spooled.close()

    def write_to(self, writer: ShardWriter) -> None:
        for table in self.tables_in_order():
            writer.write(table)

    def discard(self) -> None:
        """Drop what is held (the spool file too). Safe to call twice."""
        self.tables = []
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
            self.spool = None


def _drain(head: list[pa.Table], rest: Iterator[pa.Table]) -> Iterator[pa.Table]:
    while head:
        yield head.pop(0)
    yield from rest


def _spool(path: Path, tables: Iterator[pa.Table]) -> None:
    """Write ``tables`` to a Parquet file, one row group each."""
    with pq.ParquetWriter(path, INSTANCES_SCHEMA, compression=SPOOL_COMPRESSION) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=max(1, table.num_rows))
