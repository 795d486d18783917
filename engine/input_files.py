"""Opening the source's files: inside the source root, regular files only, never blocking, and
never more than ``--max-file-bytes`` read.

What is followed, and what is refused (the same rules at discovery and at conversion):

- **Links inside the source root are followed** (a run folder or a file that is a symlink to
  another place under the same root, as a mirrored or deduplicated ``benchmark_output/`` has).
  A link whose target is outside the root (``scenario.json -> /etc/passwd``, a run folder
  linked to another tree) is refused: :func:`outside_root` compares the fully resolved path
  with the resolved root, so a chain of links is judged by where it ends.
- **Only regular files are opened.** A FIFO, a character or block device (``/dev/zero``), a
  socket or a folder where a file should be is refused before it is read: the file is
  ``stat``-ed first (so opening a device never happens), then opened with ``O_NONBLOCK`` (so a
  FIFO swapped in meanwhile cannot block the worker) and ``fstat``-ed again on the open
  descriptor, which is what is read.
- **The size limit counts bytes read.** Under :func:`read_limit` (a worker sets it for its
  chunk from ``--max-file-bytes``) a file whose ``st_size`` is over the limit is refused
  unread, and a file that yields more bytes than the limit while it is read (it grew, or its
  size lied) fails as soon as the limit is passed.

Every refusal is a ``RunConversionError`` naming the file, so it fails that run only. Nothing
here keeps state beyond the open descriptor, so a crash loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from helmproc.engine.errors import RunConversionError

_LIMIT: ContextVar[int | None] = ContextVar("helmproc_max_file_bytes", default=None)
# A whole-file read past st_size asks for this much more at a time (a file that grew).
_TAIL_BYTES = 1 << 20


def file_too_large(limit: int, size: int | None = None) -> str:
    """The reason of a run whose input file is over ``--max-file-bytes``."""
    got = f"{size} bytes" if size is not None else "download stopped"
    return f"larger than --max-file-bytes ({got} > {limit})"


@contextlib.contextmanager
def read_limit(max_bytes: int | None) -> Iterator[None]:
    """Within the block, :func:`open_input` reads at most ``max_bytes`` per file (None: any)."""
    token = _LIMIT.set(max_bytes)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def outside_root(path: Path, root: Path) -> bool:
    """True when ``path``, all links followed, is not ``root`` (resolved) or under it."""
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a link loop: treat as leaving
        return True
    return not target.is_relative_to(root.resolve())


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, what in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _refuse_irregular(name: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise RunConversionError(name, f"{file_kind(mode)}, not a regular file: not read")


def check_regular(path: Path) -> int:
    """``path``'s size; refuses (``RunConversionError``) a file that is not regular, without
    opening it. ``FileNotFoundError`` passes through (callers decide what missing means)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RunConversionError(path.name, f"unreadable: {exc.strerror or exc}") from None
    _refuse_irregular(path.name, st.st_mode)
    return st.st_size


class InputFile:
    """A regular input file open for reading, counting what is read against the limit."""

    def __init__(self, fd: int, name: str, size: int, limit: int | None) -> None:
        self._file = os.fdopen(fd, "rb", buffering=0)
        self.name = name
        self.size = size
        self._limit = limit
        self._read = 0

    def _count(self, n: int) -> None:
        self._read += n
        if self._limit is not None and self._read > self._limit:
            reason = f"more than {self._limit} bytes read, {self.size} declared"
            raise RunConversionError(self.name, f"larger than --max-file-bytes ({reason})")

    def _allowance(self, want: int) -> int:
        if self._limit is None:
            return want
        return min(want, self._limit - self._read + 1)  # one byte more shows the overflow

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            want = max(self.size - self._read, 0) + 1
            while block := self.read(want):
                parts.append(block)
                want = _TAIL_BYTES
            return b"".join(parts)
        data = self._file.read(self._allowance(n)) or b""
        self._count(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        got = self._file.readinto(view[: self._allowance(len(view))]) or 0
        self._count(got)
        return got

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_input(path: Path) -> InputFile:
    """Open the input file ``path`` (see the module docstring). Missing, unreadable, not a
    regular file or over the limit: ``RunConversionError`` naming the file."""
    name = path.name
    try:
        size = check_regular(path)
    except FileNotFoundError:
        raise RunConversionError(name, "missing") from None
    limit = _LIMIT.get()
    if limit is not None and size > limit:
        raise RunConversionError(name, file_too_large(limit, size))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RunConversionError(name, "missing") from None
    except OSError as exc:
        raise RunConversionError(name, f"unreadable: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)  # what is open now, whatever the path named a moment ago
        _refuse_irregular(name, st.st_mode)
        os.set_blocking(fd, True)
        return InputFile(fd, name, st.st_size, limit)
    except BaseException:
        os.close(fd)
        raise


def read_input(path: Path) -> bytes:
    """The whole input file ``path`` (see :func:`open_input`)."""
    with open_input(path) as fh:
        return fh.read()


__all__ = [
    "InputFile",
    "check_regular",
    "file_too_large",
    "open_input",
    "outside_root",
    "read_input",
    "read_limit",
]
