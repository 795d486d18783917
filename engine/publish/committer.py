"""The committer: a background thread that publishes processed chunks while workers go on.

The coordinator hands it (chunk id, shards) pairs through a bounded queue; it groups whatever
is waiting (up to ``max_files`` shard files) into one ``Publisher.publish`` call, and reports
``(chunk ids, commit id)`` or ``(chunk ids, error)`` back through a second queue. It never
touches the journal: the coordinator journals ``uploaded`` only after reading the report, so a
crash between commit and journal is the window that ``Publisher.published_commit`` repairs on
resume.

Pacing: a ``CommitPacer`` (token bucket) decides when the next commit may start; while it
waits, the batch keeps filling up to ``max_files``, so a slow pace makes bigger commits. The
first commit goes out as soon as the first chunk arrives. ``workers`` commits may run at once
(``--upload-workers``; default 1). The dataset card rides along: ``submit_card`` keeps the
latest text, which goes into the next shard commit, or into a commit of its own when submitted
with ``alone=True`` (the final card). Nothing here survives a crash except what was committed.
After a stop request (``engine/stop_waits.py``) no commit waits for the pace: the batch is
reported ``WaitInterrupted`` (its chunks stay ``processed``; ``resume`` publishes them).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from helmproc.engine import stop_waits
from helmproc.engine.errors import WaitInterrupted
from helmproc.engine.facts import ShardFact
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.pacer import CommitPacer

QUEUE_CHUNKS = 64
POLL_S = 0.1
ABANDON_JOIN_S = 60.0


@dataclass(frozen=True)
class PublishReport:
    chunk_ids: tuple[int, ...]
    commit_id: str | None
    error: BaseException | None
    with_card: bool = False


class Committer:
    def __init__(
        self,
        publisher: Publisher,
        staging: Path,
        max_files: int = 50,
        *,
        workers: int = 1,
        pacer: CommitPacer | None = None,
    ) -> None:
        self.publisher = publisher
        self.staging = staging
        self.max_files = max(1, max_files)
        self.workers = max(1, workers)
        self.pacer = pacer or CommitPacer(None)
        self._todo: queue.Queue[tuple[int, tuple[ShardFact, ...]] | None] = queue.Queue(
            maxsize=QUEUE_CHUNKS
        )
        self._done: queue.Queue[PublishReport] = queue.Queue()
        self.pending = 0
        self.commits = 0  # publish/write_card calls started (for reports and tests)
        self._card: str | None = None
        self._card_alone = False
        self._card_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._slots = threading.Semaphore(self.workers)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="helmproc-upload")
        self._thread = threading.Thread(target=self._loop, name="helmproc-committer", daemon=True)
        self._thread.start()

    def submit(self, chunk_id: int, shards: Sequence[ShardFact]) -> None:
        self.pending += 1
        self._todo.put((chunk_id, tuple(shards)))

    def submit_card(self, text: str, alone: bool = False) -> None:
        """Publish this dataset card with the next commit (or by itself when ``alone``)."""
        with self._card_lock:
            self._card = text
            self._card_alone = self._card_alone or alone

    def _lone_card(self) -> bool:
        with self._card_lock:
            return self._card is not None and self._card_alone

    def _take_card(self) -> str | None:
        with self._card_lock:
            card, self._card, self._card_alone = self._card, None, False
        return card

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

    def close(self, drain: bool = False) -> None:
        """Stop the committer. ``drain`` first publishes everything submitted (paced);
        otherwise what has not started is dropped (it stays ``processed`` in the journal)."""
        if self._closed:
            return
        self._closed = True
        if not drain:
            self._stop.set()
        try:
            self._todo.put(None, timeout=0 if not drain else None)
        except queue.Full:
            pass
        self._thread.join(timeout=None if drain else ABANDON_JOIN_S)
        self._pool.shutdown(wait=drain, cancel_futures=not drain)

    def _loop(self) -> None:
        try:  # e.g. create the Hub repo while the first chunk is still converting
            self.publisher.prepare()
        except BaseException as exc:  # the coordinator stops the job on this report
            self._done.put(PublishReport((), None, exc))
        batch: list[tuple[int, tuple[ShardFact, ...]]] = []
        n_files = 0
        closing = False
        while not self._stop.is_set():
            block = not batch and not closing and not self._lone_card()
            while n_files < self.max_files and not closing:
                try:
                    item = self._todo.get(timeout=POLL_S) if block else self._todo.get_nowait()
                except queue.Empty:
                    break
                block = False
                if item is None:
                    closing = True
                    break
                batch.append(item)
                n_files += len(item[1])
            if not batch and not self._lone_card():
                if closing:
                    break
                continue
            wait = self.pacer.wait_s()
            if wait > 0 and stop_waits.requested():  # no commit starts after a stop request:
                ids = tuple(cid for cid, _ in batch)  # these stay `processed`, for resume
                self._take_card()
                self._done.put(PublishReport(ids, None, WaitInterrupted("commit: stopped")))
                batch, n_files = [], 0
                continue
            if wait > 0:  # keep gathering while the pace holds the next commit back
                self._stop.wait(min(wait, POLL_S))
                continue
            if not self._slots.acquire(timeout=POLL_S):
                continue
            self.pacer.take()
            self.commits += 1
            self._pool.submit(self._publish, tuple(batch), self._take_card())
            batch, n_files = [], 0
        # wait for the commits already started (drain) before the pool is shut down
        for _ in range(self.workers):
            self._slots.acquire()

    def _publish(
        self, batch: tuple[tuple[int, tuple[ShardFact, ...]], ...], card: str | None
    ) -> None:
        ids = tuple(cid for cid, _ in batch)
        shards = [fact for _, facts in batch for fact in facts]
        try:
            if shards:
                message = (
                    f"helmproc: add {len(ids)} chunk(s) {min(ids)}..{max(ids)} "
                    f"({len(shards)} shards)"
                )
                commit_id: str | None = self.publisher.publish(
                    self.staging, shards, message, card=card
                )
            else:
                if card is not None:
                    self.publisher.write_card(card)
                commit_id = None
        except BaseException as exc:  # reported to the coordinator, which decides
            self._done.put(PublishReport(ids, None, exc, card is not None))
        else:
            self._done.put(PublishReport(ids, commit_id, None, card is not None))
        finally:
            self._slots.release()
