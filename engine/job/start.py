"""Library entry points: start (or continue) a job, and execute a journaled job.

``start_job`` discovers and plans, then records the job in its journal in one transaction
before any work: a crash before that commit leaves no job (start again), after it the plan is
fixed and ``resume`` reuses it. Asking ``start_job`` for a job whose journal already exists
continues that job instead of planning again. ``execute_job`` rebuilds the source and publisher
from the journaled config, so ``resume`` needs nothing but the journal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.errors import BadJournalFileError, ConfigError, JournalError
from helmproc.engine.job.budget import (
    INITIAL_CHUNK_ESTIMATE,
    Budget,
    default_disk_budget,
    default_memory_budget,
    parse_size,
)
from helmproc.engine.job.coordinator import Coordinator
from helmproc.engine.job.executors import parse_executor
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.plan import job_id_for, plan_chunks
from helmproc.engine.job.progress import Progress
from helmproc.engine.job.workdir import (
    JobPaths,
    job_paths,
    job_timestamp,
    journal_key,
    remember_latest,
)
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.registry import publisher_from_config
from helmproc.engine.safe_paths import make_private_dir
from helmproc.engine.sources.folder import Source, default_organization
from helmproc.engine.url_secrets import strip_config
from helmproc.journal import Journal, StatusReport

DEFAULT_CHUNK_SIZE = 16


@dataclass(frozen=True)
class StartedJob:
    journal: Journal
    paths: JobPaths
    continued: bool
    n_runs: int
    n_chunks: int


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def exec_options(
    max_workers: str | None,
    memory_budget: str | None,
    disk_budget: str | None,
    work_dir: Path,
    executor: str | None = None,
) -> ExecOptions:
    """Runtime options from CLI text: worker count (a number or ``auto``) and budgets.

    ``auto`` runs as many workers as the memory budget holds at the first estimate of a
    worker's peak, at most one per CPU.
    """
    budget = Budget(
        parse_size(memory_budget) if memory_budget else default_memory_budget(),
        parse_size(disk_budget) if disk_budget else default_disk_budget(work_dir),
    )
    if max_workers is None:
        workers = default_workers()
    elif max_workers == "auto":
        workers = max(1, min(default_workers(), budget.memory_budget // INITIAL_CHUNK_ESTIMATE))
    else:
        try:
            workers = int(max_workers)
        except ValueError:
            raise ConfigError(
                f"--max-workers must be a number or 'auto', not {max_workers!r}"
            ) from None
        if workers < 1:
            raise ConfigError("--max-workers must be at least 1")
    return ExecOptions(max_workers=workers, budget=budget, executor=parse_executor(executor))


def start_job(
    source: Source,
    publisher: Publisher,
    *,
    chunk_size: int,
    work_root: Path,
    journal_path: Path | None = None,
    max_file_bytes: int | None = None,
    source_organization: str | None = None,
) -> StartedJob:
    """Plan and record a job (or find it again). ``max_file_bytes`` (``--max-file-bytes``)
    fails runs with a bigger input file; ``source_organization`` (``--source-organization``,
    else the source's default owner, see ``sources.folder.default_organization``) is who
    published the HELM output. Both are part of the job's identity and config."""
    if max_file_bytes is not None and max_file_bytes < 1:
        raise ConfigError(f"--max-file-bytes must be at least 1 byte, got {max_file_bytes}")
    if source_organization is not None and not source_organization.strip():
        raise ConfigError("--source-organization must not be empty")
    plan = plan_chunks(source.discover(), chunk_size)
    refs = [ref for chunk in plan for ref in chunk.runs]
    limits: dict[str, object] = {}
    if max_file_bytes is not None:
        limits["max_file_bytes"] = max_file_bytes
    # the job is the same whatever credentials its URLs carry (the journal never holds them)
    shown = strip_config(source.config)
    organization = source_organization or default_organization(shown)
    if organization is not None:
        limits["source_organization"] = organization
    job_id = job_id_for({"source": shown, "chunk_size": chunk_size, **limits}, refs)
    key = journal_key(job_id, publisher.config)
    paths = JobPaths.for_journal(journal_path) if journal_path else job_paths(work_root, key)
    # owner-only; a --journal's folder is the user's: only created, never re-moded
    make_private_dir(paths.work_dir, own=journal_path is None)
    journal = Journal.open(paths.journal)
    try:
        existing = journal.job()
        if existing is not None and existing.job_id != job_id:
            raise JournalError(
                f"{paths.journal} already holds job {existing.job_id}, a different job; "
                "use `helmproc resume --journal` for it or pick another --journal"
            )
        if existing is None:
            config = {
                "source": source.config,
                "destination": publisher.config,
                "chunk_size": chunk_size,
                **limits,
            }
            journal.start_job(job_id, config, job_timestamp(), plan)
        if journal_path is None:
            remember_latest(work_root, key)
    except BaseException:
        journal.close()
        raise
    return StartedJob(journal, paths, existing is not None, len(refs), len(plan))


def execute_job(
    journal: Journal,
    options: ExecOptions,
    progress: Progress | None = None,
    *,
    source_config: dict[str, Any] | None = None,
) -> StatusReport:
    """Run the journaled job. ``source_config`` (the live source's config, which may hold
    credentials the journal never stores: ``url_secrets``) replaces the journaled one for
    this execution; a ``resume`` has only the journaled one."""
    job = journal.job()
    if job is None:
        raise JournalError(f"{journal.path} holds no job")
    publisher = publisher_from_config(job.config["destination"])
    coordinator = Coordinator(
        journal,
        JobPaths.for_journal(journal.path),
        source_config if source_config is not None else job.config["source"],
        publisher,
        options,
        progress,
    )
    return read_back(journal, coordinator.execute())


def read_back(journal: Journal, report: StatusReport) -> StatusReport:
    """The job's final status as a fresh reader finds it on disk, after the last event.

    The coordinator's own connection can go on reading pages the file system no longer has
    (a ``-wal`` file deleted or cut while the job ran), so "done" is only said if a new
    connection reads the same thing; otherwise the journal is damaged, and saying so (a
    ``BadJournalFileError``) is the truth.
    """
    try:
        with Journal.open(journal.path, readonly=True) as fresh:
            on_disk = fresh.status()
    except JournalError as exc:
        raise BadJournalFileError(
            f"{journal.path} was damaged while the job ran (read back after its last event: "
            f"{exc}); what it records cannot be trusted"
        ) from None
    mine, theirs = report.to_json(), on_disk.to_json()
    keys = ("done", "chunks", "runs", "rows", "shards")
    if any(mine[k] != theirs[k] for k in keys):
        differ = ", ".join(f"{k} {mine[k]} vs {theirs[k]}" for k in keys if mine[k] != theirs[k])
        raise BadJournalFileError(
            f"{journal.path} was damaged while the job ran: read back after its last event it "
            f"does not hold the job's events ({differ}; its -wal file may have been removed "
            "or cut)"
        )
    return on_disk
