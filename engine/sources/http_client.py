"""HTTP GETs that survive a flaky network: timeouts, deadlines, retries, gzip, length checks.

Every request has a connect timeout, a read timeout (the longest silence between two bytes)
and an overall deadline per attempt (``deadline_s``, raised for a large declared length to
what ``min_rate_bytes_s`` needs, so multi-GB files are not cut), so nothing hangs.
Connection errors, timeouts, 408, 429 (waiting at least its ``Retry-After``), 5xx, truncated
bodies, length or checksum mismatches and broken gzip streams are retried with exponential backoff
and full jitter, up to ``max_attempts``; then ``HttpRetriesExhaustedError`` (a
``TransientError``) names the URL and the last failure. Each retry prints one line on stderr
(``on_retry``), so a stall is never silent. Each attempt runs through ``stop_waits.call``: a
stop request (the first Ctrl-C) raises ``WaitInterrupted`` within 0.1 s, during a retry's wait
or a read the server stalls alike, and the abandoned attempt writes nothing more. A host that
cannot be reached at all (its name does not resolve, or it refuses the connection before any
byte) raises ``UnreachableError`` at once: offline is not a blip. 404 raises
``HttpNotFoundError`` at once; any other status ``HttpStatusError``.

Downloads stream to ``<dest>.part`` and are renamed to ``dest`` only once complete and checked,
so a crash leaves at most a ``.part`` file in the caller's scratch folder (the worker removes the
chunk's scratch folder; the coordinator sweeps the whole scratch root on start). Bodies are
never held whole in memory. Objects may be gzip-compressed at rest: the client asks for
``Accept-Encoding: gzip`` and inflates itself, so the wire bytes can be counted against
``Content-Length`` and, when the server's ``x-goog-hash`` describes the bytes delivered, their
crc32c (or md5) checked (``BodyCheck``).

One pooled ``requests.Session`` per process (``process_session``), created lazily and never
shared across a fork. No credentials are sent; URLs are shown with any user:password removed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import google_crc32c
import requests
import urllib3
from requests.adapters import HTTPAdapter

from helmproc.engine import stop_waits
from helmproc.engine.durable import writing
from helmproc.engine.errors import (
    SourceError,
    TransientError,
    UnreachableError,
    never_connected,
)
from helmproc.engine.retry import Backoff, parse_retry_after
from helmproc.engine.url_secrets import strip_credentials, strip_text

T = TypeVar("T")

STREAM_CHUNK_BYTES = 1 << 20
POOL_MAXSIZE = 16
USER_AGENT = "helmproc (+https://github.com/evaleval)"
# Statuses worth another attempt: the server says "later" or failed on its side.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class ClientSettings:
    """Timeouts and retry policy. Tests shrink the delays; the defaults suit the public bucket."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    deadline_s: float = 1800.0  # one attempt, first byte sent to last byte read ...
    min_rate_bytes_s: float = 256 * 1024  # ... or longer for big bodies: length / this rate
    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 300.0  # a longer Retry-After gives up instead of waiting
    accept_gzip: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ClientSettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.base_delay_s, self.max_delay_s)

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (>= 1): ``retry.Backoff``."""
        return self.backoff.delay_s(attempt)


# -- errors ------------------------------------------------------------------------------------


class HttpStatusError(SourceError):
    """The server answered with a status that retrying will not change (403, 400, ...)."""

    def __init__(self, url: str, status: int, detail: str = "") -> None:
        super().__init__(url, status, detail)
        self.url = url
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"GET {self.url} answered HTTP {self.status}{tail}"


class HttpNotFoundError(HttpStatusError):
    """404: the object does not exist."""

    def __init__(self, url: str, status: int = 404, detail: str = "") -> None:
        super().__init__(url, status, detail)


class FileTooLargeError(SourceError):
    """A download over its byte limit (``--max-file-bytes``): stopped, never retried.
    ``size`` is the full size when the response declared it, else None."""

    def __init__(self, url: str, limit: int, size: int | None) -> None:
        super().__init__(url, limit, size)
        self.url, self.limit, self.size = url, limit, size

    def __str__(self) -> str:
        got = f"{self.size} bytes" if self.size is not None else "download stopped"
        return f"GET {self.url}: larger than {self.limit} bytes ({got})"


class HttpRetriesExhaustedError(TransientError):
    """Every attempt failed with a retryable problem; the last one is named."""

    def __init__(self, url: str, attempts: int, last: str) -> None:
        super().__init__(url, attempts, last)
        self.url = url
        self.attempts = attempts
        self.last = last

    def __str__(self) -> str:
        return f"GET {self.url} failed {self.attempts} times; last: {self.last}"


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


# Failures of the wire (not of our disk): socket, urllib3 and requests errors, bad gzip.
_WIRE_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
    zlib.error,
)


# -- the per-process session ---------------------------------------------------------------------

_session: requests.Session | None = None
_session_pid = 0
_session_lock = threading.Lock()


def process_session() -> requests.Session:
    """This process's pooled session (a forked child builds its own, never reusing sockets)."""
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_MAXSIZE, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            if not urllib.request.getproxies():
                # Nothing to take from the environment but a CA bundle: skip requests' per-call
                # scan of os.environ (and ~/.netrc, whose credentials we never want to send).
                session.trust_env = False
                bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                if bundle:
                    session.verify = bundle
            _session, _session_pid = session, os.getpid()
        return _session


