"""Shard files: Parquet written durably, and the facts the journal keeps about them.

A shard is written to a temporary name beside its final path, flushed and fsynced, then
renamed over the final path and the directory fsynced. A crash therefore leaves either no
shard, a complete shard, or a stray ``*.tmp-*`` file that ``remove_temp_files`` sweeps up on
resume; a half-written file never sits under a final name. Writer options are fixed so the
same rows always produce the same bytes (sha256 equality is how resume and publishers detect
work already done).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from helmproc.engine.errors import DiskFullError
from helmproc.journal.store import ShardFact

COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
ROW_GROUP_ROWS = 64 * 1024
HASH_BLOCK_BYTES = 1 << 20
TEMP_MARK = ".tmp-"


@contextlib.contextmanager
def disk_full_as_error(path: Path) -> Iterator[None]:
    """Turn ENOSPC (raised by the OS or by Arrow's writer) into ``DiskFullError(path)``."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space left" in str(exc):
            raise DiskFullError(str(path)) from None
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Streams tables of one schema into one Parquet file; ``close`` makes it durable."""

    def __init__(self, root: Path, rel_path: str, table: str, schema: pa.Schema) -> None:
        self.root = root
        self.rel_path = rel_path
        self.table = table
        self.final = root / rel_path
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.temp = self.final.with_name(f"{self.final.name}{TEMP_MARK}{os.getpid()}")
        with disk_full_as_error(self.temp):
            self._writer = pq.ParquetWriter(
                self.temp,
                schema,
                compression=COMPRESSION,
                compression_level=COMPRESSION_LEVEL,
            )
        self.n_rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            with disk_full_as_error(self.temp):
                self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            self.n_rows += table.num_rows

    def close(self) -> ShardFact:
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
        try:
            self._writer.close()
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
    return pq.ParquetFile(path).metadata.num_rows


def remove_temp_files(root: Path) -> int:
    """Delete leftovers of interrupted writes under ``root``; returns how many."""
    n = 0
    if root.exists():
        for path in root.rglob(f"*{TEMP_MARK}*"):
            path.unlink(missing_ok=True)
            n += 1
    return n
