"""The ``helmproc`` command line: a thin Typer view over ``helmproc.engine``'s public API.

Results go to stdout, narration and progress to stderr. Exit codes: 0 done, 1 handled error
(see ``cli/errors.py``), 2 usage, 130 interrupted. Nothing here holds state: an interrupted
command leaves the journal as the engine left it, and ``helmproc resume`` continues.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer

from helmproc.cli.activity import job_activity, render_activity
from helmproc.cli.destination import (
    CommitsPerHourOpt,
    FilesPerCommitOpt,
    PrivateOpt,
    RepoIdOpt,
    RevisionOpt,
    UploadWorkersOpt,
    check_folder_destination,
)
from helmproc.cli.errors import (
    EXIT_ALL_FAILED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOTHING_MATCHED,
    EXIT_USAGE,
    describe,
    interrupted_message,
)
from helmproc.cli.export import export_eee_command
from helmproc.cli.listing import (
    AdapterMethodOpt,
    BenchmarksOpt,
    ExcludeOpt,
    IncludeOpt,
    LimitOpt,
    ModelOpt,
    SourceOpt,
    list_app,
)
from helmproc.cli.narration import count, examples, say
from helmproc.cli.option_checks import (
    at_least,
    executor_text,
    parse_size,
    parse_workers,
    size_text,
    workers_text,
)
from helmproc.cli.verify import verify
from helmproc.engine import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_WORK_ROOT,
    ExecOptions,
    JobInterrupted,
    Journal,
    LedgerFacts,
    Progress,
    RunFilters,
    StartedJob,
    StatusReport,
    compaction_notice,
    default_workers,
    destination_label,
    exec_options,
    execute_job,
    find_journal,
    format_size,
    job_view,
    local_root,
    make_publisher,
    make_source,
    progress_for,
    project_for_folder,
    recall_options,
    remember_options,
    render_text,
    run_job,
    stop_waits,
)
from helmproc.engine import compact as compact_dataset
from helmproc.engine.errors import ConfigError
from helmproc.engine.lean_imports import refuse_pandas

DEFAULT_DESTINATION = Path("helm-eee-dataset")

app = typer.Typer(
    name="helmproc",
    help="Turn HELM benchmark output into a Parquet dataset in Every Eval Ever shapes.",
    epilog=examples(
        "helmproc run --benchmark lite                 # HELM Lite, newest release",
        "helmproc run --source tests/data/benchmark_output --to out   # offline",
        "helmproc status --watch                       # in a second terminal",
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(list_app, name="list")

# set once the command has a job in a journal: from then on, `resume` can continue it
_job_recorded = False


def helmproc_version() -> str:
    try:
        return version("helmproc")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed)"


def show_version(value: bool) -> None:
    if value:
        print(f"helmproc {helmproc_version()}")
        raise typer.Exit(0)


@app.callback()
def root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Turn HELM benchmark output into a Parquet dataset in Every Eval Ever shapes."""


JournalOpt = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        metavar="PATH",
        help="Journal file of the job (default: the job `run` last started in this directory).",
    ),
]
WorkersOpt = Annotated[
    str | None,
    typer.Option(
        "--max-workers",
        metavar="N|auto",
        callback=workers_text,
        help="Worker processes: a number, or 'auto' (as many as the memory budget holds).",
        show_default=f"{count(default_workers(), 'worker')}, one per CPU",
    ),
]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        metavar="local|dask://HOST:PORT",
        callback=executor_text,
        help="Where chunks run: a local process pool, or a Dask cluster.",
        show_default="local",
    ),
]
MemoryBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-budget",
        metavar="SIZE",
        callback=size_text,
        help="Memory for the whole process tree, e.g. 4G.",
        show_default="60% of the RAM available at start",
    ),
]
DiskBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--disk-budget",
        metavar="SIZE",
        callback=size_text,
        help="Disk for scratch + unpublished shards, e.g. 20G.",
        show_default="half the free space",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the final status as JSON.")]