def say_retry(line: str) -> None:
    """The default ``on_retry``: one line on stderr per retry."""
    print(f"helmproc: {line}", file=sys.stderr, flush=True)


def redact(url: str) -> str:
    """``url`` without credentials (user:password, key or token parameters), for messages."""
    return strip_credentials(url)


class BodyCheck:
    """The checksum GCS sent for the bytes delivered (``x-goog-hash: crc32c=..,md5=..``).

    crc32c is preferred: its C implementation hashes ~9 GB/s against md5's ~0.6 GB/s here
    (md5 was ~14% of a whole job's CPU), and composite GCS objects carry only crc32c. md5 is
    the fallback when crc32c is absent or only google-crc32c's pure-Python version exists.
    """

    def __init__(self, kind: str, want: str) -> None:
        self.kind = kind
        self.want = want
        self._hash: Any = (
            google_crc32c.Checksum() if kind == "crc32c" else hashlib.md5(usedforsecurity=False)
        )

    @classmethod
    def from_headers(cls, headers: Any) -> BodyCheck | None:
        given: dict[str, str] = {}
        for part in str(headers.get("x-goog-hash", "")).split(","):
            key, _, value = part.strip().partition("=")
            if value:
                given[key.strip()] = value.strip()
        if "crc32c" in given and google_crc32c.implementation == "c":
            return cls("crc32c", given["crc32c"])
        if "md5" in given:
            return cls("md5", given["md5"])
        if "crc32c" in given:
            return cls("crc32c", given["crc32c"])
        return None

    def update(self, block: bytes) -> None:
        self._hash.update(block)

    def mismatch(self) -> str | None:
        got = base64.b64encode(self._hash.digest()).decode()
        if got == self.want:
            return None
        return f"{self.kind} mismatch: x-goog-hash {self.want}, body {got}"


