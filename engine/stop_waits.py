"""One process-wide "stop waiting" flag: retry and rate-limit waits end on a stop request.

The coordinator sets it on the first Ctrl-C/SIGTERM (``request``); a pool worker sets it on its
own SIGINT (a terminal's Ctrl-C reaches the whole process group). Retry back-offs and rate-limit
waits of the HTTP source and of the Hub publisher sleep through ``pause``, which returns early
and raises ``WaitInterrupted`` once the flag is set; ``check`` raises it before another attempt.
A read already in progress is not cut: it ends with its data or at its read timeout (60 s for
the HTTP source), and then no further attempt starts. The flag lives in memory only: after a
crash or on ``resume`` it starts cleared.
"""

from __future__ import annotations

import time

from helmproc.engine.errors import WaitInterrupted

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
