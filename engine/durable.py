"""Durable writes: how every file helmproc writes reaches its final name whole, and the one
place where a full disk becomes ``DiskFullError``.

A file is written to ``<name>.tmp-<pid>`` beside its final name (``temp_path``), fsynced,
renamed over the final name (``os.replace``), and the folder is fsynced so that the new entry
survives a power loss (``fsync_dir``; a caller that writes many files into one folder may fsync
it once at the end). A crash therefore leaves the old file or the new one, never a torn one,
plus possibly a ``*.tmp-<pid>`` leftover: ``remove_temp_files`` sweeps a private folder (the
job's staging: every leftover is ours) and ``remove_orphan_temp_files`` a folder other
processes may write to at the same time (a dataset destination, an export folder: only
leftovers of processes that are gone).

``writing(path)`` is the one disk-full seam: every write helmproc makes (shards, spools,
downloads, published and exported files) runs inside it, and ENOSPC, raised by the OS or by
Arrow's writer, becomes ``DiskFullError(path)``, which stops the job with the path instead of
failing runs one by one. Tests fill the disk through ``simulate_disk_full``, which makes
``writing`` raise ENOSPC for the paths it selects, in this process and in processes forked from
it. Shared vocabulary: imports nothing from helmproc but ``errors``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from helmproc.engine.errors import DiskFullError

TEMP_MARK = ".tmp-"

# The simulated full disk: paths for which ``writing`` raises ENOSPC (None: the real disk).
_disk_full_for: Callable[[Path], bool] | None = None


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Around every write to ``path``: ENOSPC becomes ``DiskFullError(path)``."""
    try:
        if _disk_full_for is not None and _disk_full_for(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC or "No space left" in str(exc):
            raise DiskFullError(str(path)) from None
        raise


@contextlib.contextmanager
def simulate_disk_full(when: Callable[[Path], bool]) -> Iterator[None]:
    """For tests: every ``writing(path)`` block with ``when(path)`` true fails with ENOSPC
    (in this process and in workers forked while it is active)."""
    global _disk_full_for
    previous, _disk_full_for = _disk_full_for, when
    try:
        yield
    finally:
        _disk_full_for = previous


def temp_path(final: Path) -> Path:
    """Where this process writes ``final`` before renaming it into place."""
    return final.with_name(f"{final.name}{TEMP_MARK}{os.getpid()}")


def fsync_file(path: Path) -> None:
    """fsync the file ``path`` (its data and size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync the folder ``path`` (its entries: names created, renamed or removed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(temp: Path, final: Path, *, fsync_folder: bool = True) -> None:
    """Make the complete file ``temp`` the file ``final``: fsync, rename, fsync the folder."""
    with writing(temp):
        fsync_file(temp)
    os.replace(temp, final)
    if fsync_folder:
        fsync_dir(final.parent)


def write_chunks(
    final: Path, chunks: Iterable[bytes], *, fsync_folder: bool = True
) -> tuple[str, int]:
    """Write ``chunks`` to ``final`` durably; (sha256 of the bytes, number of chunks). Nothing
    is left behind if writing fails (or ``chunks`` raises)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(final)
    digest = hashlib.sha256()
    n = 0
    try:
        with writing(temp), open(temp, "wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    if fsync_folder:
        fsync_dir(final.parent)
    return digest.hexdigest(), n


def write_bytes(final: Path, data: bytes, *, fsync_folder: bool = True) -> None:
    """Write ``data`` to ``final`` durably."""
    write_chunks(final, [data], fsync_folder=fsync_folder)


def place_copy(src: Path, final: Path) -> None:
    """Make ``final`` a durable copy of the complete, immutable file ``src``: a hard link when
    the file system allows it (no bytes copied), else a copy. The caller fsyncs ``final``'s
    folder (once for many files)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if os.path.samefile(src, final):
            return  # placed before from this very file (a resume re-publishing a chunk)
    temp = temp_path(final)
    temp.unlink(missing_ok=True)
    try:
        os.link(src, temp)
    except OSError:
        with writing(temp):
            shutil.copyfile(src, temp)
            fsync_file(temp)
    os.replace(temp, final)
    # rename() of two links of one file succeeds and does nothing (POSIX): the temp name stays
    temp.unlink(missing_ok=True)


def remove_temp_files(root: Path) -> int:
    """Delete every leftover of an interrupted write under the private folder ``root``."""
    n = 0
    if root.exists():
        for path in root.rglob(f"*{TEMP_MARK}*"):
            path.unlink(missing_ok=True)
            n += 1
    return n


def remove_orphan_temp_files(folder: Path) -> int:
    """Delete ``*.tmp-<pid>`` files directly in ``folder`` whose writing process is gone.

    For folders other jobs may write to at the same time (a dataset destination, an export
    folder): a temp file of a live process is a write in flight and stays. Returns how many.
    """
    import psutil  # only here: the CLI and the coordinator import this module at start-up

    n = 0
    for path in folder.glob(f"*{TEMP_MARK}*"):
        suffix = path.name.rsplit(TEMP_MARK, 1)[-1]
        if not suffix.isdigit() or int(suffix) == os.getpid() or psutil.pid_exists(int(suffix)):
            continue
        if path.is_file():
            path.unlink(missing_ok=True)
            n += 1
    return n
