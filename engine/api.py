"""helmproc's public Python API: what a notebook, another tool and the ``helmproc`` CLI call.

    from helmproc.engine import DirPublisher, DirSource, run_job

    source = DirSource("tests/data/benchmark_output", release="v1.1.0")
    report = run_job(source, DirPublisher("dataset"))
    print(report.to_json()["runs"])  # {'ok': 9, 'failed': 0}

``run_job`` = ``start_job`` (discover, plan, journal the plan) + ``execute_job`` (convert,
publish, clean, journaling each step). After any crash ``resume_job`` finishes the job from its
journal alone; ``job_status`` and ``verify_job`` read the journal (safe while a job runs);
``export_eee`` turns a finished dataset into EEE's datastore layout. ``exec_options`` builds a
session's runtime options (workers, memory and disk budgets, executor, publishing pace) in one
place. This module holds the four job-level functions; ``helmproc.engine`` exports them with
the stages' types and functions (``engine/__init__.py`` lists every public name and where it
lives). Nothing here holds state: after a crash, ``resume_job`` continues from the journal.
"""

from __future__ import annotations

from pathlib import Path

from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.progress import Progress
from helmproc.engine.job.start import DEFAULT_CHUNK_SIZE, exec_options, execute_job, start_job
from helmproc.engine.job.verify import VerifyReport, verify_journal
from helmproc.engine.job.workdir import DEFAULT_WORK_ROOT, find_journal
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.sources.folder import Source
from helmproc.journal import Journal, StatusReport

__all__ = ["job_status", "resume_job", "run_job", "verify_job"]


def run_job(
    source: Source,
    publisher: Publisher,
    *,
    options: ExecOptions | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    work_root: Path = DEFAULT_WORK_ROOT,
    journal_path: Path | None = None,
    max_file_bytes: int | None = None,
    progress: Progress | None = None,
) -> StatusReport:
    """Start (or continue) the job that converts ``source`` into ``publisher`` and run it to
    the end; the final status. ``options`` default to ``exec_options`` for the job's folder."""
    started = start_job(
        source,
        publisher,
        chunk_size=chunk_size,
        work_root=work_root,
        journal_path=journal_path,
        max_file_bytes=max_file_bytes,
    )
    with started.journal as journal:
        options = options or exec_options(None, None, None, journal.path.parent)
        return execute_job(journal, options, progress)


def resume_job(
    journal_path: Path | None = None,
    *,
    options: ExecOptions | None = None,
    work_root: Path = DEFAULT_WORK_ROOT,
    progress: Progress | None = None,
) -> StatusReport:
    """Finish the job in ``journal_path`` (default: the one last started in ``work_root``)."""
    with Journal.open(find_journal(work_root, journal_path)) as journal:
        options = options or exec_options(None, None, None, journal.path.parent)
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
