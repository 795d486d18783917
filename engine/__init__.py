"""helmproc.engine: the pipeline that turns HELM runs into Parquet shards.

Stages, one package each, in the order data flows (each imports only the ones below it and the
shared vocabulary; ``pyproject.toml``'s import contracts enforce it):

    job/        one job: start or continue it, plan, the coordinator (the only writer of the
                journal) and its repairs and overruns, executors, budget, interrupts, progress
    publish/    where shards go: a folder, a Hub repo; the committer and its pacer; the card
    export/     a finished dataset into EEE's datastore layout
    chunks/     the worker: one chunk of runs into shard files (spool, shard writer, pid files)
    convert/    one HELM run into Arrow tables of EEE records
    sources/    where runs come from: a folder, the bucket (HTTP), filters, prefetch
    helm/       reading HELM's files: typed JSON views, streamed arrays, decryption, stat values

and the shared vocabulary that everything may import and that imports nothing else from
helmproc: ``errors``, ``facts``, ``safe_paths``, ``durable``, ``dataset_layout``, ``retry``,
``input_files``, ``url_secrets``. The journal (``helmproc.journal``) sits beside the stages:
only ``job/`` uses it, and it imports only the shared vocabulary.

``from helmproc.engine import run_job, DirSource, ...`` is the public Python API (``api.py`` has
the job-level functions): the names of ``_WHERE`` below, each resolved from the module that
defines it on first use (PEP 562 ``__getattr__``) instead of being imported here. Python runs
this file before any module inside ``engine/``, so an eager import of the API here would make
``import helmproc.engine.errors`` (which the journal does) load the whole engine, which imports
the journal, which is then only half initialised: importing the journal first would fail.
Resolving per name also leaves start-up costs alone (no pyarrow for a name that needs none).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helmproc.engine.api import (
        DestinationCheck,
        JobView,
        check_destination,
        job_status,
        job_view,
        recall_options,
        remember_options,
        resume_job,
        run_job,
        verify_job,
    )
    from helmproc.engine.errors import (
        HelmprocError,
    )
    from helmproc.engine.export.writer import (
        DatasetError,
        DatasetNotFoundError,
        ExportIOError,
        ExportReport,
        export_eee,
    )
    from helmproc.engine.facts import (
        RunRef,
    )
    from helmproc.engine.job.budget import (
        format_size,
    )
    from helmproc.engine.job.executors import (
        parse_executor,
    )
    from helmproc.engine.job.interrupts import (
        JobInterrupted,
    )
    from helmproc.engine.job.options import (
        AUTO_WORKERS,
        DEFAULT_FILES_PER_COMMIT,
        DEFAULT_UPLOAD_WORKERS,
        ExecOptions,
        Workers,
        default_workers,
        exec_options,
    )
    from helmproc.engine.job.progress import (
        NullProgress,
        Progress,
        progress_for,
    )
    from helmproc.engine.job.start import (
        DEFAULT_CHUNK_SIZE,
        LedgerFacts,
        StartedJob,
        execute_job,
        start_job,
    )
    from helmproc.engine.job.verify import (
        Mismatch,
        VerifyReport,
        verify_journal,
    )
    from helmproc.engine.job.workdir import (
        DEFAULT_WORK_ROOT,
        find_journal,
    )
    from helmproc.engine.publish.compaction import (
        CompactionReport,
        compact,
        compaction_notice,
    )
    from helmproc.engine.publish.dataset_check import (
        DatasetCheck,
    )
    from helmproc.engine.publish.folder import (
        DirPublisher,
        Publisher,
    )
    from helmproc.engine.publish.hub import (
        HubPublisher,
    )
    from helmproc.engine.publish.hub_failures import (
        HubAuthError,
        HubTokenMissingError,
        HubUnavailableError,
    )
    from helmproc.engine.publish.registry import (
        destination_label,
        make_publisher,
        publisher_from_config,
    )
    from helmproc.engine.sources.bucket import (
        DEFAULT_BASE_URL,
        HttpSource,
    )
    from helmproc.engine.sources.filters import (
        FilteredSource,
        RunFilters,
    )
    from helmproc.engine.sources.folder import (
        DirSource,
        MultiSource,
        Source,
        project_for_folder,
    )
    from helmproc.engine.sources.registry import (
        list_releases,
        list_suites,
        local_root,
        make_source,
        source_from_config,
    )
    from helmproc.journal import (
        Journal,
        StatusReport,
        render_text,
    )

# Every public name and the module that defines it.
_WHERE: dict[str, str] = {
    "AUTO_WORKERS": "helmproc.engine.job.options",
    "CompactionReport": "helmproc.engine.publish.compaction",
    "DEFAULT_BASE_URL": "helmproc.engine.sources.bucket",
    "DEFAULT_CHUNK_SIZE": "helmproc.engine.job.start",
    "DEFAULT_FILES_PER_COMMIT": "helmproc.engine.job.options",
    "DEFAULT_UPLOAD_WORKERS": "helmproc.engine.job.options",
    "DEFAULT_WORK_ROOT": "helmproc.engine.job.workdir",
    "DatasetCheck": "helmproc.engine.publish.dataset_check",
    "DatasetError": "helmproc.engine.export.writer",
    "DatasetNotFoundError": "helmproc.engine.export.writer",
    "DestinationCheck": "helmproc.engine.api",
    "DirPublisher": "helmproc.engine.publish.folder",
    "DirSource": "helmproc.engine.sources.folder",
    "ExecOptions": "helmproc.engine.job.options",
    "ExportIOError": "helmproc.engine.export.writer",
    "ExportReport": "helmproc.engine.export.writer",
    "FilteredSource": "helmproc.engine.sources.filters",
    "HelmprocError": "helmproc.engine.errors",
    "HttpSource": "helmproc.engine.sources.bucket",
    "HubAuthError": "helmproc.engine.publish.hub_failures",
    "HubPublisher": "helmproc.engine.publish.hub",
    "HubTokenMissingError": "helmproc.engine.publish.hub_failures",
    "HubUnavailableError": "helmproc.engine.publish.hub_failures",
    "JobInterrupted": "helmproc.engine.job.interrupts",
    "JobView": "helmproc.engine.api",
    "Journal": "helmproc.journal",
    "LedgerFacts": "helmproc.engine.job.start",
    "Mismatch": "helmproc.engine.job.verify",
    "MultiSource": "helmproc.engine.sources.folder",
    "NullProgress": "helmproc.engine.job.progress",
    "Progress": "helmproc.engine.job.progress",
    "Publisher": "helmproc.engine.publish.folder",
    "RunFilters": "helmproc.engine.sources.filters",
    "RunRef": "helmproc.engine.facts",
    "Source": "helmproc.engine.sources.folder",
    "StartedJob": "helmproc.engine.job.start",
    "StatusReport": "helmproc.journal",
    "VerifyReport": "helmproc.engine.job.verify",
    "Workers": "helmproc.engine.job.options",
    "check_destination": "helmproc.engine.api",
    "compact": "helmproc.engine.publish.compaction",
    "compaction_notice": "helmproc.engine.publish.compaction",
    "default_workers": "helmproc.engine.job.options",
    "destination_label": "helmproc.engine.publish.registry",
    "exec_options": "helmproc.engine.job.options",
    "execute_job": "helmproc.engine.job.start",
    "export_eee": "helmproc.engine.export.writer",
    "find_journal": "helmproc.engine.job.workdir",
    "format_size": "helmproc.engine.job.budget",
    "job_status": "helmproc.engine.api",
    "job_view": "helmproc.engine.api",
    "list_releases": "helmproc.engine.sources.registry",
    "list_suites": "helmproc.engine.sources.registry",
    "local_root": "helmproc.engine.sources.registry",
    "make_publisher": "helmproc.engine.publish.registry",
    "make_source": "helmproc.engine.sources.registry",
    "parse_executor": "helmproc.engine.job.executors",
    "progress_for": "helmproc.engine.job.progress",
    "project_for_folder": "helmproc.engine.sources.folder",
    "publisher_from_config": "helmproc.engine.publish.registry",
    "recall_options": "helmproc.engine.api",
    "remember_options": "helmproc.engine.api",
    "render_text": "helmproc.journal",
    "resume_job": "helmproc.engine.api",
    "run_job": "helmproc.engine.api",
    "source_from_config": "helmproc.engine.sources.registry",
    "start_job": "helmproc.engine.job.start",
    "verify_job": "helmproc.engine.api",
    "verify_journal": "helmproc.engine.job.verify",
}
__all__ = [
    "AUTO_WORKERS",
    "CompactionReport",
    "DEFAULT_BASE_URL",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_FILES_PER_COMMIT",
    "DEFAULT_UPLOAD_WORKERS",
    "DEFAULT_WORK_ROOT",
    "DatasetCheck",
    "DatasetError",
    "DatasetNotFoundError",
    "DestinationCheck",
    "DirPublisher",
    "DirSource",
    "ExecOptions",
    "ExportIOError",
    "ExportReport",
    "FilteredSource",
    "HelmprocError",
    "HttpSource",
    "HubAuthError",
    "HubPublisher",
    "HubTokenMissingError",
    "HubUnavailableError",
    "JobInterrupted",
    "JobView",
    "Journal",
    "LedgerFacts",
    "Mismatch",
    "MultiSource",
    "NullProgress",
    "Progress",
    "Publisher",
    "RunFilters",
    "RunRef",
    "Source",
    "StartedJob",
    "StatusReport",
    "VerifyReport",
    "Workers",
    "check_destination",
    "compact",
    "compaction_notice",
    "default_workers",
    "destination_label",
    "exec_options",
    "execute_job",
    "export_eee",
    "find_journal",
    "format_size",
    "job_status",
    "job_view",
    "list_releases",
    "list_suites",
    "local_root",
    "make_publisher",
    "make_source",
    "parse_executor",
    "progress_for",
    "project_for_folder",
    "publisher_from_config",
    "recall_options",
    "remember_options",
    "render_text",
    "resume_job",
    "run_job",
    "source_from_config",
    "start_job",
    "verify_job",
    "verify_journal",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
