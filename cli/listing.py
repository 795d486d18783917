"""``helmproc list``: releases, suites and runs of a HELM project, without processing anything.

Also holds what ``run`` shares with ``list runs``: the source and filter options and
``build_source``, which turns them into one source (local folder, the bucket, several
projects, filtered). Listing only reads (the bucket's JSON API and index files, or a local
folder) and writes nothing, so an interrupted listing leaves no trace. Results go to stdout
(one per line, or ``--json``), narration to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from helmproc.engine.errors import ConfigError
from helmproc.engine.sources.bucket import (
    BENCHMARK_OUTPUT,
    DEFAULT_BASE_URL,
    LATEST,
    Bucket,
    HttpSource,
    is_url,
)
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import RUNS_INDEX, DirSource, MultiSource, Source, version_key

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        metavar="DIR|URL",
        help="Local benchmark_output/ (or folder of run dirs), or a bucket base URL "
        f"(default: {DEFAULT_BASE_URL}).",
    ),
]
BenchmarksOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--benchmark",
        metavar="PROJECT",
        help="HELM project (lite, mmlu, classic, air-bench, ...); repeat for several.",
    ),
]
BenchmarkOpt = Annotated[
    str | None,
    typer.Option("--benchmark", metavar="PROJECT", help="HELM project (lite, mmlu, ...)."),
]
ReleaseOpt = Annotated[
    str | None,
    typer.Option("--release", help="Release to read; 'latest' (the bucket's default) = newest."),
]
SuiteOpt = Annotated[str | None, typer.Option("--suite", help="Suite to read (suite mode).")]
AdapterMethodOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--adapter-method",
        metavar="METHOD",
        help="Keep runs whose adapter_spec.method is this (e.g. generation); repeatable.",
    ),
]
ModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        metavar="MODEL",
        help="Keep runs of this model or deployment (openai/gpt2 or openai_gpt2); repeatable.",
    ),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include", metavar="REGEX", help="Keep runs whose name matches this regex; repeatable."
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude", metavar="REGEX", help="Drop runs whose name matches this regex; repeatable."
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit", min=1, metavar="N", help="Keep only the first N runs (sorted, after filters)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")]

list_app = typer.Typer(
    name="list",
    help="List releases, suites or runs of a HELM project without processing them.",
    no_args_is_help=True,
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def project_from_url(base_url: str) -> str | None:
    """``lite`` from ``https://host/bucket/lite/benchmark_output``, else None."""
    parts = Bucket.from_url(base_url).prefix.split("/")
    if len(parts) >= 2 and parts[-1] == BENCHMARK_OUTPUT:
        return parts[-2]
    return None


def build_source(
    source: str | None,
    benchmarks: list[str] | None,
    release: str | None,
    suite: str | None,
    filters: RunFilters | None = None,
) -> Source:
    """The job's source from the CLI options (see ``helmproc run --help``).

    No ``--source`` or an http(s) URL: the bucket, one ``HttpSource`` per ``--benchmark``
    (release ``latest`` unless ``--release``/``--suite``). Otherwise a local ``DirSource``
    (one project). Several projects become a ``MultiSource``; filters wrap the result.
    """
    names = list(dict.fromkeys(b for b in (benchmarks or []) if b))
    if source is None or is_url(source):
        base = source or DEFAULT_BASE_URL
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
                source,
                project=names[0] if names else None,
                release=None if release == LATEST else release,
                suite=suite,
            )
        ]
    combined: Source = parts[0] if len(parts) == 1 else MultiSource(parts)
    if filters is None or filters.is_empty:
        return combined
    return FilteredSource(combined, filters)


def _releases(source: str | None, benchmark: str | None) -> list[str]:
    if source is not None and not is_url(source):
        root = Path(source)
        if not root.is_dir():
            raise ConfigError(f"source directory not found: {root}")
        found = [p.name for p in (root / "releases").glob("*") if (p / RUNS_INDEX).is_file()]
        return sorted(found, key=version_key, reverse=True)
    src = build_source(source, [benchmark] if benchmark else None, LATEST, None)
    assert isinstance(src, HttpSource)
    return src.releases()


def _suites(source: str | None, benchmark: str | None) -> list[str]:
    if source is not None and not is_url(source):
        root = Path(source)
        if not root.is_dir():
            raise ConfigError(f"source directory not found: {root}")
        found = [p.name for p in (root / "runs").glob("*") if p.is_dir() and p.name != "eval_cache"]
        return sorted(found, key=version_key, reverse=True)
    src = build_source(source, [benchmark] if benchmark else None, LATEST, None)
    assert isinstance(src, HttpSource)
    return src.suites()


def _print_names(names: list[str], what: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(names))
    else:
        for name in names:
            print(name)
    say(f"helmproc: {len(names)} {what}")


@list_app.command("releases")
def list_releases(
    benchmark: BenchmarkOpt = None, source: SourceOpt = None, as_json: JsonOpt = False
) -> None:
    """Releases of a project, newest first."""
    _print_names(_releases(source, benchmark), "releases", as_json)


@list_app.command("suites")
def list_suites(
    benchmark: BenchmarkOpt = None, source: SourceOpt = None, as_json: JsonOpt = False
) -> None:
    """Suites of a project (its runs/ folders), newest first."""
    _print_names(_suites(source, benchmark), "suites", as_json)


@list_app.command("runs")
def list_runs(
    benchmark: BenchmarksOpt = None,
    source: SourceOpt = None,
    release: ReleaseOpt = None,
    suite: SuiteOpt = None,
    adapter_method: AdapterMethodOpt = None,
    model: ModelOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Runs a `helmproc run` with the same options would convert: project, suite, run name."""
    filters = RunFilters.build(
        adapter_methods=adapter_method, models=model, include=include, exclude=exclude, limit=limit
    )
    refs = build_source(source, benchmark, release, suite, filters).discover()
    if as_json:
        rows: list[dict[str, Any]] = [ref.to_json() for ref in refs]
        print(json.dumps(rows, indent=2))
    else:
        for ref in refs:
            print(f"{ref.project}\t{ref.suite}\t{ref.run_name}")
    releases = sorted({ref.release for ref in refs if ref.release})
    where = f" (release {', '.join(releases)})" if releases else ""
    say(f"helmproc: {len(refs)} runs{where}")
