"""Publishers: where finished shards go. ``DirPublisher`` is the embedded default.

A publisher receives a batch of shards that already sit durably in the staging folder and
makes them part of the destination in one step (a "commit"), returning a commit id. Publishing
is idempotent: shard paths are deterministic, so publishing the same shard twice leaves one
copy. ``published_commit`` tells, after a crash, whether a batch already landed (every path
present with the journaled sha256) so resume can journal it without sending it again.
``publish`` may carry the dataset card along (``card``), so a remote destination does not spend
a commit on it; ``max_commits_per_hour`` is the destination's default commit pace (None: no
limit). ``HubPublisher`` (a Hugging Face dataset repo) lives in ``publish.hub``.

DirPublisher writes each file to a temporary name in the destination, fsyncs it, renames it
into place and fsyncs the directory, so a crash leaves either the old state or the new file,
plus ``*.tmp-<pid>`` leftovers. The first write into a folder after start sweeps that folder's
leftovers whose writing process is gone (a live process's temp file is another job's write in
flight and stays).

A destination is also read as a dataset (``list_files``, ``read_bytes``: the ledger, verify,
compaction) and changed in one step (``replace_files``: every addition durable before the
first deletion). ``lock`` keeps one writer per folder: an ``flock`` on ``.helmproc.lock``
inside it, which the kernel drops when the process dies, so a crash never leaves it locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from helmproc.engine.chunks.shards import local_shard_problem
from helmproc.engine.dataset_layout import CARD_PATH
from helmproc.engine.durable import (
    TEMP_MARK,
    fsync_dir,
    place_copy,
    remove_orphan_temp_files,
    write_bytes,
)
from helmproc.engine.errors import ConfigError, DestinationBusyError, PublishError
from helmproc.engine.facts import ShardFact

# The folder destination's writer lock (see ``DirPublisher.lock``); not part of the dataset.
LOCK_PATH = ".helmproc.lock"


@dataclass(frozen=True)
class FileEntry:
    """One file of a destination: size, and sha256 where the destination knows it cheaply
    (the Hub's LFS files), else None."""

    size: int
    sha256: str | None = None


class Publisher(Protocol):
    max_commits_per_hour: float | None

    @property
    def config(self) -> dict[str, Any]: ...

    def publish(
        self, staging: Path, shards: Sequence[ShardFact], message: str, card: str | None = None
    ) -> str:
        """Make every shard (and ``card`` as README.md, if given) part of the destination;
        return the commit id."""
        ...

    def published_commit(self, shards: Sequence[ShardFact]) -> str | None:
        """A commit id if all shards are already at the destination with their sha256."""
        ...

    def write_card(self, text: str) -> None:
        """Create or replace the dataset card."""
        ...

    def prepare(self) -> None:
        """Get the destination ready for writes (idempotent; the committer calls it at start,
        in the background, so e.g. creating a Hub repo overlaps the first chunk's work)."""
        ...

    def check_all(self, shards: Sequence[ShardFact]) -> dict[str, str | None]:
        """Path -> None if the destination holds the shard intact (size, sha256, Parquet row
        count), else what is wrong with it (``chunks.shards.shard_problem``'s words)."""
        ...

    def list_files(self, prefix: str = "") -> dict[str, FileEntry]:
        """Every file of the destination under ``prefix`` (a folder, or "" for all)."""
        ...

    def read_bytes(self, path: str) -> bytes:
        """The bytes of one file of the destination."""
        ...

    def local_path(self, path: str) -> Path | None:
        """Where a file of the destination can be read directly (a folder), else None."""
        ...

    def replace_files(
        self, add: Sequence[tuple[str, Path]], delete: Sequence[str], message: str
    ) -> str:
        """Add files (path in the destination, local file) and delete others in one step
        (the Hub: one commit; a folder: every addition durable before the first deletion)."""
        ...

    def lock(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Hold the destination for one writer (``what`` says who, in the busy message)."""
        ...


def batch_commit_id(shards: Sequence[ShardFact]) -> str:
    digest = hashlib.sha256()
    for fact in sorted(shards, key=lambda s: s.path):
        digest.update(f"{fact.path}\0{fact.sha256}\n".encode())
    return "dir-" + digest.hexdigest()[:16]


class DirPublisher:
    """A local dataset folder: ``instances/``, ``evaluations/``, ``runs/``, ``README.md``."""

    kind = "dir"
    max_commits_per_hour: float | None = None

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"destination is not a directory: {self.root}")
        self._swept: set[Path] = set()

    def _sweep(self, folder: Path) -> None:
        """Once per folder and process: remove temp files left by writers that died."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        remove_orphan_temp_files(folder)

    @property
    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": str(self.root)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DirPublisher:
        return cls(config["root"])

    def _place(self, src: Path, rel_path: str) -> None:
        final = self.root / rel_path
        final.parent.mkdir(parents=True, exist_ok=True)
        self._sweep(final.parent)
        place_copy(src, final)  # shards are immutable once written: a hard link when possible

    def publish(
        self, staging: Path, shards: Sequence[ShardFact], message: str, card: str | None = None
    ) -> str:
        dirs: set[Path] = set()
        for fact in shards:
            src = staging / fact.path
            if not src.exists():
                raise PublishError(f"staged shard is missing: {src}")
            self._place(src, fact.path)
            dirs.add((self.root / fact.path).parent)
        for d in sorted(dirs):
            fsync_dir(d)
        if card is not None:
            self.write_card(card)
        return batch_commit_id(shards)

    def published_commit(self, shards: Sequence[ShardFact]) -> str | None:
        if all(self.check(fact) is None for fact in shards):
            return batch_commit_id(shards)
        return None

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def write_card(self, text: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep(self.root)
        write_bytes(self.root / CARD_PATH, text.encode("utf-8"))

    def check(self, shard: ShardFact) -> str | None:
        return local_shard_problem(self.root, shard)

    def check_all(self, shards: Sequence[ShardFact]) -> dict[str, str | None]:
        return {fact.path: self.check(fact) for fact in shards}

    def sweep_temp(self, paths: Sequence[str]) -> None:
        """Sweep the folders of these stray ``*.tmp-<pid>`` files of writers that are gone
        (a job that recovers every chunk without writing would otherwise never sweep them)."""
        for folder in sorted({(self.root / p).parent for p in paths if TEMP_MARK in p}):
            self._sweep(folder)

    # -- the destination as a dataset (ledger, verify, compaction) ----------------------
    def list_files(self, prefix: str = "") -> dict[str, FileEntry]:
        base = self.root / prefix if prefix else self.root
        out: dict[str, FileEntry] = {}
        if not base.is_dir():
            return out
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in files:
                path = Path(folder) / name
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                out[path.relative_to(self.root).as_posix()] = FileEntry(size)
        return dict(sorted(out.items()))

    def read_bytes(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def local_path(self, path: str) -> Path | None:
        return self.root / path

    def replace_files(
        self, add: Sequence[tuple[str, Path]], delete: Sequence[str], message: str
    ) -> str:
        dirs: set[Path] = set()
        for rel, src in add:
            self._place(src, rel)
            dirs.add((self.root / rel).parent)
        for d in sorted(dirs):
            fsync_dir(d)
        gone: set[Path] = set()
        for rel in delete:
            (self.root / rel).unlink(missing_ok=True)
            gone.add((self.root / rel).parent)
        for d in sorted(gone):
            if d.exists():
                fsync_dir(d)
                _remove_empty_dirs(d, self.root)
        digest = hashlib.sha256(message.encode())
        for rel, _ in sorted(add):
            digest.update(rel.encode())
        for rel in sorted(delete):
            digest.update(b"-" + rel.encode())
        return "dir-" + digest.hexdigest()[:16]

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """An exclusive ``flock`` on ``LOCK_PATH`` inside the folder for as long as the
        context lasts (re-entrant within a process). The kernel drops it when the process
        dies, so a killed job never leaves the folder locked."""
        self.root.mkdir(parents=True, exist_ok=True)
        key = str(self.root)
        held = _HELD_LOCKS.get(key)
        if held is not None:
            _HELD_LOCKS[key] = (held[0], held[1] + 1)
            try:
                yield
            finally:
                fd, n = _HELD_LOCKS[key]
                _HELD_LOCKS[key] = (fd, n - 1)
            return
        fd = os.open(self.root / LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip()
            finally:
                os.close(fd)
            raise DestinationBusyError(
                f"{self.root} is being written by another helmproc ({owner or 'unknown'}); "
                f"one writer at a time, so this {what} stopped before writing anything"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}\n".encode(), 0)
        _HELD_LOCKS[key] = (fd, 1)
        try:
            yield
        finally:
            fd, n = _HELD_LOCKS.pop(key)
            os.close(fd)  # releases the flock


# Folder locks this process holds: root -> (fd, depth).
_HELD_LOCKS: dict[str, tuple[int, int]] = {}


def _remove_empty_dirs(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents below ``root`` while they are empty."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
