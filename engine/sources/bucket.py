"""``HttpSource``: HELM runs in a GCS bucket over HTTP (default: the public ``crfm-helm-public``).

Layout of the public bucket: project ``P`` lives at
``<bucket>/P/benchmark_output/``; Classic also at the bucket root ``benchmark_output/`` (older
tools) and both are tried, ``classic/`` first. ``base_url`` is ``scheme://host/<bucket>``,
optionally followed by an object prefix; a prefix ending in ``benchmark_output`` is the
benchmark root itself (``--benchmark`` then only names the project in the output).

- Release mode (``release`` given; ``"latest"`` by default): ``releases/R/runs_to_run_suites.json``
  maps run names to suites. ``latest`` lists ``releases/`` through the GCS JSON API
  (``storage/v1/b/<bucket>/o?prefix=..&delimiter=/``, paged by ``pageToken``) and takes the
  newest version (numeric comparison) whose index exists.
- Suite mode (``suite`` given): one run per sub-prefix of ``runs/S/`` (``eval_cache/`` and
  ``groups/`` skipped).
- ``schema_for(ref)``: ``releases/R/schema.json`` (else ``runs/S/schema.json``) under the
  run's root, fetched once per source object (one per worker and job execution); a 404 means
  the release has none. Unlike ``DirSource`` this does not look inside each run prefix, so an
  incomplete run directory becomes a failed run ("run_spec.json: not found") instead of being
  skipped silently.

Every path part is URL-quoted (run names hold ``:``, ``,``, ``=``, spaces). ``fetch`` downloads
the five files the converter reads into ``scratch``, in two phases of parallel downloads: the
small files first, so a missing ``stats.json`` fails the run before ``scenario_state.json`` is
fetched; then ``encryption_data.json`` (if it exists) when ``scenario_state.json`` holds an
``[encrypted_text_N]`` placeholder. It first removes an earlier run's download from the
``scratch`` folder it is given, so each folder holds one run at a time (a worker alternates two
folders to fetch the next run while converting one: ``prefetch``).
404 of a required file fails that run (``RunConversionError`` naming file and URL); network
trouble that outlasts the retries raises ``TransientError`` and fails the chunk, which the
coordinator (or ``resume``) retries. The source holds no state on disk: after a crash the
worker's scratch folder is swept and the run fetched again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from helmproc.engine.errors import ConfigError, RunConversionError, SourceError
from helmproc.engine.facts import RunRef
from helmproc.engine.helm.decrypt import holds_placeholder
from helmproc.engine.helm.file_names import (
    ENCRYPTION_DATA_FILE,
    NON_RUN_DIRS,
    PER_INSTANCE_STATS_FILE,
    RUN_SPEC_FILE,
    RUN_SPECS_INDEX,
    RUNS_INDEX,
    SCENARIO_FILE,
    SCENARIO_STATE_FILE,
    STATS_FILE,
)
from helmproc.engine.helm.schema_file import HelmSchema
from helmproc.engine.input_files import file_too_large
from helmproc.engine.safe_paths import unsafe_part
from helmproc.engine.sources.filters import SpecFacts, facts_by_name
from helmproc.engine.sources.folder import (
    BENCHMARK_OUTPUT,
    PUBLIC_BUCKET_URL,
    RunsIndex,
    SchemaCache,
    check_location,
    parse_runs_index,
    schema_place,
    version_key,
)
from helmproc.engine.sources.http_client import (
    ClientSettings,
    FileTooLargeError,
    HttpClient,
    HttpNotFoundError,
    HttpStatusError,
    redact,
)

DEFAULT_BASE_URL = PUBLIC_BUCKET_URL
LATEST = "latest"
# Projects whose output was also published at the bucket root (``benchmark_output/``).
ROOT_PREFIX_PROJECTS = frozenset({"classic"})
# The converter's inputs, smallest first; then optional files whose absence is fine.
OPTIONAL_FILES = (ENCRYPTION_DATA_FILE,)
# Fetch order: small files first, side by side, so a missing one fails the run before the
# large ones are fetched. ``encryption_data.json`` is asked for only when the downloaded
# ``scenario_state.json`` holds a placeholder: a probe per run (a 404 for all but GPQA/EWoK)
# cost ~5% of a job's CPU.
FETCH_PHASES = (
    (RUN_SPEC_FILE, SCENARIO_FILE, STATS_FILE),
    (PER_INSTANCE_STATS_FILE, SCENARIO_STATE_FILE),
)
FETCH_THREADS = 4
DEFAULT_PAGE_SIZE = 1000
MAX_LISTING_PAGES = 10_000
SPEC_FETCH_THREADS = 8


def is_url(text: str | None) -> bool:
    return bool(text) and str(text).startswith(("http://", "https://"))


def quote_name(name: str) -> str:
    """An object name as a URL path: each ``/``-separated part percent-quoted."""
    return "/".join(quote(part, safe="") for part in name.split("/"))


@dataclass(frozen=True)
class Bucket:
    """Where a bucket's objects and its JSON listing API are, from a base URL."""

    origin: str  # scheme://host[:port]
    name: str
    prefix: str  # object prefix under the bucket, "" or without surrounding slashes
    # the base URL's query (e.g. an access token), sent with every request; in memory only
    query: str = ""

    @classmethod
    def from_url(cls, base_url: str) -> Bucket:
        parts = urlsplit(base_url)
        segments = [s for s in parts.path.split("/") if s]
        if parts.scheme not in ("http", "https") or not parts.netloc or not segments:
            raise ConfigError(
                f"bucket URL {redact(base_url)!r} must look like https://host/<bucket>[/prefix]"
            )
        origin = f"{parts.scheme}://{parts.netloc}"
        return cls(origin, segments[0], "/".join(segments[1:]), parts.query)

    def object_url(self, name: str) -> str:
        url = f"{self.origin}/{quote(self.name, safe='')}/{quote_name(name)}"
        return f"{url}?{self.query}" if self.query else url

    def listing_url(self, prefix: str, page_token: str | None, page_size: int) -> str:
        query: dict[str, Any] = {"prefix": prefix, "delimiter": "/", "maxResults": page_size}
        if page_token:
            query["pageToken"] = page_token
        extra = f"&{self.query}" if self.query else ""
        return (
            f"{self.origin}/storage/v1/b/{quote(self.name, safe='')}/o?{urlencode(query)}{extra}"
        )

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))


