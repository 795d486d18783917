"""HubPublisher: shards into a Hugging Face dataset repo, one ``create_commit`` per batch.

How it works: on the first write it creates the dataset repo if missing (``--private`` applies
only then), creates the branch if ``--revision`` names a new one, and makes sure the repo's
``.gitattributes`` stores ``*.parquet`` with LFS, so every shard's sha256 is visible through
``get_paths_info`` (``lfs.sha256``). Each ``publish`` is one commit of up to ``max_files``
shards (plus, when the committer hands one over, the dataset card ``README.md``) with
``parent_commit`` set to the head it last saw. Its own retry loop (``hub_retry``) around the
commit: a 412 (someone else committed) re-reads the head and commits again; a 429 waits what
the Hub asked (``Retry-After``, ``RateLimit``, or the hourly commit quota); a 5xx or a lost
connection is *ambiguous*, so before sending again it compares the remote sha256 of every path
with the journaled one and, if the commit landed, returns that commit instead of re-sending.

Across a crash: shard paths are deterministic and commits are atomic on the Hub, so the remote
holds either all of a batch or none of it. On resume ``published_commit`` asks the Hub for the
paths' sha256 and, when all match, returns the commit that holds them (the coordinator journals
``uploaded`` without sending anything). A batch that is only partly present (an older run of
the job, a manual upload) is committed again whole; the client drops the files whose remote
oid already matches, so only the missing ones travel.

One writer at a time (the Hub has no lock): ``pin_head`` / ``commit_on`` fix the head the
ledger was read at, and before any commit whose parent is a head neither that nor this
publisher's own last commit made, ``guard`` runs (the coordinator re-reads the runs another
job added and stops on an overlap). ``replace_files`` adds and deletes in one commit
(compaction, repair); ``list_files`` is the tree listing, ``parquet_rows`` reads a footer.

The token comes from ``HF_TOKEN`` or the huggingface_hub login (``get_token()``) and lives only
in this object: it is not in ``config`` (which the journal stores), not in ``repr``, and every
error this module raises has it scrubbed from its text and is raised ``from None`` so the
client's request objects (which carry the auth header) are not attached.

Every call to the Hub runs through ``stop_waits.call``: after a stop request (the first
Ctrl-C) a call waiting on the Hub, or about to start, raises ``WaitInterrupted`` within 0.1 s,
even if the Hub stalls; what it was for is left to ``resume`` (a commit abandoned that way may
still land: resume finds it with ``published_commit`` before sending anything again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, urlsplit

from helmproc.engine import stop_waits
from helmproc.engine.chunks.shards import shard_problem
from helmproc.engine.dataset_layout import CARD_PATH
from helmproc.engine.errors import ConfigError, PublishError, UnreachableError, WaitInterrupted
from helmproc.engine.facts import ShardFact
from helmproc.engine.publish.folder import FileEntry
from helmproc.engine.publish.hub_failures import (
    RETRYABLE,
    Failure,
    FailureKind,
    HubAuthError,
    HubRequestError,
    HubTokenMissingError,
    HubUnavailableError,
    RetryPolicy,
    classify,
    first_line,
    scrub,
)
from helmproc.engine.publish.pacer import DEFAULT_HUB_COMMITS_PER_HOUR

GITATTRIBUTES_PATH = ".gitattributes"
PARQUET_LFS_RULE = "*.parquet filter=lfs diff=lfs merge=lfs -text"
PATHS_INFO_BATCH = 500  # the Hub allows 1000 paths per call; the client itself uses 500
PARQUET_TAIL_BYTES = 8
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
DEFAULT_UPLOAD_THREADS = 5
TOKEN_HINT = "set HF_TOKEN to a write token or run `hf auth login`"

T = TypeVar("T")


def _lfs_rule_present(text: str) -> bool:
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("*.parquet", "**/*.parquet") and "filter=lfs" in parts[1:]:
            return True
    return False


class HubPublisher:
    """A Hugging Face dataset repo (``repo_id`` at branch ``revision``) as a destination."""

    kind = "hub"
    max_commits_per_hour: float | None = DEFAULT_HUB_COMMITS_PER_HOUR

    def __init__(
        self,
        repo_id: str,
        revision: str = "main",
        private: bool = False,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        upload_threads: int = DEFAULT_UPLOAD_THREADS,
    ) -> None:
        from huggingface_hub import HfApi, constants, get_token
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the client's tqdm bars would interleave with ours on stderr

        if not REPO_ID_RE.match(repo_id or ""):
            raise ConfigError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
        if not revision or revision.startswith("refs/"):
            raise ConfigError(f"--revision must name a branch, got {revision!r}")
        chosen = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        parts = urlsplit(chosen)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Hub endpoint is not an http(s) URL: {parts.scheme}://...")
        if parts.username or parts.password:
            raise ConfigError("the Hub endpoint must not hold credentials; put them in HF_TOKEN")
        self.repo_id = repo_id
        self.revision = revision
        self.private = private
        self.endpoint = chosen.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.upload_threads = upload_threads
        self._token: str | None = token if token is not None else get_token()
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self._setup_lock = threading.Lock()  # first-write setup runs once
        self._lock = threading.Lock()  # guards the cached head
        self._ready = False
        self._head: str | None = None
        # Called before a commit whose parent is not a head this publisher knows (pinned when
        # the ledger was read, or made by its own last commit): someone else committed, so it
        # re-reads what they published and raises DestinationConflictError on an overlap.
        self.guard: Callable[[], None] | None = None
        self._known_head: str | None = None

    def __repr__(self) -> str:
        return f"HubPublisher({self.label})"

    @property
    def label(self) -> str:
        return f"hf://datasets/{self.repo_id}@{self.revision} ({self.endpoint})"

    @property
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "private": self.private,
            "endpoint": self.endpoint,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> HubPublisher:
        return cls(
            config["repo_id"],
            config.get("revision", "main"),
            bool(config.get("private", False)),
            endpoint=config.get("endpoint"),
            **kwargs,
        )

    # -- errors ------------------------------------------------------------------------
    def _where(self) -> str:
        return f"datasets/{self.repo_id}@{self.revision} on {self.endpoint}"

    def _back_off(self, operation: str, failure: Failure, failures: int) -> int:
        """One more failed attempt of ``operation``: raise once attempts are used up, else
        wait the policy's backoff (saying so); returns the new count."""
        failures += 1
        if failures >= self.retry.max_attempts:
            self._raise(operation, failure)
        self.retry.wait(
            self.retry.backoff_s(failures),
            f"{operation}: {failure.kind.value} (attempt {failures} of {self.retry.max_attempts})",
        )
        return failures

    def _raise(self, operation: str, failure: Failure, hint: str = "") -> NoReturn:
        detail = scrub(first_line(failure.detail), self._token)
        text = f"{operation} on {self._where()}: {failure.kind.value}"
        text += f" (HTTP {failure.status})" if failure.status else ""
        text += f": {detail}"
        if failure.kind is FailureKind.UNREACHABLE:
            host = urlsplit(self.endpoint).hostname or self.endpoint
            raise UnreachableError(host, "use --to DIR to write a local folder instead") from None
        if failure.kind is FailureKind.AUTH:
            raise HubAuthError(f"{text}; {hint or TOKEN_HINT}") from None
        if failure.kind in RETRYABLE:
            raise HubUnavailableError(
                f"{text}; {hint or 'gave up after retrying; `helmproc resume` continues'}"
            ) from None
        if failure.kind is FailureKind.NOT_FOUND:
            hint = hint or "check --repo-id / --revision and that the token may read the repo"
        raise HubRequestError(f"{text}" + (f"; {hint}" if hint else "")) from None

    def require_token(self) -> None:
        """Fail early (before any work) when there is no token to write with."""
        self._require_token("publish")

    def require_resolvable(self) -> None:
        """Fail early (before any work) when the endpoint's name does not resolve: offline.
        Only the resolver is asked; the Hub itself is contacted when the job starts."""
        parts = urlsplit(self.endpoint)
        host = parts.hostname or self.endpoint
        try:
            socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
        except socket.gaierror:
            raise UnreachableError(host, "use --to DIR to write a local folder instead") from None

    def _require_token(self, operation: str) -> None:
        if not self._token:
            raise HubTokenMissingError(
                f"{operation} on {self._where()}: no Hugging Face token; {TOKEN_HINT}"
            )

    # -- reads (idempotent: retried on 5xx / network / 429) ------------------------------
    def _read(self, operation: str, call: Callable[[], T]) -> T:
        failures = 0
        waited = 0.0
        while True:
            try:
                return stop_waits.call(call, operation)
            except WaitInterrupted:
                raise  # a stop request: not the Hub's failure
            except Exception as exc:
                failure = classify(exc, self.retry)
                if failure.kind is FailureKind.RATE_LIMITED:
                    wait = failure.wait_s or self.retry.backoff_s(1)
                    if waited + wait > self.retry.max_rate_wait_s:
                        self._raise(operation, failure)
                    waited += wait
                    self.retry.wait(wait, f"{operation}: {failure.kind.value}")
                    continue
                if failure.kind in RETRYABLE:
                    failures = self._back_off(operation, failure, failures)
                    continue
                self._raise(operation, failure)

    def _is_not_found(self, exc: BaseException) -> bool:
        return classify(exc, self.retry).kind is FailureKind.NOT_FOUND

    def _read_head(self) -> str:
        info = self._read(
            "read the branch head",
            lambda: self._api.repo_info(
                self.repo_id, repo_type="dataset", revision=self.revision
            ),
        )
        if not info.sha:
            raise HubRequestError(f"read the branch head on {self._where()}: no commit sha")
        return info.sha

    def _remote_files(self, paths: Sequence[str]) -> dict[str, Any]:
        """Path -> RepoFile for the paths present at the branch head (missing ones absent)."""
        from huggingface_hub.hf_api import RepoFile

        out: dict[str, Any] = {}
        for start in range(0, len(paths), PATHS_INFO_BATCH):
            batch = list(paths[start : start + PATHS_INFO_BATCH])
            infos = self._read(
                "read paths-info",
                lambda b=batch: self._api.get_paths_info(  # type: ignore[misc]
                    self.repo_id, b, repo_type="dataset", revision=self.revision, expand=True
                ),
            )
            out.update({i.path: i for i in infos if isinstance(i, RepoFile)})
        return out

    def _fetch(self, path: str, first: int | None = None, last: int | None = None) -> bytes:
        """Bytes of ``path`` at the branch head; ``first``/``last`` make it a range request."""
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        # Built here, not with hf_hub_url: that starts from a template frozen at import time.
        url = (
            f"{self.endpoint}/datasets/{self.repo_id}/resolve/"
            f"{quote(self.revision, safe='')}/{quote(path)}"
        )
        headers = build_hf_headers(token=self._token or False)
        if first is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"

        def get() -> bytes:
            response = get_session().get(url, headers=headers)
            hf_raise_for_status(response)
            return response.content

        data = self._read(f"download {path}", get)
        if first is not None and last is not None and len(data) > last - first + 1:
            data = data[first : last + 1]  # the server ignored the range
        return data

    def _remote_sha256(self, entry: Any) -> str:
        if entry.lfs is not None:
            return str(entry.lfs.sha256)
        return hashlib.sha256(self._fetch(entry.path)).hexdigest()  # a small regular file

    def _remote_row_count(self, path: str, size: int) -> int:
        """Rows of a remote Parquet file from its footer, fetched with two range requests."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if size < 12:
            raise ValueError("too small to be Parquet")
        tail = self._fetch(path, size - PARQUET_TAIL_BYTES, size - 1)
        if len(tail) != PARQUET_TAIL_BYTES or tail[4:] != b"PAR1":
            raise ValueError("no Parquet footer magic")
        (footer_len,) = struct.unpack("<I", tail[:4])
        if footer_len + PARQUET_TAIL_BYTES + 4 > size:
            raise ValueError("Parquet footer length exceeds the file")
        footer = self._fetch(path, size - PARQUET_TAIL_BYTES - footer_len, size - 9)
        meta = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
        return int(meta.num_rows)

    # -- setup (first write only) ------------------------------------------------------
    def prepare(self) -> None:
        """Create the repo / branch and the LFS rule now (the committer calls this at start)."""
        self._ensure_repo()

    def _ensure_repo(self) -> None:
        with self._setup_lock:
            if self._ready:
                return
            self._require_token("create or open the dataset repo")
            self._read(
                "create the dataset repo",
                lambda: self._api.create_repo(
                    self.repo_id, repo_type="dataset", private=self.private, exist_ok=True
                ),
            )
            if self.revision != "main":
                self._read(
                    f"create branch {self.revision}",
                    lambda: self._api.create_branch(
                        self.repo_id, branch=self.revision, repo_type="dataset", exist_ok=True
                    ),
                )
            self._ensure_parquet_lfs()
            self._ready = True

    def _ensure_parquet_lfs(self) -> None:
        """Make ``*.parquet`` LFS files so their sha256 shows in paths-info (one commit, once)."""
        entries = self._remote_files([GITATTRIBUTES_PATH])
        text = ""
        if GITATTRIBUTES_PATH in entries:
            text = self._fetch(GITATTRIBUTES_PATH).decode("utf-8", errors="replace")
        if _lfs_rule_present(text):
            return
        if text and not text.endswith("\n"):
            text += "\n"
        data = (text + PARQUET_LFS_RULE + "\n").encode()
        self._commit(
            [(GITATTRIBUTES_PATH, data)],
            {GITATTRIBUTES_PATH: hashlib.sha256(data).hexdigest()},
            "helmproc: store *.parquet files with LFS",
        )

    # -- the commit loop ---------------------------------------------------------------
    def _current_head(self) -> str:
        with self._lock:
            head = self._head
        if head is None:
            head = self._read_head()
            with self._lock:
                self._head = head
        return head

    def _set_head(self, head: str | None) -> None:
        with self._lock:
            self._head = head

    def _commit(
        self,
        files: Sequence[tuple[str, Path | bytes]],
        expected: dict[str, str],
        message: str,
        delete: Sequence[str] = (),
    ) -> str:
        """One commit of ``files`` (path in repo, local file or bytes) and deletions of
        ``delete``; returns its oid."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        operation = f"commit {len(files)} file(s) ({message})"
        failures = 0
        stale = 0
        waited = 0.0
        while True:
            parent = self._current_head()
            self._check_guard(parent)
            ops = [
                CommitOperationAdd(
                    path_in_repo=path, path_or_fileobj=src if isinstance(src, bytes) else str(src)
                )
                for path, src in files
            ] + [CommitOperationDelete(path_in_repo=path) for path in delete]
            try:
                info = stop_waits.call(
                    lambda ops=ops, parent=parent: self._api.create_commit(  # type: ignore[misc]
                        self.repo_id,
                        ops,
                        commit_message=message,
                        repo_type="dataset",
                        revision=self.revision,
                        parent_commit=parent,
                        num_threads=self.upload_threads,
                    ),
                    operation,
                )
            except WaitInterrupted:
                raise  # a stop request: the commit may still land; resume checks first
            except Exception as exc:
                failure = classify(exc, self.retry)
                if failure.kind is FailureKind.STALE_PARENT:
                    stale += 1
                    if stale > self.retry.max_attempts:
                        self._raise(operation, failure, "the branch keeps moving; resume later")
                    self._set_head(None)  # someone else committed: re-read the head
                    continue
                if failure.ambiguous:
                    landed = self._landed(expected) if not delete else self._deleted(delete)
                    if landed is not None:  # applied, only the reply was lost: do not re-send
                        self._set_head(None)
                        return landed
                    failures = self._back_off(operation, failure, failures)
                    continue
                if failure.kind is FailureKind.RATE_LIMITED:
                    wait = failure.wait_s or self.retry.backoff_s(1)
                    if waited + wait > self.retry.max_rate_wait_s:
                        self._raise(operation, failure, "rate limited for too long; resume later")
                    waited += wait
                    self.retry.wait(wait, f"{operation}: {failure.kind.value}")
                    continue
                self._raise(operation, failure)
            self._set_head(info.oid)
            with self._lock:
                self._known_head = str(info.oid)
            return str(info.oid)

    def _check_guard(self, parent: str) -> None:
        """Run ``guard`` once for each head that neither the ledger nor this publisher made."""
        if self.guard is None:
            return
        with self._lock:
            known = self._known_head
        if parent == known:
            return
        self.guard()
        with self._lock:
            self._known_head = parent

    def _deleted(self, delete: Sequence[str]) -> str | None:
        """After an ambiguous failure of a commit that deletes: the head if it landed."""
        try:
            present = self._remote_files(sorted(delete))
        except PublishError:
            return None
        return None if present else self._read_head()

    def _landed(self, expected: dict[str, str]) -> str | None:
        """The commit holding every path with its expected sha256, or None (not, or unknown)."""
        try:
            return self._holding_commit(expected)
        except PublishError:
            return None  # could not tell; the retried commit is safe (parent + unchanged oids)

    def _holding_commit(self, expected: dict[str, str]) -> str | None:
        entries = self._remote_files(sorted(expected))
        commits: set[str] = set()
        for path, sha in expected.items():
            entry = entries.get(path)
            if entry is None or self._remote_sha256(entry) != sha:
                return None
            if entry.last_commit is not None:
                commits.add(str(entry.last_commit.oid))
        if len(commits) == 1:
            return commits.pop()
        return self._read_head()

    # -- the Publisher interface -------------------------------------------------------
    def publish(
        self, staging: Path, shards: Sequence[ShardFact], message: str, card: str | None = None
    ) -> str:
        files: list[tuple[str, Path | bytes]] = []
        expected: dict[str, str] = {}
        for fact in shards:
            src = staging / fact.path
            if not src.exists():
                raise PublishError(f"staged shard is missing: {src}")
            files.append((fact.path, src))
            expected[fact.path] = fact.sha256
        if card is not None:
            data = card.encode("utf-8")
            files.append((CARD_PATH, data))
            expected[CARD_PATH] = hashlib.sha256(data).hexdigest()
        if not files:
            return self._current_head()
        self._ensure_repo()
        return self._commit(files, expected, message)

    def write_card(self, text: str) -> None:
        self._ensure_repo()
        data = text.encode("utf-8")
        self._commit(
            [(CARD_PATH, data)],
            {CARD_PATH: hashlib.sha256(data).hexdigest()},
            "helmproc: update dataset card",
        )

    def published_commit(self, shards: Sequence[ShardFact]) -> str | None:
        try:
            return self._holding_commit({fact.path: fact.sha256 for fact in shards})
        except HubRequestError:
            # a repo or branch that does not exist yet holds nothing
            if self._repo_missing():
                return None
            raise

    def _repo_missing(self) -> bool:
        try:
            stop_waits.call(
                lambda: self._api.repo_info(
                    self.repo_id, repo_type="dataset", revision=self.revision
                ),
                "read the repo",
            )
        except WaitInterrupted:
            raise
        except Exception as exc:
            return self._is_not_found(exc)
        return False

    def check(self, shard: ShardFact) -> str | None:
        return self.check_all([shard])[shard.path]

    def check_all(self, shards: Sequence[ShardFact]) -> dict[str, str | None]:
        """Path -> None if the repo holds the shard intact, else what is wrong with it."""
        try:
            entries = self._remote_files([fact.path for fact in shards])
        except HubRequestError as exc:
            if self._repo_missing():
                return {fact.path: f"missing ({self._where()} not found)" for fact in shards}
            raise exc from None
        out: dict[str, str | None] = {}
        for fact in shards:
            entry = entries.get(fact.path)
            out[fact.path] = self._shard_problem(fact, entry)
        return out

    def _shard_problem(self, fact: ShardFact, entry: Any) -> str | None:
        """``shard_problem`` of the repo's copy (``entry``: its RepoFile, None if absent)."""
        if entry is None:
            return shard_problem(fact, None, lambda: "")
        return shard_problem(
            fact,
            entry.size,
            lambda: self._remote_sha256(entry),
            lambda: self._remote_row_count(fact.path, entry.size),
        )

    # -- the destination as a dataset (ledger, verify, compaction) ----------------------
    def pin_head(self) -> str | None:
        """Read the branch head now and commit on top of it from here on (None: no repo
        yet): a later commit by anyone else then makes ours fail with 412 and ``guard`` run."""
        try:
            head = self._read_head()
        except HubRequestError:
            if self._repo_missing():
                return None
            raise
        self._set_head(head)
        with self._lock:
            self._known_head = head
        return head

    def parquet_rows(self, path: str, size: int) -> int:
        """Rows of a Parquet file of the repo, from its footer (two range requests)."""
        return self._remote_row_count(path, size)

    def commit_on(self, head: str) -> None:
        """Commit on top of ``head`` (the head a ledger was read at), not the current one."""
        self._set_head(head)
        with self._lock:
            self._known_head = head

    def list_files(self, prefix: str = "") -> dict[str, FileEntry]:
        from huggingface_hub.hf_api import RepoFile

        revision = self._current_head() if self._head is not None else self.revision

        def listing() -> list[Any]:
            return list(
                self._api.list_repo_tree(
                    self.repo_id,
                    path_in_repo=prefix or None,
                    recursive=True,
                    expand=False,
                    revision=revision,
                    repo_type="dataset",
                )
            )

        try:
            entries = self._read(f"list {prefix or 'the repo'}", listing)
        except HubRequestError:
            if self._repo_missing() or not prefix or self._folder_missing(prefix):
                return {}
            raise
        out: dict[str, FileEntry] = {}
        for entry in entries:
            if isinstance(entry, RepoFile):
                sha = str(entry.lfs.sha256) if entry.lfs is not None else None
                out[entry.path] = FileEntry(int(entry.size), sha)
        return dict(sorted(out.items()))

    def _folder_missing(self, prefix: str) -> bool:
        try:
            stop_waits.call(
                lambda: self._api.get_paths_info(
                    self.repo_id, [prefix], repo_type="dataset", revision=self.revision
                ),
                f"read paths-info of {prefix}",
            )
        except WaitInterrupted:
            raise
        except Exception as exc:
            return self._is_not_found(exc)
        return True  # listed nothing, so nothing is there

    def read_bytes(self, path: str) -> bytes:
        return self._fetch(path)

    def local_path(self, path: str) -> Path | None:
        return None

    def replace_files(
        self, add: Sequence[tuple[str, Path]], delete: Sequence[str], message: str
    ) -> str:
        from helmproc.engine.chunks.shards import sha256_file

        self._ensure_repo()
        expected = {rel: sha256_file(src) for rel, src in add}
        return self._commit(list(add), expected, message, delete=delete)

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """The Hub has no lock: one writer at a time is kept by the optimistic ``guard``
        (every commit names its parent; a moved branch is re-read before committing)."""
        yield