def print_summary(report: StatusReport, as_json: bool) -> None:
    data = report.to_json()
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    runs = data["runs"]
    print(
        f"{'done' if data['done'] else 'incomplete'}: {count(runs['ok'], 'run')} converted, "
        f"{runs['failed']} failed, {count(data['rows'], 'instance row')}"
    )
    print_failures(report)


def print_failures(report: StatusReport) -> None:
    data = report.to_json()
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
            f"helmproc: {count(options.max_workers, 'worker')}, memory budget "
            f"{format_size(budget.memory_budget)}, disk budget {format_size(budget.disk_budget)}"
        )


def run_summary(report: StatusReport, facts: LedgerFacts | None) -> dict[str, Any]:
    """What `run --json` prints: the job's status (as `status --json`) plus what the dataset
    held before: ``new_runs`` (converted ok now), ``already_present``, ``matched``,
    ``changed`` (source changed since converted; not converted again), ``failed``."""
    data = report.to_json()
    return {
        **data,
        "matched": facts.matched if facts else data.get("matched"),
        "already_present": facts.already_present if facts else data.get("already_present", 0),
        "changed": list(facts.changed) if facts else data.get("changed", []),
        "new_runs": data["runs"]["ok"],
        "failed": data["runs"]["failed"],
    }


def finish_run(
    report: StatusReport, facts: LedgerFacts | None, as_json: bool, strict: bool
) -> None:
    summary = run_summary(report, facts)
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(
            f"{'done' if summary['done'] else 'incomplete'}: "
            f"{count(summary['new_runs'], 'run')} converted, {summary['failed']} failed, "
            f"{count(summary['rows'], 'instance row')}; "
            f"{count(summary['already_present'], 'run')} already in the dataset"
        )
        print_failures(report)
    if not summary["done"]:
        raise typer.Exit(EXIT_ERROR)
    if strict and facts is not None and facts.matched == 0:
        say("helmproc: --strict: no run matched the source and filters")
        raise typer.Exit(EXIT_NOTHING_MATCHED)
    if strict and summary["failed"] and not summary["new_runs"]:
        say("helmproc: --strict: every run this job converted failed")
        raise typer.Exit(EXIT_ALL_FAILED)


def finish(report: StatusReport, as_json: bool) -> None:
    print_summary(report, as_json)
    if not report.to_json()["done"]:
        raise typer.Exit(EXIT_ERROR)


