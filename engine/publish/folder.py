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
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from helmproc.engine.chunks.shards import local_shard_problem
from helmproc.engine.dataset_layout import CARD_PATH
from helmproc.engine.durable import fsync_dir, place_copy, remove_orphan_temp_files, write_bytes
from helmproc.engine.errors import ConfigError, PublishError
from helmproc.engine.facts import ShardFact


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
