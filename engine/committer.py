"""The committer: a background thread that publishes processed chunks while workers go on.

The coordinator hands it (chunk id, shards) pairs through a bounded queue; it groups whatever
is waiting (up to ``max_files`` shard files) into one ``Publisher.publish`` call, and reports
``(chunk ids, commit id)`` or ``(chunk ids, error)`` back through a second queue. It never
touches the journal: the coordinator journals ``uploaded`` only after reading the report, so a
crash between commit and journal is the window that ``Publisher.published_commit`` repairs on
resume.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helmproc.engine.publishers import Publisher
from helmproc.journal.store import ShardFact

QUEUE_CHUNKS = 64


@dataclass(frozen=True)
class PublishReport:
    chunk_ids: tuple[int, ...]
    commit_id: str | None
    error: BaseException | None


class Committer:
    def __init__(self, publisher: Publisher, staging: Path, max_files: int = 50) -> None:
        self.publisher = publisher
        self.staging = staging
        self.max_files = max(1, max_files)
        self._todo: queue.Queue[tuple[int, tuple[ShardFact, ...]] | None] = queue.Queue(
            maxsize=QUEUE_CHUNKS
        )
        self._done: queue.Queue[PublishReport] = queue.Queue()
        self.pending = 0
        self._thread = threading.Thread(target=self._loop, name="helmproc-committer", daemon=True)
        self._thread.start()

    def submit(self, chunk_id: int, shards: Sequence[ShardFact]) -> None:
        self.pending += 1
        self._todo.put((chunk_id, tuple(shards)))

    def reports(self, timeout: float) -> list[PublishReport]:
        """Reports that arrived, waiting up to ``timeout`` seconds for the first one."""
        out: list[PublishReport] = []
        try:
            out.append(self._done.get(timeout=timeout) if timeout > 0 else self._done.get_nowait())
            while True:
                out.append(self._done.get_nowait())
        except queue.Empty:
            pass
        self.pending -= sum(len(r.chunk_ids) for r in out)
        return out

    def close(self) -> None:
        self._todo.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            batch = [item]
            n_files = len(item[1])
            while n_files < self.max_files:
                try:
                    nxt = self._todo.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._todo.put(None)
                    break
                batch.append(nxt)
                n_files += len(nxt[1])
            ids = tuple(cid for cid, _ in batch)
            shards = [fact for _, facts in batch for fact in facts]
            message = f"helmproc: add chunks {ids[0]}..{ids[-1]} ({len(shards)} shards)"
            try:
                commit_id = self.publisher.publish(self.staging, shards, message)
            except BaseException as exc:  # reported to the coordinator, which decides
                self._done.put(PublishReport(ids, None, exc))
            else:
                self._done.put(PublishReport(ids, commit_id, None))
