"""Sources from what a user names, and from what a job recorded.

``make_source`` is the one way from a user's request (a folder or a bucket URL, projects,
release, suite, filters) to a source; ``list_releases`` / ``list_suites`` list what such a
request could read. A job records its source as ``source.config`` (a JSON-able dict with a
``kind``); workers and ``resume`` rebuild the same source from it with ``source_from_config``
(``SOURCE_KINDS``: the one table from a recorded ``kind`` to its class). A new kind of source
is one class with ``kind``, ``config`` and ``from_config`` plus one line in ``SOURCE_KINDS``.
Stateless (listing only reads): nothing here survives a crash or needs to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helmproc.engine.errors import ConfigError
from helmproc.engine.helm.file_names import RUNS_INDEX
from helmproc.engine.sources.bucket import (
    BENCHMARK_OUTPUT,
    DEFAULT_BASE_URL,
    LATEST,
    Bucket,
    HttpSource,
    is_url,
)
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import (
    DirSource,
    MultiSource,
    Source,
    folder_problem,
    project_for_folder,
    version_key,
)

# ftp://, gs://, s3://, file://...: schemes a --source cannot be (only http(s) is read)
OTHER_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _multi_from_config(config: dict[str, Any]) -> Source:
    return MultiSource([source_from_config(part) for part in config["parts"]])


SOURCE_KINDS: Mapping[str, Callable[[dict[str, Any]], Source]] = {
    DirSource.kind: DirSource.from_config,
    HttpSource.kind: HttpSource.from_config,
    MultiSource.kind: _multi_from_config,
}


def source_from_config(config: dict[str, Any]) -> Source:
    """Rebuild a source from its recorded config (in a worker, or on resume)."""
    if config.get("filters") is not None:
        inner = source_from_config({k: v for k, v in config.items() if k != "filters"})
        return FilteredSource(inner, RunFilters.from_json(config["filters"]))
    kind = config.get("kind")
    factory = SOURCE_KINDS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ConfigError(f"unknown source kind {kind!r} in job config")
    return factory(config)


def project_from_url(base_url: str) -> str | None:
    """``lite`` from ``https://host/bucket/lite/benchmark_output``, else None."""
    parts = Bucket.from_url(base_url).prefix.split("/")
    if len(parts) >= 2 and parts[-1] == BENCHMARK_OUTPUT:
        return parts[-2]
    return None


def make_source(
    location: str | None,
    benchmarks: list[str] | None = None,
    release: str | None = None,
    suite: str | None = None,
    filters: RunFilters | None = None,
) -> Source:
    """The source a user asked for (``helmproc run --help``: ``--source``, ``--benchmark``...).

    No ``location`` or an http(s) URL: the bucket, one ``HttpSource`` per benchmark (release
    ``latest`` unless ``release``/``suite``; the project may come from the URL). Otherwise a
    local ``DirSource`` (one project, named by ``project_for_folder``). Several projects become
    a ``MultiSource``; filters wrap the result. Another URL scheme is refused.
    """
    names = list(dict.fromkeys(b for b in (benchmarks or []) if b))
    if location is not None and not is_url(location):
        scheme = OTHER_SCHEME.match(location)
        if scheme:
            raise ConfigError(
                f"--source {location}: unsupported scheme {scheme.group(1)}:// (use a local "
                "folder or an http(s) URL)"
            )
    if location is None or is_url(location):
        base = location or DEFAULT_BASE_URL
        if not names:
            derived = project_from_url(base)
            if derived is None:
                raise ConfigError(
                    "the bucket source needs --benchmark (a HELM project such as lite, mmlu, "
                    "classic); pass it once per project"
                )
            names = [derived]
        parts: list[Source] = [
            HttpSource(base, project=name, release=release, suite=suite) for name in names
        ]
    else:
        if len(names) > 1:
            raise ConfigError(
                f"a local --source holds one project; got --benchmark {' '.join(names)}"
            )
        parts = [
            DirSource(
                location,
                project=project_for_folder(location, names[0] if names else None)[0],
                release=None if release == LATEST else release,
                suite=suite,
            )
        ]
    combined: Source = parts[0] if len(parts) == 1 else MultiSource(parts)
    if filters is None or filters.is_empty:
        return combined
    return FilteredSource(combined, filters)


def local_root(source: Source) -> Path | None:
    """The folder of a local source (a destination must not lie inside it), else None."""
    inner = getattr(source, "inner", source)
    return inner.root if isinstance(inner, DirSource) else None


def _local_names(location: str, sub: str, keep: Callable[[Path], bool]) -> list[str]:
    root = Path(location)
    problem = folder_problem(root)
    if problem is not None:
        raise ConfigError(problem)
    found = [p.name for p in (root / sub).glob("*") if keep(p)]
    return sorted(found, key=version_key, reverse=True)


def _bucket(location: str | None, benchmark: str | None) -> HttpSource:
    source = make_source(location, [benchmark] if benchmark else None, LATEST, None)
    assert isinstance(source, HttpSource)  # a URL (or none) and at most one benchmark
    return source


def list_releases(location: str | None, benchmark: str | None = None) -> list[str]:
    """Releases of a project (a local folder's ``releases/``, or the bucket's), newest first."""
    if location is not None and not is_url(location):
        return _local_names(location, "releases", lambda p: (p / RUNS_INDEX).is_file())
    return _bucket(location, benchmark).releases()


def list_suites(location: str | None, benchmark: str | None = None) -> list[str]:
    """Suites of a project (its ``runs/`` folders), newest first."""
    if location is not None and not is_url(location):
        return _local_names(
            location, "runs", lambda p: p.is_dir() and p.name != "eval_cache"
        )
    return _bucket(location, benchmark).suites()
