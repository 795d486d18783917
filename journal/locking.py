"""The coordinator lock: at most one process writes a journal at a time.

How it works: the coordinator takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a sidecar file
``<journal path>.lock`` and writes its pid into it. A second coordinator fails at once with
``JournalLockedError`` naming the journal and the holder's pid.

Across a crash: flock locks belong to the open file, so the kernel drops the lock when the
holder exits for any reason, including ``kill -9``. There is never a stale lock to clean up;
a leftover lock file with an old pid in it means nothing by itself (the pid in it is only
read to explain a refusal). The lock file is never deleted: deleting it would let a second
process lock a fresh inode while the first still holds the old one.

Forked children (a ``fork`` process pool) would inherit the locked file description and keep
the lock alive after the coordinator dies; an ``os.register_at_fork`` hook closes the
inherited descriptor in every child, so only the coordinator itself holds the lock.

Readonly journal opens (``helmproc status``) take no lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from helmproc.engine.errors import JournalLockedError
from helmproc.engine.safe_paths import PRIVATE_FILE_MODE, create_private_file

LOCK_SUFFIX = ".lock"

# Descriptors of locks held by this process; closed in forked children (see module doc).
_held_fds: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _held_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def lock_path_for(journal_path: Path) -> Path:
    """The sidecar lock file of a journal: ``<journal path>.lock``."""
    return journal_path.with_name(journal_path.name + LOCK_SUFFIX)


def read_holder_pid(lock_path: Path) -> int | None:
    """The pid recorded in a lock file, or None if absent or unreadable."""
    try:
        text = lock_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def live_holder(journal_path: Path) -> int | None:
    """The pid of the live process that holds the journal's lock now, or None.

    Read without touching the lock (a probe could make a starting coordinator fail): the pid
    recorded in the lock file counts only while that process is alive and has the lock file
    open, which a holder does for as long as it holds the lock; a stale pid left by a process
    that ended (or a reused pid) has not.
    """
    import psutil

    lock_path = lock_path_for(journal_path)
    pid = read_holder_pid(lock_path)
    if pid is None:
        return None
    try:
        opened = {Path(f.path) for f in psutil.Process(pid).open_files()}
    except (psutil.Error, OSError):
        return None
    return pid if lock_path.resolve() in {p.resolve() for p in opened} else None


class CoordinatorLock:
    """An exclusive, non-blocking flock on ``<journal path>.lock``, held until ``release``."""

    def __init__(self, journal_path: Path, lock_path: Path, fd: int) -> None:
        self.journal_path = journal_path
        self.lock_path = lock_path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, journal_path: Path) -> CoordinatorLock:
        """Take the lock or raise ``JournalLockedError`` naming the holder's pid."""
        lock_path = lock_path_for(journal_path)
        create_private_file(lock_path)  # 0600 whatever the umask
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_holder_pid(lock_path)
            holder = f"pid {pid}" if pid is not None else "a process whose pid is not recorded"
            raise JournalLockedError(
                f"journal {journal_path} is in use by another helmproc coordinator ({holder}); "
                f"wait for it to finish, or stop it"
                + (f" (kill {pid})" if pid is not None else "")
                + " and run the command again"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        _held_fds.add(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            _held_fds.discard(fd)
            os.close(fd)
            raise
        return cls(journal_path, lock_path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (idempotent). The lock file stays; see the module docstring."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _held_fds.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
