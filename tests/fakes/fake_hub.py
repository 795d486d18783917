"""A stdlib fake of the Hugging Face Hub (dataset repos), for the real huggingface_hub client.

How it works: ``FakeHub`` runs a ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) and keeps every
repo in memory: branches, the full commit history (each commit is a snapshot path -> entry),
file contents by sha256, and the LFS objects uploaded so far. It speaks HTTP/1.1 with a
Content-Length on every reply and accepts chunked request bodies. The routes are the ones
huggingface_hub 2.4 calls for datasets with ``HF_HUB_DISABLE_XET=1``: repo create,
validate-yaml, repo info / revision, branch create, preupload, LFS batch + basic/multipart
PUT + verify, NDJSON commit, tree listing (paginated by ``Link``), paths-info and resolve
(HEAD and ranged GET).

What it enforces like the Hub: a write needs ``Authorization: Bearer <token>``; a commit with a
stale ``parentCommit`` is refused with 412; an ``lfsFile`` must name an uploaded object; a
folder holds at most ``max_entries_per_folder`` entries; new repos get a default
``.gitattributes`` that stores ``*.parquet`` with LFS.

Xet: by default the fake has no Xet (``HF_HUB_DISABLE_XET=1`` makes the client use LFS). With
``xet_dir`` set, ``xet-write-token`` hands out ``local://<xet_dir>`` as the CAS, so hf_xet
uploads to disk and the commit carries only sha256s; such files are listed with their sha256
(paths-info, tree) but their bytes cannot be downloaded from the fake (501).

Fault knobs (all counted per route, 1-based, across the server's life):
``fail(route, nth, status, headers, body)``, ``rate_limit(route, nth, retry_after)``,
``lose_response(route, nth)`` (the request is applied, then the connection is closed without a
reply), ``drop(route, nth)`` (closed before anything is applied) and
``foreign_commit_before(nth)`` (someone else commits just before the nth commit, so the
client's parent is stale and it gets a real 412), ``stall(route, nth, seconds)`` (the request
is held open without a byte, and not applied; ``stalled(route)`` counts such requests).

Across a crash: nothing is persisted; the state lives as long as the ``FakeHub`` object, which
is what lets a test "crash" a job, then resume it against the same remote.

In-process use: huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` into
``huggingface_hub.constants`` at import time (``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE``,
``HF_HUB_DISABLE_XET``), and a test session imports it once, with whatever endpoint the first
test had. So the ``hub_env`` fixture sets the variables (for subprocesses, and for
``HubPublisher``, which reads ``HF_ENDPOINT`` when it is built) and also patches those three
constants for the already imported client. Passing ``endpoint=`` explicitly (``HfApi``,
``snapshot_download``) is the other half: ``hf_hub_url`` alone would still build URLs from
the import-time template. ``stop()`` also cuts keep-alive connections, so a client's pooled
connection cannot reach an old fake whose port a new fake reuses.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

FAKE_TOKEN = "hf_fakeTOKENfor_tests_0123456789abcdef"
REGULAR_MAX_BYTES = 10_000_000  # Hub rule: larger files must go through LFS
MAX_ENTRIES_PER_FOLDER = 10_000
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.arrow", "*.bin", "*.gz", "*.parquet", "*.zst", "*.safetensors", "*.zip")
)
LFS_SPEC = "version https://git-lfs.github.com/spec/v1\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"{LFS_SPEC}oid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Entry:
    """One file at one commit. ``git_oid`` is what git calls the blob (for LFS: the pointer)."""

    path: str
    size: int
    sha256: str
    lfs: bool
    last_commit: str
    git_oid: str

    @property
    def preupload_oid(self) -> str:
        """What preupload reports for an existing file: sha256 if LFS, else the git oid."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass(frozen=True)
