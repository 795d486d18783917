"""Graceful stop on SIGINT / SIGTERM for the coordinator.

The first signal asks the coordinator to stop admitting chunks and to let the chunks in
flight finish, be journaled and published (into a local folder; what needs the network
waits for ``resume``, below); the job then ends with ``JobInterrupted`` (exit 130). A second
signal stops at once (``KeyboardInterrupt``): workers are killed, and whatever they were
writing is a stray temp file that ``resume`` sweeps. Either way the journal only ever holds
facts that were durable, so ``helmproc resume`` completes the job.

The first signal also ends every wait on the network within 0.1 s (``engine/stop_waits.py``):
a retry's back-off, a rate-limit wait, and a request in progress that the server stalls, of
the source or the Hub, raise ``WaitInterrupted``, no new request starts, and the chunk or
commit it was for stays as journaled, for ``resume``. Workers keep converting on SIGINT (a
Ctrl-C on a terminal reaches the whole process group): only the coordinator decides when they
stop; their SIGINT only ends their network waits (``worker_sigint``).

The flag is cleared when a job's handlers are installed and when they are removed, except on
the second signal (``KeyboardInterrupt``): then the process is stopping at once, and requests
still waited for (an upload thread's) must end too.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from helmproc.engine import stop_waits
from helmproc.engine.errors import HelmprocError


class JobInterrupted(HelmprocError):
    """The job stopped early on request; everything journaled so far is kept."""


def _worker_sigint(signum: int, frame: FrameType | None) -> None:
    stop_waits.request()  # a flag only: safe in a signal handler


def worker_sigint() -> None:
    """Pool worker initializer: SIGINT ends retry waits, never the conversion itself."""
    stop_waits.clear()
    signal.signal(signal.SIGINT, _worker_sigint)


class StopRequest:
    """Installs the two-stage handlers while active (main thread only; elsewhere inert).

    The handler does no I/O: the first signal only records its name in ``requested`` (the
    coordinator's loop reads it and tells the user), the second raises ``KeyboardInterrupt``.
    """

    def __init__(self) -> None:
        self.requested: str = ""  # the first signal's name once one arrived
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt(f"second {name}")
        self.requested = name
        stop_waits.request()

    def __enter__(self) -> StopRequest:
        stop_waits.clear()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            stop_waits.clear()
