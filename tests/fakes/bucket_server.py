"""A loopback fake of a GCS bucket: objects by URL and the JSON API listing, with fault knobs.

Stdlib (``http.server.ThreadingHTTPServer``) plus google-crc32c for the hash header, bound to
127.0.0.1 on an ephemeral port; nothing persists (all state is in memory and dies with the
server). Serves:

- ``GET /<bucket>/<object name, each part percent-quoted>``: the object, with
  ``x-goog-hash: crc32c=..,md5=..`` (``hashes`` picks which) and
  ``x-goog-stored-content-encoding`` like GCS. With
  ``gzip_at_rest`` objects are stored gzip-compressed: a client that accepts gzip gets the
  stored bytes with ``Content-Encoding: gzip`` and ``Content-Length``; any other gets them
  inflated on the fly, chunked, without a length (as GCS does).
- ``GET /storage/v1/b/<bucket>/o?prefix=&delimiter=&pageToken=&maxResults=``: the listing,
  ``prefixes`` + ``items`` (name, size), paged by ``nextPageToken``; ``max_page_size`` caps a
  page so tests exercise paging.

``strict_quoting`` answers 400 to an object path holding a raw character that the client
should have percent-quoted (anything outside ``A-Za-z0-9-._~/%``), so tests catch a client that
does not quote run names. Fault knobs (``Faults``) are rules consumed by matching requests, in
the order added; every request is logged with the status sent (``stall`` holds a request
before its headers, ``stall_body`` in the middle of its body; both log it when the stall
begins, so a test can wait for the log rather than for a time).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c

BUCKET = "crfm-helm-public"
UNQUOTED_OK = re.compile(r"^[A-Za-z0-9\-._~/%]*$")


@dataclass
class Rule:
    """One fault: applies to the next ``times`` requests whose path contains ``match``."""

    kind: str  # status | stall | stall_body | truncate | corrupt | nth
    match: str
    times: int
    status: int = 500
    retry_after: str | None = None
    seconds: float = 0.0
    nth: int = 0


@dataclass(frozen=True)
class Logged:
    path: str
    status: int
    fault: str | None


@dataclass
class Faults:
    """Thread-safe fault rules; each knob returns nothing and takes effect on later requests."""

    rules: list[Rule] = field(default_factory=list)
    not_found: set[str] = field(default_factory=set)
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_nth(self, n: int, status: int = 500) -> None:
        """The ``n``-th request from now on (1-based, any path) answers ``status``."""
        with self.lock:
            self.rules.append(Rule("nth", "", 1, status=status, nth=self.count + n))

    def rate_limit(self, match: str, retry_after: str = "1", times: int = 1) -> None:
        """429 with ``Retry-After`` for the next ``times`` requests matching ``match``."""
        self._add(Rule("status", match, times, status=429, retry_after=retry_after))

    def burst_503(self, match: str, times: int) -> None:
        self._add(Rule("status", match, times, status=503))

    def status(self, match: str, status: int, times: int = 1) -> None:
        self._add(Rule("status", match, times, status=status))

    def stall(self, match: str, seconds: float, times: int = 1) -> None:
        """Hold the request ``seconds`` without answering, then close (logged with status 0)."""
        self._add(Rule("stall", match, times, seconds=seconds))

    def stall_body(self, match: str, seconds: float, times: int = 1) -> None:
        """Send the headers (a Content-Length for the whole body) and half the body, then
        hold the connection ``seconds`` without another byte, then close (logged with status
        200 and fault ``stall_body`` once half the body is out). Objects only."""
        self._add(Rule("stall_body", match, times, seconds=seconds))

    def truncate(self, match: str, times: int = 1) -> None:
        """Send half the body under a Content-Length for all of it, then close."""
        self._add(Rule("truncate", match, times))

    def corrupt(self, match: str, times: int = 1) -> None:
        """Flip one byte of the body (length unchanged; the md5 header then disagrees)."""
        self._add(Rule("corrupt", match, times))

    def missing(self, match: str) -> None:
        """Every object whose name contains ``match`` answers 404 (until cleared)."""
        with self.lock:
            self.not_found.add(match)

    def clear(self) -> None:
        with self.lock:
            self.rules.clear()
            self.not_found.clear()

    def _add(self, rule: Rule) -> None:
        with self.lock:
            self.rules.append(rule)

    def take(self, path: str) -> Rule | None:
        """Count this request and consume the first rule that applies to it."""
        with self.lock:
            self.count += 1
            for rule in self.rules:
                if rule.times <= 0:
                    continue
                if rule.kind == "nth":
                    if rule.nth == self.count:
                        rule.times -= 1
                        return rule
                    continue
                if rule.match in path:
                    rule.times -= 1
                    return rule
            return None

    def is_missing(self, name: str) -> bool:
        with self.lock:
            return any(m in name for m in self.not_found)

    @property
    def pending(self) -> list[Rule]:
        with self.lock:
            return [r for r in self.rules if r.times > 0]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up (timed out, process ended) is normal here: say nothing."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class BucketServer:
    """The fake bucket; use as a context manager or ``start()``/``stop()``."""

    def __init__(
        self,
        bucket: str = BUCKET,
        *,
        gzip_at_rest: bool = False,
        max_page_size: int = 1000,
        strict_quoting: bool = True,
        hashes: tuple[str, ...] = ("crc32c", "md5"),
    ) -> None:
        self.bucket = bucket
        self.hashes = hashes
        self.gzip_at_rest = gzip_at_rest
        self.max_page_size = max_page_size
        self.strict_quoting = strict_quoting
        self.faults = Faults()
        # (Authorization header, query parameter "k=v") every request must carry, or None
        self.required: tuple[str, str] | None = None
        self.objects: dict[str, Path] = {}
        self.log: list[Logged] = []
        self._log_lock = threading.Lock()
        self._gz_cache: dict[str, bytes] = {}
        self._hash_cache: dict[tuple[object, ...], str] = {}
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- content -------------------------------------------------------------------------
    def mount(self, prefix: str, tree: Path) -> None:
        """Serve every file under ``tree`` as object ``<prefix>/<relative path>``."""
        prefix = prefix.strip("/")
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                rel = path.relative_to(tree).as_posix()
                self.objects[f"{prefix}/{rel}" if prefix else rel] = path

    def stored(self, name: str) -> bytes:
        """The object's bytes as stored (gzip-compressed when ``gzip_at_rest``)."""
        raw = self.objects[name].read_bytes()
        if not self.gzip_at_rest:
            return raw
        if name not in self._gz_cache:
            self._gz_cache[name] = gzip.compress(raw, mtime=0)
        return self._gz_cache[name]

    def hash_header(self, name: str, stored: bytes | None = None) -> str:
        """``x-goog-hash`` for the stored bytes; cached per file, as GCS keeps it with the
        object (``warm_hashes`` computes them all before a measurement, so the benchmark's
        server does not spend the measured machine's CPU on hashing)."""
        path = self.objects[name]
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, self.gzip_at_rest, self.hashes)
        if key not in self._hash_cache:
            data = self.stored(name) if stored is None else stored
            digests = {
                "crc32c": lambda: google_crc32c.Checksum(data).digest(),
                "md5": lambda: hashlib.md5(data).digest(),
            }
            self._hash_cache[key] = ",".join(
                f"{kind}={base64.b64encode(digests[kind]()).decode()}" for kind in self.hashes
            )
        return self._hash_cache[key]

    def warm_hashes(self) -> int:
        """Compute every mounted object's hash header now; returns how many objects."""
        for name in self.objects:
            self.hash_header(name)
        return len(self.objects)

    def stored_size(self, name: str) -> int:
        if self.gzip_at_rest:
            return len(self.stored(name))
        return self.objects[name].stat().st_size

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def origin(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/{self.bucket}"

    def start(self) -> BucketServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> BucketServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, path: str, status: int, fault: str | None) -> None:
        """Log a request before it is answered, so a client that has the answer sees it."""
        with self._log_lock:
            self.log.append(Logged(path, status, fault))

    def requests_for(self, match: str) -> list[Logged]:
        with self._log_lock:
            return [entry for entry in self.log if match in entry.path]

    @contextmanager
    def settings(self, **kw: object) -> Iterator[None]:
        old = {k: getattr(self, k) for k in kw}
        for k, v in kw.items():
            setattr(self, k, v)
        try:
            yield
        finally:
            for k, v in old.items():
                setattr(self, k, v)

    # -- listing ---------------------------------------------------------------------------
    def listing(self, prefix: str, delimiter: str, token: str, max_results: int) -> dict:
        entries: dict[str, dict | None] = {}  # name -> item, or None for a prefix
        for name in sorted(self.objects):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                entries.setdefault(prefix + rest.split(delimiter, 1)[0] + delimiter, None)
            else:
                entries[name] = {
                    "kind": "storage#object",
                    "name": name,
                    "bucket": self.bucket,
                    "size": str(self.stored_size(name)),
                    **({"contentEncoding": "gzip"} if self.gzip_at_rest else {}),
                }
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else ""
        names = [n for n in sorted(entries) if n > after]
        page = names[: max(1, min(max_results, self.max_page_size))]
        body: dict = {"kind": "storage#objects"}
        prefixes = [n for n in page if entries[n] is None]
        items = [entries[n] for n in page if entries[n] is not None]
        if prefixes:
            body["prefixes"] = prefixes
        if items:
            body["items"] = items
        if len(names) > len(page):
            body["nextPageToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return body


class _Handler(BaseHTTPRequestHandler):
    fake: BucketServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, a small body waits for the
    # client's delayed ACK (~40 ms a request). GCS has no such stall, so neither does the fake.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. timed out)
            self.close_connection = True

    def _answer(self) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        if fake.required is not None:
            auth, param = fake.required
            if self.headers.get("Authorization") != auth or param not in parts.query.split("&"):
                fake.record(parts.path, 403, None)
                self._send_bytes(403, b'{"error": "credentials required"}', {})
                return
        rule = fake.faults.take(parts.path)
        fault = rule.kind if rule else None
        if rule is not None and rule.kind == "stall":  # logged now; never answered
            fake.record(parts.path, 0, fault)
            fake._stop.wait(rule.seconds)
            self.close_connection = True
            return
        if rule is not None and rule.kind in ("status", "nth"):
            headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
            fake.record(parts.path, rule.status, fault)
            self._send_bytes(rule.status, b'{"error": "injected"}', headers)
            return
        api = f"/storage/v1/b/{fake.bucket}/o"
        if parts.path == api:
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            body = fake.listing(
                q.get("prefix", ""),
                q.get("delimiter", ""),
                q.get("pageToken", ""),
                int(q.get("maxResults", "1000")),
            )
            fake.record(parts.path, 200, fault)
            self._send_bytes(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
            return
        head = f"/{fake.bucket}/"
        if not parts.path.startswith(head):
            fake.record(parts.path, 404, fault)
            self._send_bytes(404, b"no such bucket")
            return
        raw_name = parts.path[len(head) :]
        credential = fake.required[1] if fake.required is not None else None
        query = "&".join(p for p in parts.query.split("&") if p and p != credential)
        if fake.strict_quoting and (not UNQUOTED_OK.match(raw_name) or query):
            fake.record(parts.path, 400, fault)
            self._send_bytes(400, f"unquoted character in {raw_name!r}".encode())
            return
        name = unquote(raw_name)
        if name not in fake.objects or fake.faults.is_missing(name):
            fake.record(parts.path, 404, fault)
            self._send_bytes(404, b"No such object")
            return
        if fault != "stall_body":  # logged once half the body is out (``_send_object``)
            fake.record(parts.path, 200, fault)
        self._send_object(name, rule)

    def _send_object(self, name: str, rule: Rule | None) -> None:
        fake = self.fake
        stored = fake.stored(name)
        goog_hash = fake.hash_header(name, stored)
        accepts_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        headers = {
            "Content-Type": "application/json",
            **({"x-goog-hash": goog_hash} if goog_hash else {}),
            "x-goog-stored-content-encoding": "gzip" if fake.gzip_at_rest else "identity",
        }
        if fake.gzip_at_rest and not accepts_gzip:
            self._send_chunked(zlib.decompress(stored, 16 + zlib.MAX_WBITS), headers, rule)
            return
        if fake.gzip_at_rest:
            headers["Content-Encoding"] = "gzip"
        body = stored
        if rule is not None and rule.kind == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        if rule is not None and rule.kind in ("truncate", "stall_body"):
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if rule.kind == "stall_body":  # the connection stays open, silent
                fake.record(urlsplit(self.path).path, 200, rule.kind)
                fake._stop.wait(rule.seconds)
            self.close_connection = True
            return
        self._send_bytes(200, body, headers)

    def _send_chunked(self, body: bytes, headers: dict[str, str], rule: Rule | None) -> None:
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = 64 * 1024
        cutting = rule is not None and rule.kind in ("truncate", "stall_body")
        cut = len(body) // 2 if cutting else len(body)
        for start in range(0, cut, step):
            block = body[start : min(start + step, cut)]
            self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
        if cut < len(body):  # end mid-stream without the terminating chunk
            self.wfile.flush()
            if rule is not None and rule.kind == "stall_body":
                self.fake.record(urlsplit(self.path).path, 200, rule.kind)
                self.fake._stop.wait(rule.seconds)
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

