"""helmproc's public Python API: what a notebook, another tool and the ``helmproc`` CLI call.

    from helmproc.engine import DirPublisher, DirSource, run_job

    source = DirSource("tests/data/benchmark_output", release="v1.1.0")
    report = run_job(source, DirPublisher("dataset"))
    print(report.to_json()["runs"])  # {'ok': 9, 'failed': 0}

``run_job`` = ``start_job`` (discover, plan, journal the plan) + ``execute_job`` (convert,
publish, clean, journaling each step). After any crash ``resume_job`` finishes the job from its
journal alone; ``job_status`` and ``verify_job`` read the journal (safe while a job runs);
``job_view`` adds what ``helmproc status`` shows live; ``check_destination`` checks (and
repairs) a dataset from the dataset alone; ``export_eee`` turns a finished dataset into EEE's
datastore layout. ``make_source`` and ``make_publisher`` build a source and a destination from
what a user names, ``exec_options`` a session's runtime options (workers, memory and disk
budgets, executor, publishing pace) from typed values: one place each. This module holds the
job-level functions; ``helmproc.engine`` exports them with the stages' types and functions
(``engine/__init__.py`` lists every public name and where it lives); the CLI imports nothing
else from the engine but the shared vocabulary (``pyproject.toml``'s contracts). Nothing here
holds state: after a crash, ``resume_job`` continues from the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.facts import RunRef
from helmproc.engine.job.options import ExecOptions, exec_options
from helmproc.engine.job.progress import Progress
from helmproc.engine.job.start import DEFAULT_CHUNK_SIZE, StartedJob, execute_job, start_job
from helmproc.engine.job.verify import VerifyReport, verify_journal
from helmproc.engine.job.workdir import (
    DEFAULT_WORK_ROOT,
    JobPaths,
    find_journal,
    record_runtime_options,
    recorded_runtime_options,
)
from helmproc.engine.publish.dataset_check import DatasetCheck, check_dataset, repair_dataset
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.ledger import read_ledger
from helmproc.engine.sources.folder import Source
from helmproc.journal import Journal, StatusReport
from helmproc.journal.locking import live_holder

__all__ = [
    "DestinationCheck",
    "JobView",
    "check_destination",
    "job_status",
    "job_view",
    "recall_options",
    "remember_options",
    "resume_job",
    "run_job",
    "verify_job",
]


def run_job(
    source: Source,
    publisher: Publisher,
    *,
    options: ExecOptions | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    work_root: Path = DEFAULT_WORK_ROOT,
    journal_path: Path | None = None,
    max_file_bytes: int | None = None,
    source_organization: str | None = None,
    discovered: list[RunRef] | None = None,
    progress: Progress | None = None,
    on_planned: Callable[[StartedJob], Progress | None] | None = None,
) -> StatusReport:
    """Start (or continue) the job that converts ``source`` into ``publisher`` and run it to
    the end; the final status. The source is read first (``discovered``: its runs, if the
    caller listed them already), then the destination is held from planning to the end (one
    writer). ``options`` default to ``exec_options`` for the job's folder. ``on_planned`` is
    called with the journaled plan before it executes (to report it); a progress it returns
    replaces ``progress``. The job executes even when its journal says done: the destination
    may have lost what it published, and it is rebuilt."""
    if discovered is None:
        discovered = source.discover()  # a source that cannot be read touches no destination
    with publisher.lock("job"):
        started = start_job(
            source,
            publisher,
            discovered=discovered,
            chunk_size=chunk_size,
            work_root=work_root,
            journal_path=journal_path,
            max_file_bytes=max_file_bytes,
            source_organization=source_organization,
        )
        with started.journal as journal:
            if on_planned is not None:
                progress = on_planned(started) or progress
            return execute_job(
                journal,
                options or exec_options(journal.path.parent),
                progress,
                source_config=source.config,  # the live source: it may hold credentials
                ledger=started.ledger,
                publisher=publisher,
            )


def resume_job(
    journal_path: Path | None = None,
    *,
    options: ExecOptions | None = None,
    work_root: Path = DEFAULT_WORK_ROOT,
    progress: Progress | None = None,
) -> StatusReport:
    """Finish the job in ``journal_path`` (default: the one last started in ``work_root``)."""
    with Journal.open(find_journal(work_root, journal_path)) as journal:
        options = options or exec_options(journal.path.parent)
        return execute_job(journal, options, progress)


def job_status(
    journal_path: Path | None = None, *, work_root: Path = DEFAULT_WORK_ROOT
) -> StatusReport:
    """A job's status from its journal alone (readonly: safe while the job runs)."""
    with Journal.open(find_journal(work_root, journal_path), readonly=True) as journal:
        return journal.status()


def verify_job(
    journal_path: Path | None = None,
    *,
    work_root: Path = DEFAULT_WORK_ROOT,
    publisher: Publisher | None = None,
) -> VerifyReport:
    """Check every published shard of a job against its destination (or ``publisher``)."""
    return verify_journal(find_journal(work_root, journal_path), publisher)


@dataclass(frozen=True)
class JobView:
    """A job as ``helmproc status`` shows it: its status, recorded config, start time, event
    log, and the pid of the live process working on it (None: nobody is)."""

    report: StatusReport
    config: dict[str, Any]
    started_at: str | None
    events: list[dict[str, Any]]
    holder_pid: int | None


def job_view(journal_path: Path | None = None, *, work_root: Path = DEFAULT_WORK_ROOT) -> JobView:
    """The job's status and activity from its journal and lock (readonly: safe while it runs)."""
    with Journal.open(find_journal(work_root, journal_path), readonly=True) as journal:
        job = journal.job()
        return JobView(
            journal.status(),
            job.config if job else {},
            job.started_at if job else None,
            journal.events(),
            live_holder(journal.path),
        )


@dataclass(frozen=True)
class DestinationCheck:
    """What ``check_destination`` found, and the files a repair removed."""

    check: DatasetCheck
    removed: list[str]


def check_destination(publisher: Publisher, *, repair: bool = False) -> DestinationCheck:
    """Check a dataset from the dataset alone (no journal), holding its lock; with ``repair``,
    delete what is damaged so the next run with the same source converts those runs again."""
    with publisher.lock("helmproc verify"):
        ledger = read_ledger(publisher)
        check = check_dataset(publisher, ledger)
        removed = repair_dataset(publisher, check, ledger) if repair and not check.ok else []
    return DestinationCheck(check, removed)


def remember_options(journal_path: Path, given: dict[str, Any]) -> None:
    """Keep the runtime options a session was given (as given; None: not given) beside the
    job's journal, for ``recall_options`` on resume."""
    record_runtime_options(JobPaths.for_journal(journal_path), given)


def recall_options(journal_path: Path) -> dict[str, Any]:
    """The options ``remember_options`` kept for the job, or {}."""
    return recorded_runtime_options(JobPaths.for_journal(journal_path))
