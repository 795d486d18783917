"""Download the next run of a chunk while the current one converts.

A worker converts a chunk's runs one after another. Fetching a run from a remote source is
mostly waiting (round trips, transfer), so ``Prefetcher`` starts the next run's download on
a background thread as soon as the current run is taken (one download at a time): converting
run N overlaps fetching run N+1, and the worker's core no longer idles while the network
works. On the loopback benchmark the worker's main thread had spent ~28% of its time
waiting for downloads.

Downloads alternate between two folders (``fetch-0``, ``fetch-1``) under the chunk's scratch
folder, and a source's ``fetch`` drops an earlier download from the folder it is given, so at
most two runs sit in scratch: the one converting and the one arriving. Runs are taken in the
order given; an error of a download (``RunConversionError`` for the run, ``TransientError``
for the network) is raised when that run is taken, exactly as a direct ``fetch`` would raise
it. ``close`` waits for a download in flight (every request has a deadline), so no
thread writes into scratch after the worker removed it, unless a stop was requested (the
first Ctrl-C, ``engine/stop_waits.py``): then every download ends within 0.1 s, even one the
server stalls (its request is abandoned on a daemon thread, which writes nothing more), the
run's ``take`` raises ``WaitInterrupted``, and ``close`` does not wait; the coordinator sweeps
scratch on its next start. Nothing survives a crash but files in
the chunk's scratch folder, which the worker and the coordinator sweep.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from pathlib import Path

from helmproc.engine import stop_waits
from helmproc.engine.facts import RunRef
from helmproc.engine.sources.folder import Source

__all__ = ["Prefetcher"]

SLOTS = 2


class Prefetcher:
    """``take(ref)`` returns ``ref``'s downloaded run folder and starts the next download."""

    def __init__(
        self,
        source: Source,
        refs: Iterable[RunRef],
        scratch: Path,
        *,
        max_file_bytes: int | None = None,
    ) -> None:
        self._source = source
        self._todo = deque(refs)
        self._scratch = scratch
        self._max_file_bytes = max_file_bytes
        self._inflight: deque[tuple[RunRef, Future[Path]]] = deque()
        self._n_started = 0
        self._last: Future[Path] | None = None  # downloads run one after another
        self._threads: list[threading.Thread] = []

    def close(self) -> None:
        """Start nothing more and wait for the download in flight, if any (its result and
        errors are dropped: its run was not taken). After a stop request it does not wait:
        the download threads are daemons, so a stalled one cannot hold the worker's exit."""
        self._todo.clear()
        if stop_waits.requested():
            return
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _fetch(
        self, ref: RunRef, slot: Path, after: Future[Path] | None, out: Future[Path]
    ) -> None:
        if after is not None:
            wait_for([after])
        if not out.set_running_or_notify_cancel():
            return
        try:
            out.set_result(self._source.fetch(ref, slot, max_file_bytes=self._max_file_bytes))
        except BaseException as exc:  # raised again in ``take``
            out.set_exception(exc)

    def _start_next(self) -> None:
        if not self._todo:
            return
        ref = self._todo.popleft()
        slot = self._scratch / f"fetch-{self._n_started % SLOTS}"
        self._n_started += 1
        future: Future[Path] = Future()
        thread = threading.Thread(
            target=self._fetch,
            args=(ref, slot, self._last, future),
            name="helmproc-prefetch",
            daemon=True,
        )
        self._last = future
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        self._inflight.append((ref, future))

    def take(self, ref: RunRef) -> Path:
        """The run's folder (waiting for its download); raises what its ``fetch`` raised.

        Runs must be taken in the order given. The next run's download is started first, so
        it begins as soon as this one's is done.
        """
        if not self._inflight:
            self._start_next()
        expected, future = self._inflight.popleft()
        if expected != ref:
            raise ValueError(f"runs taken out of order: {ref.key} before {expected.key}")
        self._start_next()
        return future.result()