@app.command(
    epilog=examples(
        "helmproc run --benchmark lite",
        "helmproc run --source tests/data/benchmark_output --to out --max-workers 1",
        "helmproc run --benchmark mmlu --release v1.13.0 --repo-id org/helm-eee",
    )
)
def run(
    source: SourceOpt = None,
    to: Annotated[
        Path,
        typer.Option("--to", metavar="DIR", help="Dataset folder to write (created if missing)."),
    ] = DEFAULT_DESTINATION,
    benchmark: BenchmarksOpt = None,
    release: Annotated[
        str | None,
        typer.Option(
            "--release",
            metavar="R",
            help="Release to read ('latest', the bucket's default: newest). A plain HTTP "
            "mirror cannot list releases: name one.",
        ),
    ] = None,
    suite: Annotated[
        str | None, typer.Option("--suite", metavar="S", help="Suite to read.")
    ] = None,
    adapter_method: AdapterMethodOpt = None,
    model: ModelOpt = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    limit: LimitOpt = None,
    journal: JournalOpt = None,
    chunk_size: Annotated[
        int,
        typer.Option("--chunk-size", metavar="N", callback=at_least(1), help="Runs per chunk."),
    ] = DEFAULT_CHUNK_SIZE,
    max_workers: WorkersOpt = None,
    memory_budget: MemoryBudgetOpt = None,
    disk_budget: DiskBudgetOpt = None,
    executor: ExecutorOpt = None,
    max_file_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-file-bytes",
            metavar="SIZE",
            callback=size_text,
            help="Fail a run whose input file is larger than this, e.g. 2G. Recorded with the job.",
            show_default="no limit",
        ),
    ] = None,
    source_organization: Annotated[
        str | None,
        typer.Option(
            "--source-organization",
            metavar="NAME",
            help="Who published the HELM output (EEE source_organization_name). Recorded with "
            "the job.",
            show_default="the public bucket's owner, Stanford CRFM; else unknown",
        ),
    ] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = "main",
    private: PrivateOpt = False,
    upload_workers: UploadWorkersOpt = None,
    files_per_commit: FilesPerCommitOpt = None,
    commits_per_hour: CommitsPerHourOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON summary on stdout: new_runs, already_present, changed, failed, "
            "rows, and the job's status.",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="For unattended use: exit 4 when no run matched, 5 when every run this job "
            "converted failed (3: the destination is busy with another job).",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert HELM runs into a Parquet dataset, journaling progress so it can resume.

    Every option is checked before anything is planned or recorded. Only runs the
    destination does not hold yet are converted (its `runs` table is the ledger), so the same
    command on a fresh machine converts nothing twice.
    """
    filters = RunFilters.build(
        adapter_methods=adapter_method, models=model, include=include, exclude=exclude, limit=limit
    )
    given = {
        "max_workers": max_workers,
        "memory_budget": memory_budget,
        "disk_budget": disk_budget,
        "executor": executor,
        "upload_workers": upload_workers,
        "files_per_commit": files_per_commit,
        "commits_per_hour": commits_per_hour,
    }
    work_dir = journal.parent if journal else DEFAULT_WORK_ROOT
    options = runtime_options(given, work_dir)
    src = make_source(source, benchmark, release, suite, filters)
    src_root = local_root(src)
    if repo_id is None:
        check_folder_destination(to, src_root)
    publisher = make_publisher(to, repo_id, revision, private)
    if src_root is not None:
        name, why = project_for_folder(source or ".", benchmark[0] if benchmark else None)
        say(f"helmproc: project {name!r} ({why})")
    discovered = src.discover()  # a source that cannot be read touches no destination
    facts: LedgerFacts | None = None

    def planned(started: StartedJob) -> Progress:
        global _job_recorded
        nonlocal facts
        _job_recorded = True
        facts = started.facts
        remember_options(started.paths.journal, given)
        narrate_plan(started, destination_label(publisher.config))
        if started.n_runs:
            announce_budget(options)
        return progress_for(sys.stderr, quiet or started.n_runs == 0)

    with publisher.lock("helmproc run"):  # one writer per destination, planning to the end
        report = run_job(
            src,
            publisher,
            options=options,
            chunk_size=chunk_size,
            work_root=DEFAULT_WORK_ROOT,
            journal_path=journal,
            max_file_bytes=parse_size(max_file_bytes) if max_file_bytes else None,
            source_organization=source_organization,
            discovered=discovered,
            on_planned=planned,
        )
        notice = compaction_notice(publisher)
    if notice:
        say(notice)
    finish_run(report, facts, as_json, strict)


def narrate_plan(started: StartedJob, destination: str) -> None:
    """What planning found and what the job will do, on stderr."""
    facts = started.facts
    if facts is not None:
        say(f"helmproc: {count(facts.matched, 'run')} matched; {facts.already_present} already in "
            f"{destination}")
        for key in facts.changed[:5]:
            say(f"helmproc: source changed since {key} was converted: not converted "
                "again (the dataset keeps the converted version)")
        if len(facts.changed) > 5:
            say(f"helmproc: ... and {len(facts.changed) - 5} more changed runs")
    if started.n_runs == 0 and facts is not None:
        say("helmproc: nothing new to convert; nothing to do unless the dataset lacks "
            "its releases rows or card")
    job = started.journal.job()
    say(
        f"helmproc: {'continuing' if started.continued else 'starting'} job "
        f"{job.job_id if job else '?'}: "
        f"{count(started.n_runs, 'run')} in {count(started.n_chunks, 'chunk')} -> "
        f"{destination} (journal {started.journal.path})"
    )


def runtime_options(
    given: dict[str, Any], work_dir: Path, retry_failed: bool = False
) -> ExecOptions:
    """The execution options from the command line's values (as given, or as recorded: sizes
    and worker counts are text, parsed here; None: the default)."""
    workers, memory, disk = given["max_workers"], given["memory_budget"], given["disk_budget"]
    return exec_options(
        work_dir,
        max_workers=None if workers is None else parse_workers(str(workers)),
        memory_budget=None if memory is None else parse_size(str(memory)),
        disk_budget=None if disk is None else parse_size(str(disk)),
        executor=given["executor"],
        upload_workers=given["upload_workers"],
        files_per_commit=given["files_per_commit"],
        commits_per_hour=given["commits_per_hour"],
        retry_failed=retry_failed,
    )


def already_complete(jr: Journal) -> StatusReport | None:
    """The finished job's report (after saying so), or None when there is work left."""
    report = jr.status()
    if not report.done:
        return None
    say(f"helmproc: job {report.job_id} is already complete; nothing to do")
    return report


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@app.command(
    epilog=examples(
        "helmproc resume",
        "helmproc resume --retry-failed",
        "helmproc resume --journal .helmproc/JOB/journal.sqlite --max-workers 4",
    )
)
def resume(
    journal: JournalOpt = None,
    max_workers: WorkersOpt = None,
    memory_budget: MemoryBudgetOpt = None,
    disk_budget: DiskBudgetOpt = None,
    executor: ExecutorOpt = None,
    upload_workers: UploadWorkersOpt = None,
    files_per_commit: FilesPerCommitOpt = None,
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
    """Finish the job recorded in the journal, with its recorded configuration.

    Runtime options (workers, budgets, executor, publishing pace) are the ones `run` was given
    for this job, unless given here.
    """
    global _job_recorded
    given = {
        "max_workers": max_workers,
        "memory_budget": memory_budget,
        "disk_budget": disk_budget,
        "executor": executor,
        "upload_workers": upload_workers,
        "files_per_commit": files_per_commit,
        "commits_per_hour": commits_per_hour,
    }
    path = find_journal(DEFAULT_WORK_ROOT, journal)
    with Journal.open(path) as jr:
        _job_recorded = True
        say(f"helmproc: resuming from {jr.path}")
        recorded = recall_options(jr.path)
        chosen = dict(given)
        reused, overridden = [], []
        for name, value in recorded.items():
            if name not in chosen or value is None:
                continue
            if chosen[name] is None:
                chosen[name] = value
                reused.append(f"{option_flag(name)} {value}")
            elif str(chosen[name]) != str(value):
                overridden.append(f"{option_flag(name)} {chosen[name]} (recorded: {value})")
        if reused:
            say(f"helmproc: using the job's recorded options: {', '.join(reused)}")
        if overridden:
            say(f"helmproc: overriding the recorded options: {', '.join(overridden)}")
        options = runtime_options(chosen, jr.path.parent, retry_failed)
        report = None if retry_failed else already_complete(jr)
        if report is None:
            announce_budget(options)
            report = execute_job(jr, options, progress_for(sys.stderr, quiet))
    finish(report, as_json)


@app.command(
    epilog=examples(
        "helmproc status",
        "helmproc status --watch",
        "helmproc status --json --journal .helmproc/JOB/journal.sqlite",
    )
)
def status(
    journal: JournalOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until the job is done (Ctrl-C to stop).")
    ] = False,
    every: Annotated[
        float,
        typer.Option("--every", metavar="S", callback=at_least(0.2), help="--watch refresh."),
    ] = 2.0,
) -> None:
    """Report a job's progress from its journal alone (safe while the job runs): elapsed time,
    rates over the last minutes, ETA, source, destination, and whether a live process is
    working on the job now."""
    path = find_journal(DEFAULT_WORK_ROOT, journal)
    clear = watch and not as_json and sys.stdout.isatty()
    while True:
        view = job_view(path)
        report = view.report
        activity = job_activity(
            view.config, view.started_at, view.events, report, view.holder_pid
        )
        if as_json:
            data = {**report.to_json(), **activity.to_json()}
            print(json.dumps(data, sort_keys=True, indent=None if watch else 2), flush=True)
        else:
            if clear:
                print("\033[H\033[2J", end="")
            print(render_activity(activity, report.done) + render_text(report), flush=True)
        if not watch or report.done:
            return
        time.sleep(every)


