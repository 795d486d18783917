"""How HubPublisher reads failures of the Hugging Face Hub, and how long it waits before a retry.

``classify`` turns whatever huggingface_hub raised (an ``HfHubHTTPError`` with its response, an
httpx2 transport error, or either wrapped by the client in a ``RuntimeError``) into a
``Failure``: rate limited (with the wait the Hub asked for), stale parent (412), server error
or lost connection (both *ambiguous*: the commit may have landed), auth, not found, or
terminal. ``RetryPolicy`` holds the budgets and the ``sleep`` function, injectable so tests run
the waits instantly; by default a wait ends early on a stop request (``engine/stop_waits.py``)
and each retry prints one line (``notify``). A host never reached (name not resolved,
connection refused) is ``UNREACHABLE``: not retried. ``scrub`` removes the token (and anything
shaped like one) from text before it goes into an exception, a log line or the journal.

Nothing here keeps state across a crash: a retry loop interrupted mid-wait simply starts over
on ``resume``, and the publisher checks the remote before sending a commit again.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from helmproc.engine import stop_waits
from helmproc.engine.errors import PublishError, TransientError, never_connected
from helmproc.engine.retry import Backoff, parse_retry_after
from helmproc.engine.sources.http_client import say_retry

DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_BASE_DELAY_S = 2.0
DEFAULT_MAX_DELAY_S = 120.0
# The Hub's hourly commit quota ("128 per hour") may come back without a reset header:
# look again after this long rather than after a full hour.
DEFAULT_QUOTA_WAIT_S = 600.0
# Total time spent waiting out rate limits in one operation before giving up (resume retries).
DEFAULT_MAX_RATE_WAIT_S = 3 * 3600.0
RATE_LIMIT_MARGIN_S = 1.0

TOKEN_SHAPES = re.compile(r"(hf_[A-Za-z0-9_]{8,}|(?i:bearer)\s+[^\s'\"]+)")
QUOTA_WORDS = re.compile(r"per hour|hourly|quota", re.IGNORECASE)


class HubAuthError(PublishError):
    """The Hub refused our credentials (missing token, 401, 403)."""


class HubTokenMissingError(HubAuthError):
    """No token to write with: found before the Hub was contacted."""


class HubUnavailableError(TransientError):
    """The Hub kept failing (5xx, connection errors, rate limits) past the retry budget."""


class HubRequestError(PublishError):
    """The Hub refused a request for a reason a retry will not fix (4xx, malformed reply)."""


class FailureKind(enum.Enum):
    RATE_LIMITED = "rate limited"
    STALE_PARENT = "stale parent commit"
    SERVER = "server error"
    NETWORK = "connection error"
    UNREACHABLE = "cannot reach the Hub"
    AUTH = "not authorized"
    NOT_FOUND = "not found"
    TERMINAL = "refused"


AMBIGUOUS = frozenset({FailureKind.SERVER, FailureKind.NETWORK})
RETRYABLE = frozenset({FailureKind.RATE_LIMITED, *AMBIGUOUS})


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    status: int | None
    wait_s: float | None  # what the Hub asked us to wait, if it said
    detail: str

    @property
    def ambiguous(self) -> bool:
        """The request may have been applied even though we saw an error."""
        return self.kind in AMBIGUOUS


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    quota_wait_s: float = DEFAULT_QUOTA_WAIT_S
    max_rate_wait_s: float = DEFAULT_MAX_RATE_WAIT_S
    sleep: Callable[[float], None] | None = field(default=None, compare=False, repr=False)
    notify: Callable[[str], None] = field(default=say_retry, compare=False, repr=False)
    # ``retry.Backoff``'s share of each delay (full jitter); tests pin it to see the ceilings
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def wait(self, seconds: float, why: str) -> None:
        """Say why and how long, then wait (``sleep``, else until a stop request)."""
        self.notify(f"{why}; retrying in {seconds:.1f} s")
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            stop_waits.pause(seconds, why)

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.base_delay_s, self.max_delay_s, self.jitter)

    def backoff_s(self, failures: int) -> float:
        """The delay after the ``failures``-th consecutive failure (1-based)."""
        return self.backoff.delay_s(failures)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    return parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))


def rate_limit_wait_s(headers: Mapping[str, str], message: str, policy: RetryPolicy) -> float:
    """Seconds to wait after a 429: Retry-After, else the RateLimit reset, else a quota guess."""
    from huggingface_hub.utils import parse_ratelimit_headers

    asked = _retry_after_s(headers)
    if asked is None:
        info = parse_ratelimit_headers(headers)
        if info is not None:
            asked = float(info.reset_in_seconds)
    if asked is None:
        return policy.quota_wait_s if QUOTA_WORDS.search(message) else policy.backoff_s(1)
    return asked + RATE_LIMIT_MARGIN_S


def classify(exc: BaseException, policy: RetryPolicy) -> Failure:
    """What kind of failure ``exc`` is (looking through the client's wrapping exceptions)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    for err in _chain(exc):
        if isinstance(err, OfflineModeIsEnabled):
            return Failure(FailureKind.TERMINAL, None, None, "HF_HUB_OFFLINE is set")
        if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
            status = err.response.status_code
            detail = str(err)
            if status == 429:
                wait = rate_limit_wait_s(err.response.headers, detail, policy)
                return Failure(FailureKind.RATE_LIMITED, status, wait, detail)
            if status == 412:
                return Failure(FailureKind.STALE_PARENT, status, None, detail)
            if status in (401, 403):
                return Failure(FailureKind.AUTH, status, None, detail)
            if status == 404:
                return Failure(FailureKind.NOT_FOUND, status, None, detail)
            if status == 408 or status >= 500:
                return Failure(FailureKind.SERVER, status, None, detail)
            return Failure(FailureKind.TERMINAL, status, None, detail)
        if isinstance(err, httpx2.TransportError | ConnectionError) and never_connected(err):
            return Failure(FailureKind.UNREACHABLE, None, None, f"{type(err).__name__}: {err}")
        if isinstance(err, httpx2.TransportError):
            return Failure(FailureKind.NETWORK, None, None, f"{type(err).__name__}: {err}")
        if isinstance(err, ConnectionError | TimeoutError):
            return Failure(FailureKind.NETWORK, None, None, f"{type(err).__name__}: {err}")
    return Failure(FailureKind.TERMINAL, None, None, f"{type(exc).__name__}: {exc}")


def scrub(text: str, token: str | None) -> str:
    """``text`` without the token, and without anything shaped like a token or bearer header."""
    if token:
        text = text.replace(token, "<token>")
    return TOKEN_SHAPES.sub("<token>", text)


def first_line(text: str, limit: int = 300) -> str:
    """The informative part of a client error message, on one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out = " ".join(lines)
    return out if len(out) <= limit else out[: limit - 3] + "..."
