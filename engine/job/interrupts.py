"""Graceful stop on SIGINT / SIGTERM for the coordinator.

The first signal asks the coordinator to stop admitting chunks and to let the chunks in
flight finish, be journaled and published; the job then ends with ``JobInterrupted`` (exit
130). A second signal stops at once (``KeyboardInterrupt``): workers are killed, and whatever
they were writing is a stray temp file that ``resume`` sweeps. Either way the journal only
ever holds facts that were durable, so ``helmproc resume`` completes the job.

Workers ignore SIGINT (a Ctrl-C on a terminal reaches the whole process group): only the
coordinator decides when they stop.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from helmproc.engine.errors import HelmprocError


class JobInterrupted(HelmprocError):
    """The job stopped early on request; everything journaled so far is kept."""


def ignore_sigint() -> None:
    """Pool worker initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
