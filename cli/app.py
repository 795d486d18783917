"""The ``helmproc`` command line: a thin Typer view over ``helmproc.engine`` and the journal.

Results go to stdout, narration and progress to stderr. Exit codes: 0 done, 1 handled error
(see ``cli/errors.py``), 2 usage, 130 interrupted. Nothing here holds state: an interrupted
command leaves the journal as the engine left it, and ``helmproc resume`` continues.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from helmproc.cli.destination import (
    CommitsPerHourOpt,
    FilesPerCommitOpt,
    PrivateOpt,
    RepoIdOpt,
    RevisionOpt,
    UploadWorkersOpt,
    with_publishing,
)
from helmproc.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, describe
from helmproc.cli.export import export_eee_command
from helmproc.cli.listing import (
    AdapterMethodOpt,
    BenchmarksOpt,
    ExcludeOpt,
    IncludeOpt,
    LimitOpt,
    ModelOpt,
    SourceOpt,
    build_source,
    list_app,
)
from helmproc.cli.verify import verify
from helmproc.engine.job.budget import format_size, parse_size
from helmproc.engine.job.interrupts import JobInterrupted
from helmproc.engine.job.options import DEFAULT_FILES_PER_COMMIT, ExecOptions
from helmproc.engine.job.progress import progress_for
from helmproc.engine.job.start import DEFAULT_CHUNK_SIZE, exec_options, execute_job, start_job
from helmproc.engine.job.workdir import DEFAULT_WORK_ROOT, find_journal
from helmproc.engine.publish.registry import destination_label, make_publisher
from helmproc.engine.sources.filters import RunFilters
from helmproc.journal import Journal, StatusReport, render_text

DEFAULT_DESTINATION = Path("helm-eee-dataset")

app = typer.Typer(
    name="helmproc",
    help="Turn HELM benchmark output into a Parquet dataset in Every Eval Ever shapes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(list_app, name="list")

JournalOpt = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        help="Journal file of the job (default: the job `run` last started in this directory).",
    ),
]
WorkersOpt = Annotated[
    str | None,
    typer.Option(
        "--max-workers", help="Worker processes: a number, or 'auto' (from the memory budget)."
    ),
]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="Where chunks run: 'local' (a process pool, default) or 'dask://HOST:PORT'.",
    ),
]
MemoryBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-budget",
        help="Memory for the whole process tree, e.g. 4G (default: 60% of available RAM).",
    ),
]
DiskBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--disk-budget",
        help="Disk for scratch + unpublished shards, e.g. 20G (default: half the free space).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the final status as JSON.")]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_summary(report: StatusReport, as_json: bool) -> None:
    data = report.to_json()
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    runs = data["runs"]
    print(
        f"{'done' if data['done'] else 'incomplete'}: {runs['ok']} runs converted, "
        f"{runs['failed']} failed, {data['rows']} instance rows"
    )
    for group in data["failures_by_reason"]:
        runs = group["runs"]
        more = f" and {len(runs) - 1} more" if len(runs) > 1 else ""
        say(f"  {len(runs)} failed: {group['example']} ({runs[0]}{more})")
    if data["failures"]:
        say("helmproc: `helmproc status` lists failed runs; fix the input, then "
            "`helmproc resume --retry-failed` retries them")
    if not data["done"]:
        say("helmproc: some chunks did not finish; `helmproc resume` retries them")


def announce_budget(options: ExecOptions) -> None:
    budget = options.budget
    if budget is not None:
        say(
            f"helmproc: {options.max_workers} workers, memory budget "
            f"{format_size(budget.memory_budget)}, disk budget {format_size(budget.disk_budget)}"
        )


def finish(report: StatusReport, as_json: bool) -> None:
    print_summary(report, as_json)
    if not report.to_json()["done"]:
        raise typer.Exit(EXIT_ERROR)


@app.command()
def run(
    source: SourceOpt = None,
    to: Annotated[
        Path, typer.Option("--to", help="Dataset folder to write (created if missing).")
    ] = DEFAULT_DESTINATION,
    benchmark: BenchmarksOpt = None,
    release: Annotated[
        str | None,
        typer.Option("--release", help="Release to read ('latest', the bucket's default: newest)."),
    ] = None,
    suite: Annotated[str | None, typer.Option("--suite", help="Suite to read.")] = None,
    adapter_method: AdapterMethodOpt = None,
    model: ModelOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    limit: LimitOpt = None,
    journal: JournalOpt = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, help="Runs per chunk.")
    ] = DEFAULT_CHUNK_SIZE,
    max_workers: WorkersOpt = None,
    memory_budget: MemoryBudgetOpt = None,
    disk_budget: DiskBudgetOpt = None,
    executor: ExecutorOpt = None,
    max_file_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-file-bytes",
            help="Fail a run whose input file is larger than this, e.g. 2G (default: no limit). "
            "Recorded with the job.",
        ),
    ] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = "main",
    private: PrivateOpt = False,
    upload_workers: UploadWorkersOpt = 1,
    files_per_commit: FilesPerCommitOpt = DEFAULT_FILES_PER_COMMIT,
    commits_per_hour: CommitsPerHourOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert HELM runs into a Parquet dataset, journaling progress so it can resume."""
    filters = RunFilters.build(
        adapter_methods=adapter_method, models=model, include=include, exclude=exclude, limit=limit
    )
    src = build_source(source, benchmark, release, suite, filters)
    publisher = make_publisher(to, repo_id, revision, private)
    started = start_job(
        src,
        publisher,
        chunk_size=chunk_size,
        work_root=DEFAULT_WORK_ROOT,
        journal_path=journal,
        max_file_bytes=parse_size(max_file_bytes) if max_file_bytes else None,
    )
    with started.journal as jr:
        verb = "continuing" if started.continued else "starting"
        say(
            f"helmproc: {verb} job {jr.job().job_id if jr.job() else '?'}: "  # type: ignore[union-attr]
            f"{started.n_runs} runs in {started.n_chunks} chunks -> "
            f"{destination_label(publisher.config)} "
            f"(journal {jr.path})"
        )
        options = exec_options(
            max_workers, memory_budget, disk_budget, jr.path.parent, executor
        )
        options = with_publishing(options, upload_workers, files_per_commit, commits_per_hour)
        announce_budget(options)
        report = execute_job(
            jr, options, progress_for(sys.stderr, quiet), source_config=src.config
        )
    finish(report, as_json)