class Commit:
    oid: str
    title: str
    description: str
    parent: str | None
    date: str
    files: dict[str, Entry]
    added: tuple[str, ...]  # paths written by this commit (re-sends show up here twice)
    author: str
    at: float = field(default_factory=time.time)  # wall clock, for time-to-first-shard


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # commit oids in creation order
    contents: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes
    lfs_objects: set[str] = field(default_factory=set)
    multipart: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def head(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision)
        if oid is None:
            matches = [c for c in self.commits if len(revision) >= 7 and c.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        return self.commits.get(oid) if oid else None


@dataclass
class Fault:
    route: str
    nth: int
    action: str  # "status" | "lose_response" | "drop" | "foreign_commit" | "stall"
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    seconds: float = 0.0  # how long "stall" holds the request


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class FakeHub:
    """The fake Hub: state, fault knobs, and the HTTP server around them."""

    def __init__(
        self,
        token: str = FAKE_TOKEN,
        *,
        gitattributes: str = DEFAULT_GITATTRIBUTES,
        tree_page_size: int = 1000,
        multipart_threshold: int = 50_000_000,
        multipart_chunk: int = 5_000_000,
        max_entries_per_folder: int = MAX_ENTRIES_PER_FOLDER,
    ) -> None:
        self.token = token
        self.gitattributes = gitattributes
        self.tree_page_size = tree_page_size
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self.max_entries_per_folder = max_entries_per_folder
        self.xet_dir: str | None = None  # set to a folder: Xet uploads via hf_xet's local:// CAS
        self.repos: dict[str, Repo] = {}
        self.faults: list[Fault] = []
        self.counts: Counter[str] = Counter()
        self.calls: list[tuple[str, str, str, int]] = []  # method, route, path, status
        self.preuploads: Counter[str] = Counter()  # path -> preupload requests naming it
        self.lock = threading.RLock()
        self._commit_counter = 0
        self._salt = os.urandom(8).hex()  # commit oids differ between two fake Hubs
        self._conns: set[socket.socket] = set()
        self.stopped = False
        self._stopping = threading.Event()  # ends every stall
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), type("BoundHubRequestHandler", (HubRequestHandler,), {"hub": self})
        )
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut keep-alive connections: a client's pooled connection must not
        reach this Hub's state after a new fake Hub got the same port."""
        self.stopped = True
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- fault knobs ---------------------------------------------------------------------
    def fail(
        self,
        route: str,
        nth: int = 1,
        status: int = 503,
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> None:
        self.faults.append(Fault(route, nth, "status", status, dict(headers or {}), body))

    def rate_limit(self, route: str, nth: int = 1, retry_after: int = 1) -> None:
        self.fail(route, nth, 429, {"Retry-After": str(retry_after)}, "Too Many Requests")

    def lose_response(self, route: str = "commit", nth: int = 1) -> None:
        self.faults.append(Fault(route, nth, "lose_response"))

    def drop(self, route: str, nth: int = 1) -> None:
        self.faults.append(Fault(route, nth, "drop"))

    def stall(self, route: str, nth: int = 1, seconds: float = 600.0) -> None:
        """Hold the ``nth`` request of ``route`` without answering for ``seconds`` (or until
        the fake stops), then close; it is logged in ``calls`` with status -1 when the stall
        begins (a test waits for that, not for a time), and the request is not applied."""
        self.faults.append(Fault(route, nth, "stall", seconds=seconds))

    def stalled(self, route: str) -> int:
        """How many requests of ``route`` are or were held by ``stall``."""
        with self.lock:
            return sum(1 for _, r, _, status in self.calls if r == route and status == -1)

    def foreign_commit_before(self, nth: int = 1) -> None:
        self.faults.append(Fault("commit", nth, "foreign_commit"))

    def _faults_for(self, route: str, n: int) -> list[Fault]:
        return [f for f in self.faults if f.route == route and f.nth == n]

    # -- inspection helpers for tests ----------------------------------------------------
    def repo(self, repo_id: str) -> Repo:
        return self.repos[repo_id]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, str]:
        """Path -> sha256 of every file at ``revision``."""
        head = self.repos[repo_id].head(revision)
        return {} if head is None else {p: e.sha256 for p, e in head.files.items()}

    def content(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        repo = self.repos[repo_id]
        head = repo.head(revision)
        assert head is not None
        return repo.contents[head.files[path].sha256]

    def commits(self, repo_id: str) -> list[Commit]:
        repo = self.repos[repo_id]
        return [repo.commits[oid] for oid in repo.log]

    def statuses(self, route: str) -> list[int]:
        return [status for _, r, _, status in self.calls if r == route]

    # -- repo operations (called with the lock held) -------------------------------------
    def create_repo(self, repo_id: str, private: bool = False, gitattributes: str | None = None):
        repo = Repo(repo_id, private, now_iso())
        self.repos[repo_id] = repo
        attrs = self.gitattributes if gitattributes is None else gitattributes
        self._apply_commit(
            repo, "main", "initial commit", "", {".gitattributes": attrs.encode()}, {}, [], "hub"
        )
        return repo

    def _new_oid(self, *parts: str) -> str:
        self._commit_counter += 1
        text = "\n".join((self._salt, *parts, str(self._commit_counter)))
        return hashlib.sha1(text.encode()).hexdigest()

    def _apply_commit(
        self,
        repo: Repo,
        branch: str,
        title: str,
        description: str,
        regular: dict[str, bytes],
        lfs: dict[str, tuple[str, int]],
        deleted: list[tuple[str, bool]],
        author: str,
    ) -> Commit:
        parent = repo.branches.get(branch)
        files = dict(repo.commits[parent].files) if parent else {}
        for path, is_folder in deleted:
            if is_folder:
                prefix = path.rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            elif files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        oid = self._new_oid(parent or "", title, *sorted(regular), *sorted(lfs))
        for path, data in regular.items():
            sha = hashlib.sha256(data).hexdigest()
            repo.contents[sha] = data
            files[path] = Entry(path, len(data), sha, False, oid, git_blob_oid(data))
        for path, (sha, size) in lfs.items():
            files[path] = Entry(path, size, sha, True, oid, git_blob_oid(lfs_pointer(sha, size)))
        self._check_folders(files)
        commit = Commit(
            oid, title, description, parent, now_iso(), files, (*regular, *lfs), author
        )
        repo.commits[oid] = commit
        repo.log.append(oid)
        repo.branches[branch] = oid
        return commit

    def _check_folders(self, files: dict[str, Entry]) -> None:
        entries: dict[str, set[str]] = {}
        for path in files:
            parts = path.split("/")
            for depth in range(len(parts)):
                folder = "/".join(parts[:depth])
                entries.setdefault(folder, set()).add(parts[depth])
        for folder, names in entries.items():
            if len(names) > self.max_entries_per_folder:
                raise HubError(
                    400,
                    f"folder '{folder or '/'}' would hold {len(names)} entries; "
                    f"the limit is {self.max_entries_per_folder}",
                )

    def lfs_patterns(self, head: Commit | None, repo: Repo) -> list[str]:
        if head is None or ".gitattributes" not in head.files:
            return []
        text = repo.contents[head.files[".gitattributes"].sha256].decode()
        return [
            line.split()[0]
            for line in text.splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line
        ]

    def upload_mode(self, repo: Repo, head: Commit | None, path: str, size: int, sample: bytes):
        patterns = self.lfs_patterns(head, repo)
        name = path.rsplit("/", 1)[-1]
        matched = any(
            fnmatch.fnmatch(path if "/" in pat else name, pat.lstrip("/")) for pat in patterns
        )
        if size == 0:
            return "regular"
        if matched or size >= REGULAR_MAX_BYTES or b"\x00" in sample:
            return "lfs"
        return "regular"


# -- the HTTP side ------------------------------------------------------------------------

REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
ROUTES: list[tuple[str, str, re.Pattern[str]]] = [
    (m, name, re.compile(rx + r"$"))
    for m, name, rx in [
        ("POST", "create", r"/api/repos/create"),
        ("POST", "validate-yaml", r"/api/validate-yaml"),
        ("GET", "agent-harnesses", r"/api/agent-harnesses"),
        ("GET", "repo-info", rf"/api/datasets/{REPO}(?:/revision/(?P<rev>[^/]+))?"),
        ("POST", "branch", rf"/api/datasets/{REPO}/branch/(?P<rev>[^/]+)"),
        ("POST", "preupload", rf"/api/datasets/{REPO}/preupload/(?P<rev>[^/]+)"),
        ("POST", "commit", rf"/api/datasets/{REPO}/commit/(?P<rev>[^/]+)"),
        ("GET", "tree", rf"/api/datasets/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"),
        ("POST", "paths-info", rf"/api/datasets/{REPO}/paths-info/(?P<rev>[^/]+)"),
        ("GET", "xet-token", rf"/api/datasets/{REPO}/xet-(?:write|read)-token/(?P<rev>[^/]+)"),
        ("POST", "lfs-batch", rf"/datasets/{REPO}\.git/info/lfs/objects/batch"),
        ("PUT", "lfs-put", rf"/_lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})"),
        ("PUT", "lfs-part", rf"/_lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})/part/(?P<part>\d+)"),
        ("POST", "lfs-complete", rf"/_lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})/complete"),
        ("POST", "lfs-verify", rf"/_lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})/verify"),
        ("HEAD", "resolve", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
        ("GET", "resolve", rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"),
    ]
]
WRITE_ROUTES = {"create", "branch", "preupload", "commit", "lfs-batch", "lfs-verify"}


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), dict(headers or {}))


class _DropConnection(Exception):
    pass


class HubRequestHandler(BaseHTTPRequestHandler):
    """One HTTP exchange with the fake Hub: ``_dispatch`` finds the route, applies the faults
    armed for it, checks the token of a write, and calls the route's handler ``r_<route>``
    (one method per route below), which returns a ``Reply``. ``hub`` is the ``FakeHub`` it
    serves (set on a subclass by ``FakeHub.start``)."""

    hub: ClassVar[FakeHub]
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub.lock:
            self.hub._conns.add(self.connection)

    def finish(self) -> None:
        with self.hub.lock:
            self.hub._conns.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing --------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size_line = self.rfile.readline().strip().split(b";")[0]
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _dispatch(self, method: str) -> None:
        if self.hub.stopped:
            self.close_connection = True
            return
        split = urlsplit(self.path)
        route, match = "unknown", None
        for m, name, rx in ROUTES:
            if m == method and (found := rx.match(split.path)):
                route, match = name, found
                break
        body = self._body()
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self.hub.lock:
            self.hub.counts[route] += 1
            faults = self.hub._faults_for(route, self.hub.counts[route])
        reply: Reply
        try:
            for fault in faults:
                if fault.action == "drop":
                    raise _DropConnection
                if fault.action == "stall":
                    with self.hub.lock:
                        self.hub.calls.append((method, route, split.path, -1))
                    self.hub._stopping.wait(fault.seconds)
                    self.close_connection = True
                    return
                if fault.action == "foreign_commit" and match is not None:
                    with self.hub.lock:
                        repo = self.hub.repos[f"{match['ns']}/{match['name']}"]
                        self.hub._apply_commit(
                            repo, unquote(match["rev"]), "someone else", "",
                            {f"other/{self.hub.counts[route]}.txt": b"not ours"}, {}, [], "other",
                        )
            status_fault = next((f for f in faults if f.action == "status"), None)
            if status_fault is not None:
                text = status_fault.body or f"injected {status_fault.status}"
                reply = json_reply({"error": text}, status_fault.status, status_fault.headers)
                reply.headers.setdefault("X-Error-Message", text)
            elif match is None:
                reply = json_reply({"error": f"no route {method} {split.path}"}, 404)
            elif route in WRITE_ROUTES and not self._authorized():
                reply = json_reply(
                    {"error": "Invalid credentials in Authorization header"},
                    401,
                    {"X-Error-Message": "Invalid credentials in Authorization header"},
                )
            else:
                reply = getattr(self, "r_" + route.replace("-", "_"))(match, query, body)
            if any(f.action == "lose_response" for f in faults):
                raise _DropConnection
        except _DropConnection:
            with self.hub.lock:
                self.hub.calls.append((method, route, split.path, 0))
            self.close_connection = True
            return
        except HubError as exc:
            headers = {"X-Error-Message": exc.message}
            if exc.code:
                headers["X-Error-Code"] = exc.code
            reply = json_reply({"error": exc.message}, exc.status, headers)
        with self.hub.lock:
            self.hub.calls.append((method, route, split.path, reply.status))
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for key, value in reply.headers.items():
            self.send_header(key, value)
        if "Content-Length" not in reply.headers:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)

    # -- helpers ---------------------------------------------------------------------
    def _repo(self, match: re.Match[str], *, signed: bool = False) -> Repo:
        """The repo named in the URL; private ones need the token unless the URL is one
        the fake handed out itself (upload hrefs, which the client calls without auth)."""
        repo_id = f"{match['ns']}/{match['name']}"
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not signed and not self._authorized()):
            raise HubError(404, f"Repository Not Found: {repo_id}", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, rev: str | None) -> Commit:
        head = repo.head(unquote(rev or "main"))
        if head is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return head

    def _file_json(self, entry: Entry, expand: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "file",
            "oid": entry.git_oid,
            "size": entry.size,
            "path": entry.path,
        }
        if entry.lfs:
            pointer = lfs_pointer(entry.sha256, entry.size)
            data["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(pointer)}
        if expand:
            data["lastCommit"] = {"id": entry.last_commit, "title": "", "date": now_iso()}
        return data


    def _folder_json(self, path: str) -> dict[str, Any]:
        oid = hashlib.sha1(path.encode()).hexdigest()
        return {"type": "directory", "oid": oid, "path": path}

    # -- routes ----------------------------------------------------------------------
    def r_create(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        payload = json.loads(body or b"{}")
        if payload.get("type") != "dataset":
            raise HubError(400, "this fake only hosts dataset repos")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.hub.url}/datasets/{repo_id}"
        with self.hub.lock:
            if repo_id in self.hub.repos:
                return json_reply(
                    {"error": "You already created this dataset repo", "url": url}, 409
                )
            private = payload.get("private") or payload.get("visibility") == "private"
            self.hub.create_repo(repo_id, bool(private))
        return json_reply({"url": url, "name": repo_id, "id": repo_id})

    def r_validate_yaml(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        return json_reply({"errors": [], "warnings": []})

    def r_agent_harnesses(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        return json_reply({"error": "not here"}, 404)

    def r_xet_token(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        if self.hub.xet_dir is None:
            return json_reply({"error": "this fake has no Xet storage"}, 404)
        cas = f"local://{self.hub.xet_dir}"
        exp = int(time.time()) + 3600
        headers = {
            "X-Xet-Cas-Url": cas,
            "X-Xet-Access-Token": "xet-local",
            "X-Xet-Token-Expiration": str(exp),
        }
        return json_reply({"casUrl": cas, "accessToken": "xet-local", "exp": exp}, 200, headers)

    def r_repo_info(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        with self.hub.lock:
            repo = self._repo(match)
            head = self._commit_at(repo, match["rev"])
            blobs = query.get("blobs") == "true"
            siblings = []
            for path in sorted(head.files):
                item: dict[str, Any] = {"rfilename": path}
                if blobs:
                    entry = head.files[path]
                    item["size"] = entry.size
                    if entry.lfs:
                        item["lfs"] = {"sha256": entry.sha256, "size": entry.size}
                siblings.append(item)
            return json_reply(
                {
                    "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
                    "id": repo.repo_id,
                    "author": repo.repo_id.split("/")[0],
                    "sha": head.oid,
                    "private": repo.private,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "createdAt": repo.created_at,
                    "lastModified": head.date,
                    "siblings": siblings,
                }
            )

    def r_branch(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        payload = json.loads(body or b"{}")
        with self.hub.lock:
            repo = self._repo(match)
            branch = unquote(match["rev"])
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            start = self._commit_at(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return json_reply({})

    def r_preupload(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        payload = json.loads(body)
        with self.hub.lock:
            repo = self._repo(match)
            head = repo.head(unquote(match["rev"]))
            out = []
            for item in payload["files"]:
                self.hub.preuploads[item["path"]] += 1
                sample = base64.b64decode(item.get("sample", ""))
                mode = self.hub.upload_mode(repo, head, item["path"], item["size"], sample)
                info: dict[str, Any] = {
                    "path": item["path"],
                    "uploadMode": mode,
                    "shouldIgnore": False,
                }
                existing = head.files.get(item["path"]) if head else None
                if existing is not None:
                    info["oid"] = existing.preupload_oid
                out.append(info)
        return json_reply({"files": out})

    def r_lfs_batch(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        payload = json.loads(body)
        base = f"{self.hub.url}/_lfs/{match['ns']}/{match['name']}"
        objects = []
        with self.hub.lock:
            repo = self._repo(match)
            for obj in payload["objects"]:
                oid, size = obj["oid"], obj["size"]
                if oid in repo.lfs_objects:
                    objects.append({"oid": oid, "size": size})
                    continue
                verify = {"href": f"{base}/{oid}/verify"}
                if size >= self.hub.multipart_threshold and "multipart" in payload["transfers"]:
                    n_parts = -(-size // self.hub.multipart_chunk)
                    header = {"chunk_size": str(self.hub.multipart_chunk)}
                    for i in range(1, n_parts + 1):
                        header[f"{i:05d}"] = f"{base}/{oid}/part/{i}"
                    upload = {"href": f"{base}/{oid}/complete", "header": header}
                else:
                    upload = {"href": f"{base}/{oid}"}
                objects.append(
                    {"oid": oid, "size": size, "actions": {"upload": upload, "verify": verify}}
                )
        reply = json_reply({"transfer": "basic", "objects": objects})
        reply.content_type = "application/vnd.git-lfs+json"
        return reply

    def _store_object(self, repo: Repo, oid: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not hash to {oid}")
        repo.contents[oid] = data
        repo.lfs_objects.add(oid)

    def r_lfs_put(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        with self.hub.lock:
            self._store_object(self._repo(match, signed=True), match["oid"], body)
        return Reply(200)

    def r_lfs_part(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        with self.hub.lock:
            repo = self._repo(match, signed=True)
            repo.multipart.setdefault(match["oid"], {})[int(match["part"])] = body
        return Reply(200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def r_lfs_complete(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        payload = json.loads(body)
        with self.hub.lock:
            repo = self._repo(match, signed=True)
            parts = repo.multipart.pop(match["oid"], {})
            numbers = [p["partNumber"] for p in payload["parts"]]
            if sorted(parts) != numbers:
                raise HubError(400, "multipart upload is missing parts")
            self._store_object(repo, match["oid"], b"".join(parts[n] for n in numbers))
        return json_reply({})

    def r_lfs_verify(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        payload = json.loads(body)
        with self.hub.lock:
            repo = self._repo(match)
            if payload["oid"] not in repo.lfs_objects:
                raise HubError(404, f"LFS object {payload['oid']} was not uploaded")
        return json_reply({})

    def r_commit(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((ln["value"] for ln in lines if ln["key"] == "header"), None)
        if header is None:
            raise HubError(400, "commit payload has no header line")
        regular: dict[str, bytes] = {}
        lfs: dict[str, tuple[str, int]] = {}
        deleted: list[tuple[str, bool]] = []
        with self.hub.lock:
            repo = self._repo(match)
            branch = unquote(match["rev"])
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = header.get("parentCommit")
            head_oid = repo.branches[branch]
            if parent and not head_oid.startswith(parent):
                raise HubError(
                    412, "A commit has happened since. Please refresh and try again."
                )
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "file":
                    regular[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    # with Xet on, the bytes went to hf_xet's local CAS: trust the sha256
                    if value["oid"] not in repo.lfs_objects and self.hub.xet_dir is None:
                        raise HubError(400, f"LFS object {value['oid']} not found")
                    lfs[value["path"]] = (value["oid"], int(value["size"]))
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append((value["path"], key == "deletedFolder"))
            commit = self.hub._apply_commit(
                repo, branch, header.get("summary", ""), header.get("description", ""),
                regular, lfs, deleted, "client",
            )
        return json_reply(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub.url}/datasets/{repo.repo_id}/commit/{commit.oid}",
                "pullRequestUrl": None,
            }
        )

    def _listing(self, head: Commit, prefix: str, recursive: bool) -> list[str]:
        """Paths under ``prefix``: files and (implicit) folders, sorted."""
        base = prefix.strip("/")
        out: set[str] = set()
        for path in head.files:
            if base and not path.startswith(base + "/"):
                continue
            rest = path[len(base) + 1 :] if base else path
            parts = rest.split("/")
            stop = len(parts) if recursive else 1
            for depth in range(1, stop + 1):
                out.add("/".join(([base] if base else []) + parts[:depth]))
        return sorted(out)

    def r_tree(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        with self.hub.lock:
            repo = self._repo(match)
            head = self._commit_at(repo, match["rev"])
            prefix = unquote(match["path"] or "")
            if prefix and prefix not in head.files and not any(
                p.startswith(prefix.strip("/") + "/") for p in head.files
            ):
                raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
            paths = self._listing(head, prefix, query.get("recursive") == "true")
            start = int(query.get("cursor", "0"))
            page = paths[start : start + self.hub.tree_page_size]
            expand = query.get("expand") == "true"
            items = [
                self._file_json(head.files[p], expand) if p in head.files
                else self._folder_json(p)
                for p in page
            ]
        headers = {}
        if start + self.hub.tree_page_size < len(paths):
            params = {k: v for k, v in query.items() if k != "cursor"}
            params["cursor"] = str(start + self.hub.tree_page_size)
            qs = "&".join(f"{k}={quote(v)}" for k, v in params.items())
            headers["Link"] = f'<{self.hub.url}{urlsplit(self.path).path}?{qs}>; rel="next"'
        return json_reply(items, headers=headers)

    def r_paths_info(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        form = parse_qs(body.decode())
        paths = form.get("paths", [])
        if len(paths) > 1000:
            raise HubError(413, "too many paths (at most 1000 per call)")
        expand = form.get("expand", ["false"])[-1].lower() == "true"
        with self.hub.lock:
            repo = self._repo(match)
            head = self._commit_at(repo, match["rev"])
            out = []
            for path in paths:
                if path in head.files:
                    out.append(self._file_json(head.files[path], expand))
                elif any(p.startswith(path.rstrip("/") + "/") for p in head.files):
                    out.append(self._folder_json(path))
        return json_reply(out)

    def r_resolve(self, match: Any, query: dict[str, str], body: bytes) -> Reply:
        with self.hub.lock:
            repo = self._repo(match)
            head = self._commit_at(repo, match["rev"])
            path = unquote(match["path"])
            entry = head.files.get(path)
            if entry is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
            if entry.sha256 not in repo.contents:
                raise HubError(501, f"{path} is in the local Xet CAS; the fake cannot serve it")
            data = repo.contents[entry.sha256]
        etag = entry.sha256 if entry.lfs else entry.git_oid
        headers = {
            "X-Repo-Commit": head.oid,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        status = 200
        wanted = self.headers.get("Range")
        if wanted and (rng := re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())):
            first, last = rng.group(1), rng.group(2)
            if first == "":
                start, end = max(len(data) - int(last), 0), len(data) - 1
            else:
                start = int(first)
                end = min(int(last), len(data) - 1) if last else len(data) - 1
            if start >= len(data):
                return Reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        headers["Content-Length"] = str(len(data))
        return Reply(status, data, headers, "application/octet-stream")


# -- pytest fixtures ------------------------------------------------------------------------


@pytest.fixture(name="fake_hub")
def fake_hub_fixture() -> Iterator[FakeHub]:
    hub = FakeHub().start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture(name="hub_env")
def hub_env_fixture(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """Point huggingface_hub (in this process and in subprocesses) at ``fake_hub``."""
    home = tmp_path / "hf_home"
    home.mkdir()
    env = {
        "HF_ENDPOINT": fake_hub.url,
        "HF_TOKEN": fake_hub.token,
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    from huggingface_hub import constants

    # Values huggingface_hub froze at import time; HubPublisher reads HF_ENDPOINT itself.
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        fake_hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )  # hf_hub_url starts from this template, frozen at import with the endpoint of that time
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return fake_hub
