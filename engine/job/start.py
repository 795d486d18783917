"""Library entry points: start (or continue) a job, and execute a journaled job.

``start_job`` first reads what the destination already holds (``publish/ledger.py``: its
``runs`` and ``releases`` tables), then discovers and plans only the runs the destination does
not hold ok (new runs, and runs that failed before), then records the job in its journal in
one transaction before any work: a crash before that commit leaves no job (start again), after
it the plan is
fixed and ``resume`` reuses it. Asking ``start_job`` for a job whose journal already exists
continues that job instead of planning again. ``execute_job`` rebuilds the source and publisher
from the journaled config, so ``resume`` needs nothing but the journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.errors import BadJournalFileError, ConfigError, JournalError
from helmproc.engine.facts import RunRef
from helmproc.engine.job.coordinator import Coordinator
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
from helmproc.engine.publish.ledger import Ledger, read_ledger
from helmproc.engine.publish.registry import publisher_from_config
from helmproc.engine.safe_paths import make_private_dir
from helmproc.engine.sources.folder import Source, default_organization
from helmproc.engine.url_secrets import strip_config
from helmproc.journal import Journal, StatusReport

DEFAULT_CHUNK_SIZE = 16


@dataclass(frozen=True)
class LedgerFacts:
    """What planning found at the destination, for the summary and ``status``: runs the
    source matched, runs already in the dataset, runs whose source changed since they were
    converted (never converted again silently), and damaged groups removed to convert again."""

    matched: int
    already_present: int
    changed: tuple[str, ...]
    damaged_groups: int

    def to_json(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "already_present": self.already_present,
            "changed": list(self.changed),
            "damaged_groups": self.damaged_groups,
        }


@dataclass(frozen=True)
class PlanInput:
    """The runs to plan and the releases rows to add, decided from the destination."""

    refs: list[RunRef]
    release_rows: list[list[str]]
    facts: LedgerFacts


@dataclass(frozen=True)
class StartedJob:
    journal: Journal
    paths: JobPaths
    continued: bool
    n_runs: int
    n_chunks: int
    facts: LedgerFacts | None = None
    ledger: Ledger | None = None


def plan_input(discovered: list[RunRef], ledger: Ledger, source: Source) -> PlanInput:
    """Split the discovered runs by what ``ledger`` holds. A run held ok is skipped; if the
    source can tell its input sizes now (a local folder) and they differ from the recorded
    ones, it is reported as changed (and still not converted: never two versions mixed)."""
    present = ledger.present()
    sizes_now = getattr(source, "input_sizes", None)
    refs: list[RunRef] = []
    changed: list[str] = []
    n_present = 0
    for ref in discovered:
        held = present.get((ref.project, ref.suite, ref.run_name))
        if held is None:
            refs.append(ref)
            continue
        n_present += 1
        if sizes_now is not None and held.source_sizes:
            now = sizes_now(ref)
            if now is not None and now != held.source_sizes:
                changed.append(ref.key)
    wanted = {
        (r.project, r.release, r.suite, r.run_name) for r in discovered if r.release is not None
    }
    release_rows = [list(row) for row in sorted(wanted - ledger.releases)]  # type: ignore[operator]
    facts = LedgerFacts(len(discovered), n_present, tuple(changed), len(ledger.incomplete_groups))
    return PlanInput(refs, release_rows, facts)


def planned_input_bytes(source: Source, refs: list[RunRef]) -> dict[str, int]:
    """Run key -> bytes of the run's input files, for the runs whose sizes the source can
    tell without reading them (a local folder: one stat per file; other sources: none). The
    plan records them for the memory budget's admission estimates (``budget.Budget``)."""
    sizes = getattr(source, "input_sizes", None)
    if sizes is None:
        return {}
    found: dict[str, int] = {}
    for ref in refs:
        text = sizes(ref)
        if text:
            found[ref.key] = sum(int(item.rpartition("=")[2]) for item in text.split(";"))
    return found