class HttpClient:
    """GETs with the retry policy of ``settings`` on this process's session."""

    def __init__(
        self,
        settings: ClientSettings | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        on_retry: Callable[[str], None] = say_retry,
    ) -> None:
        self.settings = settings or ClientSettings()
        self._session = session
        self._sleep = sleep
        self._on_retry = on_retry

    @property
    def session(self) -> requests.Session:
        return self._session or process_session()

    # -- public ----------------------------------------------------------------------------
    def download(self, url: str, dest: Path, *, max_bytes: int | None = None) -> int:
        """Stream ``url`` (inflated if gzip) to ``dest``; the number of bytes written.

        More than ``max_bytes`` (inflated) raises ``FileTooLargeError`` and keeps nothing.
        """
        return self._retrying(url, lambda: self._download_once(url, dest, max_bytes))

    def get_json(self, url: str) -> Any:
        """Download ``url`` to a temporary file and decode it as JSON."""
        with tempfile.TemporaryDirectory(prefix="helmproc-get-") as tmp:
            path = Path(tmp) / "body.json"
            self.download(url, path)
            try:
                with path.open("rb") as fh:
                    return json.load(fh)
            except RecursionError:
                reason = "not valid JSON (nested too deeply)"
                raise SourceError(f"GET {redact(url)}: {reason}") from None
            except ValueError as exc:
                raise SourceError(f"GET {redact(url)}: not valid JSON ({exc})") from None

    # -- retry loop ------------------------------------------------------------------------
    def _retrying(self, url: str, attempt_once: Callable[[], T]) -> T:
        settings = self.settings
        for attempt in range(1, settings.max_attempts + 1):
            try:  # on a helper thread: a stop request ends the wait even if the server stalls
                return stop_waits.call(attempt_once, f"GET {redact(url)}")
            except _Retryable as exc:
                if attempt == settings.max_attempts:
                    raise HttpRetriesExhaustedError(redact(url), attempt, exc.reason) from None
                delay = settings.backoff_s(attempt)
                if exc.retry_after_s is not None:
                    if exc.retry_after_s > settings.max_retry_after_s:
                        raise HttpRetriesExhaustedError(
                            redact(url),
                            attempt,
                            f"{exc.reason}; Retry-After {exc.retry_after_s:.0f}s is longer than "
                            f"{settings.max_retry_after_s:.0f}s",
                        ) from None
                    delay = max(delay, exc.retry_after_s)
                stop_waits.check(f"GET {redact(url)}")  # no retry line after a stop request
                self._on_retry(
                    f"GET {redact(url)}: {exc.reason}; attempt {attempt + 1} of "
                    f"{settings.max_attempts} in {delay:.1f} s"
                )
                if self._sleep is not None:
                    self._sleep(delay)
                else:
                    stop_waits.pause(delay, f"GET {redact(url)}")
        raise AssertionError("unreachable: max_attempts must be at least 1")

    # -- one attempt -----------------------------------------------------------------------
    def _download_once(self, url: str, dest: Path, max_bytes: int | None = None) -> int:
        settings = self.settings
        started = time.monotonic()
        what = f"GET {redact(url)}"
        headers = {"Accept-Encoding": "gzip" if settings.accept_gzip else "identity"}
        part = dest.with_name(dest.name + ".part")
        try:
            response = self.session.get(
                url,
                headers=headers,
                stream=True,
                timeout=(settings.connect_timeout_s, settings.read_timeout_s),
            )
        except _WIRE_ERRORS as exc:
            if never_connected(exc):
                raise UnreachableError(urlsplit(url).hostname or "?", "use --source DIR") from None
            raise _Retryable(f"{type(exc).__name__}: {first_line(exc)}") from None
        with response:
            self._check_status(url, response)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ("identity", "gzip", ""):
                raise HttpStatusError(redact(url), response.status_code, f"unsupported "
                                      f"Content-Encoding {encoding!r}")
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
            expected = _content_length(response)
            if max_bytes is not None and inflater is None and (expected or 0) > max_bytes:
                raise FileTooLargeError(redact(url), max_bytes, expected)
            deadline_s = settings.deadline_s
            if expected is not None and settings.min_rate_bytes_s > 0:
                deadline_s = max(deadline_s, expected / settings.min_rate_bytes_s)
            stored = response.headers.get("x-goog-stored-content-encoding", "identity").lower()
            # the stored object's hash describes the wire bytes only when delivered as stored
            check = (
                BodyCheck.from_headers(response.headers)
                if stored == (encoding or "identity")
                else None
            )
            n_wire = n_out = 0
            stop_waits.check(what)  # an abandoned attempt writes nothing
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with writing(part), part.open("wb") as out:
                    for block in response.raw.stream(STREAM_CHUNK_BYTES, decode_content=False):
                        stop_waits.check(what)
                        n_wire += len(block)
                        if check is not None:
                            check.update(block)
                        data = inflater.decompress(block) if inflater else block
                        with writing(part):
                            out.write(data)
                        n_out += len(data)
                        if max_bytes is not None and n_out > max_bytes:
                            raise FileTooLargeError(redact(url), max_bytes, None)
                        if time.monotonic() - started > deadline_s:
                            raise _Retryable(
                                f"deadline of {deadline_s:.1f}s passed after {n_wire} bytes"
                            )
                    if inflater is not None:
                        tail = inflater.flush()
                        out.write(tail)
                        n_out += len(tail)
                        if max_bytes is not None and n_out > max_bytes:
                            raise FileTooLargeError(redact(url), max_bytes, None)
                        if not inflater.eof:
                            raise _Retryable(f"gzip stream ended early after {n_wire} bytes")
            except _WIRE_ERRORS as exc:
                part.unlink(missing_ok=True)
                raise _Retryable(f"body cut after {n_wire} bytes ({type(exc).__name__}: "
                                 f"{first_line(exc)})") from None
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            if expected is not None and n_wire != expected:
                part.unlink(missing_ok=True)
                raise _Retryable(f"length mismatch: Content-Length {expected}, got {n_wire} bytes")
            problem = check.mismatch() if check is not None else None
            if problem is not None:
                part.unlink(missing_ok=True)
                raise _Retryable(problem)
        os.replace(part, dest)
        return n_out

    @staticmethod
    def _check_status(url: str, response: requests.Response) -> None:
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            raise HttpNotFoundError(redact(url))
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retryable(f"HTTP {status}", retry_after)
        detail = ""
        try:
            detail = response.raw.read(300, decode_content=True).decode("utf-8", "replace")
        except _WIRE_ERRORS:
            pass
        raise HttpStatusError(redact(url), status, " ".join(detail.split()))


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, without the URLs it may quote (they can hold query
    credentials: the URL is named, stripped, by the caller), cut to ``limit`` characters."""
    text = " ".join(_QUOTED_URL.sub("url: <url>", strip_text(str(exc))).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# urllib3 quotes the request path and query ("url: /a/b?token=..."): dropped from messages
_QUOTED_URL = re.compile(r"url: \S+")


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or "chunked" in response.headers.get("Transfer-Encoding", "").lower():
        return None
    try:
        return int(value)
    except ValueError:
        return None