@app.command()
def resume(
    journal: JournalOpt = None,
    max_workers: WorkersOpt = None,
    memory_budget: MemoryBudgetOpt = None,
    disk_budget: DiskBudgetOpt = None,
    executor: ExecutorOpt = None,
    upload_workers: UploadWorkersOpt = 1,
    files_per_commit: FilesPerCommitOpt = DEFAULT_FILES_PER_COMMIT,
    commits_per_hour: CommitsPerHourOpt = None,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Also retry the runs that failed: their chunks are processed and published "
            "again (the other runs' rows come out identical).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Finish the job recorded in the journal, with its recorded configuration."""
    path = find_journal(DEFAULT_WORK_ROOT, journal)
    with Journal.open(path) as jr:
        say(f"helmproc: resuming from {jr.path}")
        options = exec_options(
            max_workers, memory_budget, disk_budget, jr.path.parent, executor
        )
        options = with_publishing(options, upload_workers, files_per_commit, commits_per_hour)
        options = dataclasses.replace(options, retry_failed=retry_failed)
        announce_budget(options)
        report = execute_job(jr, options, progress_for(sys.stderr, quiet))
    finish(report, as_json)


@app.command()
def status(
    journal: JournalOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Report a job's progress from its journal alone (safe while the job runs)."""
    path = find_journal(DEFAULT_WORK_ROOT, journal)
    with Journal.open(path, readonly=True) as jr:
        report = jr.status()
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(render_text(report))


app.command(name="verify")(verify)
app.command(name="export-eee")(export_eee_command)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
    except (KeyboardInterrupt, JobInterrupted) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # already stopping: a late Ctrl-C is moot
        detail = f" ({exc})" if isinstance(exc, JobInterrupted) else ""
        say(f"helmproc: interrupted{detail}; `helmproc resume` continues where this stopped")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        say("helmproc: interrupted; `helmproc resume` continues where this stopped")
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # usage errors: click's own message, exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    except Exception as exc:
        described = describe(exc)
        if described is None:
            raise
        message, code = described
        say(message)
        sys.exit(code)
    sys.exit(rc if isinstance(rc, int) else 0)
