"""One process-wide "stop waiting" flag: every wait on the network ends on a stop request.

The coordinator sets it on the first Ctrl-C/SIGTERM (``request``); a pool worker sets it on its
own SIGINT (a terminal's Ctrl-C reaches the whole process group); before the coordinator runs
(planning: discovery, the release index, the destination's ledger), ``sigint_stops_waits``
makes Ctrl-C set it too, besides raising ``KeyboardInterrupt`` as Python's default handler does.
Each handler only sets the flag (and may raise): no I/O, no lock.

Three kinds of waits read it:

- ``pause``: retry back-offs and rate-limit waits (HTTP source, Hub) return early and raise
  ``WaitInterrupted`` within ``POLL_S``;
- ``check``: raises it before another attempt starts;
- ``call``: every request on the network (the HTTP source's GETs, the Hub client's calls) runs
  through it: on a daemon thread of its own, waited for in ``POLL_S`` slices. A stop request
  raises ``WaitInterrupted`` in the waiting caller within ``POLL_S`` even when the server
  stalls (connection open, no byte), instead of after the read timeout. The request's thread
  is abandoned, not killed: it ends at its next byte (the HTTP client checks the flag per
  block and writes nothing more) or at its read timeout, and being a daemon it never holds up
  the process's exit (a ``ThreadPoolExecutor`` thread would: Python joins those at exit).

Across a crash or an interrupt: the flag lives in memory only; after a crash or on ``resume``
it starts cleared. A request abandoned on a stop may still reach the server (a Hub commit may
land): that is the window every crash has, and ``resume`` repairs it (the publisher compares
the destination with the journal before sending again); a download abandoned mid-body leaves
at most a ``.part`` file in scratch, which the worker and the coordinator sweep.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from helmproc.engine.errors import WaitInterrupted

T = TypeVar("T")

# A plain flag, not a threading.Event: signal handlers set it, and a handler that took the
# Event's lock while the interrupted code held it would deadlock. Waits poll it.
POLL_S = 0.1
_stopped = False


def request() -> None:
    global _stopped
    _stopped = True


def clear() -> None:
    global _stopped
    _stopped = False


def requested() -> bool:
    return _stopped


def check(what: str) -> None:
    if _stopped:
        raise WaitInterrupted(f"{what}: stopped on request")


def pause(seconds: float, what: str) -> None:
    """Sleep ``seconds`` unless a stop is requested first (then ``WaitInterrupted`` within
    ``POLL_S``)."""
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        check(what)
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(POLL_S, left))


def call(request_once: Callable[[], T], what: str) -> T:
    """What ``request_once()`` returns (or raises), computed on a daemon thread; a stop
    request before or during it raises ``WaitInterrupted`` within ``POLL_S`` instead, leaving
    the thread to end by itself (see the module docstring). The one way helmproc waits for a
    request on the network."""
    check(what)
    done = threading.Event()
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            outcome.append((True, request_once()))
        except BaseException as exc:  # raised again in the caller's thread
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="helmproc-request", daemon=True).start()
    while not done.wait(POLL_S):
        check(what)
    ok, value = outcome.pop()
    if ok:
        return value  # type: ignore[return-value]
    assert isinstance(value, BaseException)
    try:
        raise value
    finally:
        del value  # no cycle through this frame's traceback


def _sigint_stops_waits(signum: int, frame: FrameType | None) -> None:
    request()  # a flag, then what Python's default handler does
    raise KeyboardInterrupt


def sigint_stops_waits() -> None:
    """Ctrl-C (outside the coordinator, which installs its own handler while it runs) sets the
    flag and raises ``KeyboardInterrupt``: the main thread stops as before, and requests that
    other threads wait for (a ledger read in parallel, run specs) end within ``POLL_S`` instead
    of holding the exit until their read timeout. Main thread only (elsewhere inert)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _sigint_stops_waits)