@dataclass(frozen=True)
class Listing:
    """One level of a prefix: child "directory" names and object names with sizes."""

    dirs: tuple[str, ...]
    objects: tuple[tuple[str, int], ...]


class HttpSource:
    """One HELM project in a bucket (see the module docstring)."""

    kind = "http"

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        project: str,
        release: str | None = None,
        suite: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        client: ClientSettings | None = None,
    ) -> None:
        if release and suite:
            raise ConfigError("give either --release or --suite, not both")
        if not project:
            raise ConfigError("the bucket source needs --benchmark (a HELM project, e.g. lite)")
        self.base_url = base_url.rstrip("/")
        self.bucket = Bucket.from_url(self.base_url)
        self.project = project
        self.suite = suite
        self.release = None if suite else (release or LATEST)
        self.page_size = page_size
        self.settings = client or ClientSettings()
        self.client = HttpClient(self.settings)
        self._indexes: dict[str, RunsIndex | None] = {}
        self._schemas = SchemaCache()

    @property
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "project": self.project,
            "release": self.release,
            "suite": self.suite,
            "page_size": self.page_size,
            "client": self.settings.to_json(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HttpSource:
        return cls(
            config["base_url"],
            project=config["project"],
            release=config.get("release"),
            suite=config.get("suite"),
            page_size=config.get("page_size") or DEFAULT_PAGE_SIZE,
            client=ClientSettings.from_json(config.get("client")),
        )

    # -- where things are ------------------------------------------------------------------
    def roots(self) -> list[str]:
        """Object prefixes of this project's ``benchmark_output/``, in the order tried."""
        if self.bucket.prefix.rsplit("/", 1)[-1] == BENCHMARK_OUTPUT:
            return [self.bucket.prefix]
        roots = [self.bucket.join(self.project, BENCHMARK_OUTPUT)]
        if self.project in ROOT_PREFIX_PROJECTS:
            roots.append(self.bucket.join(BENCHMARK_OUTPUT))
        return roots

    def url(self, name: str) -> str:
        return self.bucket.object_url(name)

    # -- listing ---------------------------------------------------------------------------
    def list_level(self, prefix: str) -> Listing:
        """Every page of the JSON API listing of ``prefix`` (one level, ``delimiter=/``)."""
        prefix = prefix.rstrip("/") + "/"
        dirs: list[str] = []
        objects: list[tuple[str, int]] = []
        token: str | None = None
        for _ in range(MAX_LISTING_PAGES):
            url = self.bucket.listing_url(prefix, token, self.page_size)
            try:
                page = self.client.get_json(url)
            except HttpNotFoundError:
                raise SourceError(
                    f"listing {prefix} needs the GCS JSON API, which {self.bucket.origin} does "
                    f"not serve (HTTP 404 at {redact(url)}): a plain HTTP mirror cannot list, so "
                    "pass --release R (or --suite S) to name what to read"
                ) from None
            if not isinstance(page, dict):
                raise SourceError(f"GET {redact(url)}: expected a JSON object listing")
            for child in page.get("prefixes") or ():
                if isinstance(child, str) and child.startswith(prefix):
                    dirs.append(child[len(prefix) :].strip("/"))
            for item in page.get("items") or ():
                if isinstance(item, dict) and str(item.get("name", "")).startswith(prefix):
                    size = str(item.get("size") or "0")
                    name = item["name"][len(prefix) :]
                    objects.append((name, int(size) if size.isdigit() else 0))
            token = page.get("nextPageToken") or None
            if token is None:
                return Listing(tuple(sorted(set(dirs))), tuple(sorted(set(objects))))
        raise SourceError(f"listing {prefix!r} did not end after {MAX_LISTING_PAGES} pages")

    def releases(self) -> list[str]:
        """Release names under the first root that has any, newest first."""
        for root in self.roots():
            names = list(self.list_level(f"{root}/releases").dirs)
            if names:
                return sorted(names, key=version_key, reverse=True)
        return []

    def suites(self) -> list[str]:
        """Suite names under the first root that has any, newest first."""
        for root in self.roots():
            names = [n for n in self.list_level(f"{root}/runs").dirs if n not in NON_RUN_DIRS]
            if names:
                return sorted(names, key=version_key, reverse=True)
        return []

    # -- discovery -------------------------------------------------------------------------
    def discover(self) -> list[RunRef]:
        if self.suite is not None:
            return self._suite_runs(self.suite)
        if self.release == LATEST:
            return self._latest_release_runs()
        assert self.release is not None
        for root in self.roots():
            refs = self._release_runs(root, self.release)
            if refs is not None:
                return refs
        tried = ", ".join(
            self.url(f"{root}/releases/{self.release}/{RUNS_INDEX}") for root in self.roots()
        )
        raise SourceError(
            f"release {self.release!r} of {self.project!r} not found (404 at {tried}); "
            f"`helmproc list releases --benchmark {self.project}` shows the releases"
        )

    def _latest_release_runs(self) -> list[RunRef]:
        for root in self.roots():
            names = sorted(self.list_level(f"{root}/releases").dirs, key=version_key, reverse=True)
            for name in names:
                refs = self._release_runs(root, name)
                if refs is not None:
                    return refs
        raise SourceError(
            f"no release with {RUNS_INDEX} found for {self.project!r} under "
            f"{', '.join(self.url(r + '/releases/') for r in self.roots())}; the project may "
            f"publish suites only: `helmproc list suites --benchmark {self.project}`, then --suite"
        )

    def _runs_index(self, root: str, release: str) -> RunsIndex | None:
        """The release's index under ``root`` (once per source), or None if it has none."""
        url = self.url(f"{root}/releases/{release}/{RUNS_INDEX}")
        if url not in self._indexes:
            with tempfile.TemporaryDirectory(prefix="helmproc-index-") as tmp:
                path = Path(tmp) / RUNS_INDEX
                try:
                    self.client.download(url, path)
                except HttpNotFoundError:
                    self._indexes[url] = None
                else:
                    self._indexes[url] = parse_runs_index(path.read_bytes(), redact(url))
        return self._indexes[url]

    def _release_runs(self, root: str, release: str) -> list[RunRef] | None:
        """The release's runs, or None if its index does not exist under ``root``."""
        index = self._runs_index(root, release)
        if index is None:
            return None
        return sorted(
            RunRef(self.project, suite, name, release, f"{root}/runs/{suite}/{name}")
            for name, suite in index.suites.items()
        )

    def _suite_runs(self, suite: str) -> list[RunRef]:
        for root in self.roots():
            listed = self.list_level(f"{root}/runs/{suite}").dirs
            names = [n for n in listed if n not in NON_RUN_DIRS]
            if names:
                return sorted(
                    RunRef(self.project, suite, name, None, f"{root}/runs/{suite}/{name}")
                    for name in names
                )
        raise SourceError(
            f"suite {suite!r} of {self.project!r} not found: nothing listed under "
            f"{', '.join(self.url(r + f'/runs/{suite}/') for r in self.roots())}; "
            f"`helmproc list suites --benchmark {self.project}` shows the suites"
        )

    # -- run specs (for --adapter-method / --model) ----------------------------------------
    def spec_facts(self, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]:
        out: dict[RunRef, SpecFacts | None] = {}
        indexes: dict[tuple[str, str], dict[str, SpecFacts | None]] = {}
        missing: list[RunRef] = []
        for ref in refs:
            root = _root_of(ref)
            if ref.release is not None and root is not None:
                key = (root, ref.release)
                if key not in indexes:
                    indexes[key] = self._specs_index(root, ref.release)
                facts = indexes[key].get(ref.run_name)
                if facts is not None:
                    out[ref] = facts
                    continue
            missing.append(ref)
        if missing:
            with ThreadPoolExecutor(SPEC_FETCH_THREADS) as pool:
                found = pool.map(self._run_spec_facts, missing)
                out.update(zip(missing, found, strict=True))
        return out

    def _specs_index(self, root: str, release: str) -> dict[str, SpecFacts | None]:
        try:
            url = self.url(f"{root}/releases/{release}/{RUN_SPECS_INDEX}")
            return facts_by_name(self.client.get_json(url))
        except (HttpNotFoundError, SourceError):
            return {}

    def _run_spec_facts(self, ref: RunRef) -> SpecFacts | None:
        if unsafe_part(ref.location) is not None:
            return None  # a bad index entry: not read (the run fails at fetch, if kept)
        try:
            url = self.url(f"{ref.location}/{RUN_SPEC_FILE}")
            return SpecFacts.from_spec(self.client.get_json(url))
        except (HttpNotFoundError, SourceError):
            return None

    # -- schema.json -----------------------------------------------------------------------
    def schema_for(self, ref: RunRef) -> HelmSchema | None:
        """The release's (else suite's) ``schema.json`` for ``ref``, fetched once per
        source object; None on 404 (see ``folder`` for the rules)."""
        root = _root_of(ref)
        place = schema_place(ref)
        if root is None or place is None:
            return None
        url = self.url(f"{root}/{place}")

        def read() -> bytes | None:
            with tempfile.TemporaryDirectory(prefix="helmproc-schema-") as tmp:
                path = Path(tmp) / "schema.json"
                try:
                    self.client.download(url, path)
                except HttpNotFoundError:
                    return None
                except HttpStatusError as exc:
                    raise RunConversionError(place, str(exc)) from None
                return path.read_bytes()

        return self._schemas.get(f"{root}/{place}", place, read)

    # -- fetching --------------------------------------------------------------------------
    def fetch(self, ref: RunRef, scratch: Path, *, max_file_bytes: int | None = None) -> Path:
        check_location(ref)
        root = _root_of(ref)
        if ref.release is not None and root is not None:
            index = self._runs_index(root, ref.release)
            problem = index.problem(ref.run_name) if index is not None else None
            if problem is not None:
                raise RunConversionError(RUNS_INDEX, problem)
        downloads = scratch / "http"
        run_dir = downloads / hashlib.sha256(ref.key.encode()).hexdigest()[:24]
        if downloads.is_dir():  # one run per folder: drop an earlier run's files
            for old in downloads.iterdir():
                if old != run_dir:
                    shutil.rmtree(old, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        pool = fetch_pool()
        for phase in FETCH_PHASES:
            # The files of a phase download side by side (latency, not bandwidth, dominates
            # small files); every one finishes before an error is raised, so no thread writes
            # into scratch after fetch returns. Errors are reported in file order.
            futures = [
                pool.submit(self._fetch_file, ref, f, run_dir, max_file_bytes) for f in phase
            ]
            wait(futures)
            for future in futures:
                future.result()
        if holds_placeholder(run_dir / SCENARIO_STATE_FILE):
            self._fetch_file(ref, ENCRYPTION_DATA_FILE, run_dir, max_file_bytes)
        return run_dir

    def _fetch_file(
        self, ref: RunRef, file: str, run_dir: Path, max_file_bytes: int | None = None
    ) -> None:
        url = self.url(f"{ref.location}/{file}")
        try:
            self.client.download(url, run_dir / file, max_bytes=max_file_bytes)
        except FileTooLargeError as exc:
            raise RunConversionError(file, file_too_large(exc.limit, exc.size)) from None
        except HttpNotFoundError:
            if file in OPTIONAL_FILES:
                return
            raise RunConversionError(file, f"not found (HTTP 404) at {redact(url)}") from None
        except HttpStatusError as exc:
            raise RunConversionError(file, str(exc)) from None


_pool: ThreadPoolExecutor | None = None
_pool_pid = 0


def fetch_pool() -> ThreadPoolExecutor:
    """This process's download threads (like the session: one per process, never forked)."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="helmproc-fetch")
        _pool_pid = os.getpid()
    return _pool


def _root_of(ref: RunRef) -> str | None:
    tail = f"/runs/{ref.suite}/{ref.run_name}"
    return ref.location[: -len(tail)] if ref.location.endswith(tail) else None
