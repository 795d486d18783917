"""``helmproc list``: releases, suites and runs of a HELM project, without processing anything.

Also holds the source and filter options ``run`` shares with ``list runs`` (the engine's
``make_source`` turns them into one source: local folder, the bucket, several projects,
filtered). Listing only reads (the bucket's JSON API and index files, or a local
folder) and writes nothing, so an interrupted listing leaves no trace. Results go to stdout
(one per line, or ``--json``), narration to stderr.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from helmproc.cli.narration import count, examples, say
from helmproc.cli.option_checks import at_least
from helmproc.engine import DEFAULT_BASE_URL, RunFilters, make_source
from helmproc.engine import list_releases as releases_of
from helmproc.engine import list_suites as suites_of

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
    _print_names(releases_of(source, benchmark), "release", as_json)


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
    _print_names(suites_of(source, benchmark), "suite", as_json)


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
    refs = make_source(source, benchmark, release, suite, filters).discover()
    if as_json:
        rows: list[dict[str, Any]] = [ref.to_json() for ref in refs]
        print(json.dumps(rows, indent=2))
    else:
        for ref in refs:
            print(f"{ref.project}\t{ref.suite}\t{ref.run_name}")
    releases = sorted({ref.release for ref in refs if ref.release})
    where = f" (release {', '.join(releases)})" if releases else ""
    say(f"helmproc: {count(len(refs), 'run')}{where}")
