"""One process-wide "stop waiting" flag: network waits end within a moment of a stop request.

The coordinator sets it on the first Ctrl-C/SIGTERM (``request``); a pool worker sets it on its
own SIGINT (a terminal's Ctrl-C reaches the whole process group). Retry back-offs and rate-limit
waits of the HTTP source and of the Hub publisher sleep through ``pause``, which returns early
and raises ``WaitInterrupted`` once the flag is set; ``check`` raises it before another attempt.
A worker's main thread marks where it waits on the network (``network_call``): a SIGINT that
arrives there (``interrupt_network_call``, the worker's handler) raises ``WaitInterrupted`` at
once instead of waiting for the download. The flag lives in memory only: after a crash or on
``resume`` it starts cleared.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from helmproc.engine.errors import WaitInterrupted

# A plain flag, not a threading.Event: signal handlers set it, and a handler that took the
# Event's lock while the interrupted code held it would deadlock. Waits poll it.
POLL_S = 0.1
_stopped = False
_main_thread_calls = 0  # network calls the main thread is inside (signal handlers run there)


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


@contextlib.contextmanager
def network_call() -> Iterator[None]:
    """Mark a wait on the network in this thread (only the main thread's marks count)."""
    global _main_thread_calls
    main = threading.current_thread() is threading.main_thread()
    if main:
        _main_thread_calls += 1
    try:
        yield
    finally:
        if main:
            _main_thread_calls -= 1


def interrupt_network_call(what: str = "network wait") -> None:
    """For a signal handler: request the stop, and end the main thread's network wait now."""
    request()
    if _main_thread_calls:
        raise WaitInterrupted(f"{what}: stopped on request")