@app.command(
    epilog=examples(
        "helmproc compact --to helm-eee-dataset",
        "helmproc compact --repo-id org/helm-eee --target-size 512M",
    )
)
def compact(
    to: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Dataset folder to compact.")
    ] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = "main",
    target_size: Annotated[
        str,
        typer.Option(
            "--target-size",
            metavar="SIZE",
            callback=size_text,
            help="About this much `instances` data per output file, e.g. 256M.",
        ),
    ] = "256M",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Rewrite many small shard files of a dataset into few large ones (rows unchanged).

    Journaled: after a crash, the same command finishes the interrupted compaction. On the
    Hub, the new files and the deletion of the old ones are one commit."""
    if to is None and repo_id is None:
        raise ConfigError("compact needs --to DIR or --repo-id ID")
    publisher = make_publisher(to or DEFAULT_DESTINATION, repo_id, revision, False)
    report = compact_dataset(publisher, DEFAULT_WORK_ROOT, parse_size(target_size))
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    elif report.batches == 0:
        print("nothing to compact: no two small groups to merge")
    else:
        print(
            f"{'finished an interrupted compaction: ' if report.resumed else ''}"
            f"{report.files_before} files rewritten into {report.files_after} "
            f"({report.batches} batches, {format_size(report.bytes_read)} read)"
        )


app.command(
    name="verify",
    epilog=examples(
        "helmproc verify", "helmproc verify --to helm-eee-dataset --repair",
        "helmproc verify --json --journal PATH",
    ),
)(verify)
app.command(
    name="export-eee",
    epilog=examples(
        "helmproc export-eee --from helm-eee-dataset --to eee-out",
        "helmproc export-eee --from helm-eee-dataset --to eee-out --json",
    ),
)(export_eee_command)


def main() -> None:
    refuse_pandas()  # pyarrow would import it in this process for nothing (lean_imports.py)
    stop_waits.sigint_stops_waits()  # Ctrl-C ends every wait on the network, planning too
    try:
        rc = app(standalone_mode=False)
        sys.stdout.flush()  # a closed output fails here, through the error table below
    except (KeyboardInterrupt, JobInterrupted) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # already stopping: a late Ctrl-C is moot
        if isinstance(exc, JobInterrupted):
            detail = f" ({exc})"
        elif str(exc):  # the second Ctrl-C: workers were stopped at once
            detail = f" ({exc}: stopped at once, the chunks in flight are redone on resume)"
        else:
            detail = ""
        say(interrupted_message(detail, _job_recorded))
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        if type(sys.stdout).__name__ != "PacifyFlushWrapper":  # typer vendors click's class
            raise
        # click turns a broken pipe (EPIPE anywhere in a command) into a silent exit 1 after
        # wrapping the streams; say it through the error table instead
        message, code = describe(BrokenPipeError(errno.EPIPE, "Broken pipe")) or ("", 1)
        say(message)
        sys.exit(code)
    except typer.Abort:
        say(interrupted_message("", _job_recorded))
        sys.exit(EXIT_INTERRUPTED)
    except typer.TyperException as exc:  # usage errors: click's own message, exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(getattr(exc, "exit_code", EXIT_USAGE))
    except Exception as exc:
        if isinstance(exc, BrokenPipeError):
            # nothing more can reach the closed output, not even Python's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        described = describe(exc, _job_recorded)
        if described is None:
            raise
        message, code = described
        say(message)
        sys.exit(code)
    if rc == EXIT_INTERRUPTED:  # typer turns a KeyboardInterrupt (a second Ctrl-C, or one
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # before the job started) into 130
        detail = " (stopped at once; the chunks in flight are redone on resume)"
        say(interrupted_message(detail if _job_recorded else "", _job_recorded))
    sys.exit(rc if isinstance(rc, int) else 0)
