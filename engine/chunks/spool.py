"""Hold a run's instance batches until the whole run has converted, then hand them to a shard.

A chunk's ``instances`` shard must never hold part of a run: a run that fails midway is a
``failed`` outcome with no rows. Most runs are one batch (``instance_rows.BATCH_BYTES`` of
estimated rows), kept in memory. A run with more batches is spooled, batch by
batch, to a file in the chunk's scratch folder while it converts; only when the batch
iterator is exhausted are the batches copied into the shard, read back one at a time. So
memory stays at about one batch whatever the run's size, and a failure while converting
leaves only the spool file, which :meth:`StagedInstances.discard` deletes (the worker's
scratch cleanup sweeps it after a crash).

The spool is an Arrow IPC file with LZ4-compressed buffers, one record batch per batch. Rows
repeat their entry's prompt and outputs once per metric, which LZ4 squeezes well (a 1,000
instance MMLU-like run: ~20 MB of rows, ~1.4 MB spooled), and reading IPC back gives the
converter's exact schema with no Parquet decoding or cast. On such runs writing and reading
back cost ~9 ms of CPU per 1,000 instances, against ~26 ms for a Parquet/LZ4 spool (and its
read-back varied up to 100 ms under memory churn). The shard receives tables equal to the
converter's, batch for batch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from helmproc.engine.chunks.shards import ShardWriter
from helmproc.engine.convert.converter import ConvertedRun
from helmproc.engine.convert.schemas import INSTANCES_SCHEMA
from helmproc.engine.durable import writing

__all__ = ["StagedInstances"]

SPOOL_COMPRESSION = "lz4"  # Arrow IPC buffer compression (LZ4 frame)
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
        path = scratch / f"instances-spool-{os.getpid()}-{next(_spool_counter)}.arrow"
        try:
            with writing(path):
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
        with pa.OSFile(str(self.spool)) as source:
            spooled = ipc.open_file(source)
            for index in range(spooled.num_record_batches):
                yield pa.Table.from_batches([spooled.get_batch(index)])

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
    """Write ``tables`` to an Arrow IPC file, one record batch each (so they read back whole)."""
    options = ipc.IpcWriteOptions(compression=SPOOL_COMPRESSION)
    with ipc.new_file(str(path), INSTANCES_SCHEMA, options=options) as writer:
        for table in tables:
            if table.num_rows:
                with writing(path):
                    writer.write_batch(table.combine_chunks().to_batches()[0])
