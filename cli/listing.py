"""``helmproc list``: releases, suites and runs of a HELM project, without processing anything.

Also holds what ``run`` shares with ``list runs``: the source and filter options and
``build_source``, which turns them into one source (local folder, the bucket, several
projects, filtered). Listing only reads (the bucket's JSON API and index files, or a local
folder) and writes nothing, so an interrupted listing leaves no trace. Results go to stdout
(one per line, or ``--json``), narration to stderr.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from helmproc.cli.narration import count, examples, say
from helmproc.cli.option_checks import at_least
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

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        metavar="DIR|URL",
        help="Local benchmark_output/ folder (or a folder of run folders, or one run folder), "
        "or an http(s) bucket base URL.",
        show_default=DEFAULT_BASE_URL,
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
    typer.Option(
        "--release",
        metavar="R",
        help="Release to read; 'latest' (the bucket's default) = newest. A plain HTTP mirror "
        "cannot list releases: name one.",
    ),
]
SuiteOpt = Annotated[
    str | None, typer.Option("--suite", metavar="S", help="Suite to read (suite mode).")
]
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
        "--limit",
        metavar="N",
        callback=at_least(1),
        help="Keep only the first N runs (sorted, after filters).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")]
# ftp://, gs://, s3://, file://...: schemes a --source cannot be (only http(s) is read)
OTHER_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

list_app = typer.Typer(
    name="list",
    help="List releases, suites or runs of a HELM project without processing them.",
    no_args_is_help=True,
    epilog=examples(
        "helmproc list releases --benchmark lite",
        "helmproc list runs --benchmark lite --model openai/gpt2",
        "helmproc list suites --source tests/data/benchmark_output",
    ),
)


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
    (one project, named by ``project_for_folder``). Several projects become a
    ``MultiSource``; filters wrap the result. Another URL scheme is refused.
    """
    names = list(dict.fromkeys(b for b in (benchmarks or []) if b))
    if source is not None and not is_url(source):
        scheme = OTHER_SCHEME.match(source)
        if scheme:
            raise ConfigError(
                f"--source {source}: unsupported scheme {scheme.group(1)}:// (use a local "
                "folder or an http(s) URL)"
            )
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
                project=project_for_folder(source, names[0] if names else None)[0],
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
        problem = folder_problem(root)
        if problem is not None:
            raise ConfigError(problem)
        found = [p.name for p in (root / "releases").glob("*") if (p / RUNS_INDEX).is_file()]
        return sorted(found, key=version_key, reverse=True)
    src = build_source(source, [benchmark] if benchmark else None, LATEST, None)
    assert isinstance(src, HttpSource)
    return src.releases()


def _suites(source: str | None, benchmark: str | None) -> list[str]:
    if source is not None and not is_url(source):
        root = Path(source)
        problem = folder_problem(root)
        if problem is not None:
            raise ConfigError(problem)
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
    say(f"helmproc: {count(len(names), what)}")


@list_app.command(
    "releases",
    epilog=examples(
        "helmproc list releases --benchmark lite",
        "helmproc list releases --benchmark mmlu --json",
        "helmproc list releases --source DIR/benchmark_output",
    ),
)
def list_releases(
    benchmark: BenchmarkOpt = None, source: SourceOpt = None, as_json: JsonOpt = False
) -> None:
    """Releases of a project, newest first."""
    _print_names(_releases(source, benchmark), "release", as_json)


@list_app.command(
    "suites",
    epilog=examples(
        "helmproc list suites --benchmark heim",
        "helmproc list suites --source tests/data/benchmark_output",
    ),
)
def list_suites(
    benchmark: BenchmarkOpt = None, source: SourceOpt = None, as_json: JsonOpt = False
) -> None:
    """Suites of a project (its runs/ folders), newest first."""
    _print_names(_suites(source, benchmark), "suite", as_json)


@list_app.command(
    "runs",
    epilog=examples(
        "helmproc list runs --benchmark lite --adapter-method generation",
        "helmproc list runs --benchmark lite --model openai/gpt2 --json",
        "helmproc list runs --source tests/data/benchmark_output --include mmlu",
    ),
)
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
    say(f"helmproc: {count(len(refs), 'run')}{where}")