def remove_damaged_groups(publisher: Publisher, ledger: Ledger) -> Ledger:
    """Delete what is left of groups missing a file (their runs are converted again), in one
    step; returns the ledger without them."""
    damaged = ledger.incomplete_groups
    if not damaged:
        return ledger
    paths = sorted(p for g in damaged for p in ledger.groups[g].values())
    publisher.replace_files([], paths, f"helmproc: remove {len(damaged)} damaged group(s)")
    return read_ledger(publisher, pin=True)


def start_job(
    source: Source,
    publisher: Publisher,
    *,
    chunk_size: int,
    work_root: Path,
    journal_path: Path | None = None,
    max_file_bytes: int | None = None,
    source_organization: str | None = None,
    discovered: list[RunRef] | None = None,
) -> StartedJob:
    """Plan and record a job (or find it again). ``max_file_bytes`` (``--max-file-bytes``)
    fails runs with a bigger input file; ``source_organization`` (``--source-organization``,
    else the source's default owner, see ``sources.folder.default_organization``) is who
    published the HELM output. Both are part of the job's identity and config.
    ``discovered``: the source's runs if the caller listed them already. The source is read
    before the destination is locked (a bad source touches no destination)."""
    if max_file_bytes is not None and max_file_bytes < 1:
        raise ConfigError(f"--max-file-bytes must be at least 1 byte, got {max_file_bytes}")
    if source_organization is not None and not source_organization.strip():
        raise ConfigError("--source-organization must not be empty")
    if discovered is None:
        discovered = source.discover()
    with publisher.lock("job"):  # re-entrant: `helmproc run` holds it for the whole job
        return _start_job(
            source,
            publisher,
            discovered,
            chunk_size=chunk_size,
            work_root=work_root,
            journal_path=journal_path,
            max_file_bytes=max_file_bytes,
            source_organization=source_organization,
        )


def _start_job(
    source: Source,
    publisher: Publisher,
    discovered: list[RunRef],
    *,
    chunk_size: int,
    work_root: Path,
    journal_path: Path | None,
    max_file_bytes: int | None,
    source_organization: str | None,
) -> StartedJob:
    ledger = read_ledger(publisher, pin=True)
    inputs = plan_input(discovered, ledger, source)
    if ledger.incomplete_groups:
        ledger = remove_damaged_groups(publisher, ledger)
    plan = plan_chunks(inputs.refs, chunk_size)
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
                "ledger": inputs.facts.to_json(),
                "release_rows": inputs.release_rows,
            }
            sizes = planned_input_bytes(source, refs)
            journal.start_job(job_id, config, job_timestamp(), plan, run_bytes=sizes)
        if journal_path is None:
            remember_latest(work_root, key)
    except BaseException:
        journal.close()
        raise
    return StartedJob(
        journal, paths, existing is not None, len(refs), len(plan), inputs.facts, ledger
    )


def execute_job(
    journal: Journal,
    options: ExecOptions,
    progress: Progress | None = None,
    *,
    source_config: dict[str, Any] | None = None,
    ledger: Ledger | None = None,
    publisher: Publisher | None = None,
) -> StatusReport:
    """Run the journaled job to its end, holding the destination (one writer at a time).
    ``source_config`` (the live source's config, which may hold credentials the journal
    never stores: ``url_secrets``) replaces the journaled one for this execution; a
    ``resume`` has only the journaled one. ``ledger``: what planning just read (else it is
    read again here); ``publisher``: the one planning used (a Hub head stays pinned)."""
    job = journal.job()
    if job is None:
        raise JournalError(f"{journal.path} holds no job")
    publisher = publisher or publisher_from_config(job.config["destination"])
    with publisher.lock("job"):
        coordinator = Coordinator(
            journal,
            JobPaths.for_journal(journal.path),
            source_config if source_config is not None else job.config["source"],
            publisher,
            options,
            progress,
            ledger=ledger,
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
