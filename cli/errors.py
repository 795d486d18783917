"""The one table from exception type to what the user reads, and the exit code.

Ordered: the first row whose type matches wins, so subclasses come before their bases. Each
message names what went wrong and the next command to try, chosen for the situation: a row's
``hint_no_job`` is used when no job was recorded (nothing to ``resume``: a failure while
planning, or a ``list`` command). Messages are built from the exception text, which never
contains a token (publishers strip credentials before raising).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from helmproc.engine.errors import (
    BadJournalFileError,
    ConfigError,
    DestinationBusyError,
    DestinationConflictError,
    DiskFullError,
    HelmprocError,
    IllegalTransitionError,
    JournalError,
    JournalLockedError,
    NoJobError,
    PublishError,
    SourceError,
    TransientError,
    UnreachableError,
    UnwritableError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# `run --strict` (and a busy destination): distinct codes for unattended use
EXIT_BUSY = 3
EXIT_NOTHING_MATCHED = 4
EXIT_ALL_FAILED = 5


@dataclass(frozen=True)
class ErrorRow:
    exc_type: type[BaseException]
    title: str
    hint: str
    exit_code: int = EXIT_ERROR
    hint_no_job: str | None = None  # when no job was recorded (default: ``hint``)


AGAIN = "run the same command again"


@functools.cache
def error_table() -> tuple[ErrorRow, ...]:
    """The table, built on first use: the export writer (pyarrow.compute) and the Hub errors
    (requests) are imported only when an error is described, not at every start-up."""
    from helmproc.engine import (  # each name resolved from its module on first use
        DatasetError,
        DatasetNotFoundError,
        ExportIOError,
        HubAuthError,
        HubTokenMissingError,
        HubUnavailableError,
    )

    return (
        ErrorRow(
            JournalLockedError,
            "journal in use",
            "wait for the other helmproc to finish, or stop it",
        ),
        ErrorRow(
            NoJobError, "no job found", "start one with `helmproc run`, or pass --journal PATH"
        ),
        ErrorRow(
            IllegalTransitionError,
            "journal refused a state change",
            "this is a bug; `helmproc status` shows the recorded state",
        ),
        ErrorRow(
            BadJournalFileError,
            "journal unreadable",
            "check that --journal names the job's journal.sqlite, or restore it from a backup; "
            "moving it aside and running the same `helmproc run` starts the job over",
        ),
        ErrorRow(JournalError, "journal error", "`helmproc status` shows what the journal holds"),
        ErrorRow(ConfigError, "invalid configuration", "see `helmproc run --help`", EXIT_USAGE),
        ErrorRow(
            UnreachableError,
            "",
            "`helmproc resume` continues once the network is back",
            hint_no_job=f"once online, {AGAIN}; offline, the HELM output bundled with the "
            "tests works: `helmproc run --source tests/data/benchmark_output --to DIR`",
        ),
        ErrorRow(SourceError, "cannot read the source", "check the --source / --release / --suite"),
        ErrorRow(
            HubTokenMissingError,
            "no Hugging Face token (the Hub was not contacted)",
            f"set HF_TOKEN to a write token (or `hf auth login`), then {AGAIN}",
        ),
        ErrorRow(
            HubAuthError,
            "the Hugging Face Hub refused the credentials",
            "set HF_TOKEN to a write token (or `hf auth login`), then `helmproc resume`",
            hint_no_job=f"set HF_TOKEN to a write token (or `hf auth login`), then {AGAIN}",
        ),
        ErrorRow(
            HubUnavailableError,
            "the Hugging Face Hub is unavailable or rate limiting",
            "`helmproc resume` continues later; commits that landed are not sent again",
            hint_no_job=f"{AGAIN} later",
        ),
        ErrorRow(
            DatasetNotFoundError,
            "no dataset folder",
            "pass --from the folder `helmproc run --to` wrote",
            EXIT_USAGE,
        ),
        ErrorRow(
            DatasetError,
            "not a helmproc dataset",
            "write one with `helmproc run --source DIR --to DIR`",
        ),
        ErrorRow(
            ExportIOError,
            "export-eee could not read or write",
            "fix the cause, then run the same `helmproc export-eee`: it rewrites the same files",
        ),
        ErrorRow(
            DestinationBusyError,
            "destination in use",
            "wait for the other job to finish, then run the same command again: it converts "
            "only what is not there yet",
            EXIT_BUSY,
        ),
        ErrorRow(
            DestinationConflictError,
            "another job published these runs meanwhile",
            "run the same `helmproc run` again: a new job skips what the destination holds",
        ),
        ErrorRow(
            DiskFullError,
            "out of disk space",
            "free space (or lower --disk-budget), then `helmproc resume`",
            hint_no_job=f"free space, then {AGAIN}",
        ),
        ErrorRow(
            UnwritableError,
            "a work folder is not writable",
            "make it writable (remount read-write, fix its permissions), then `helmproc resume`",
            hint_no_job=f"make it writable, then {AGAIN}",
        ),
        ErrorRow(
            PublishError,
            "publishing failed",
            "fix the destination, then `helmproc resume`",
            hint_no_job=f"fix the destination, then {AGAIN}",
        ),
        ErrorRow(
            TransientError,
            "temporary failure",
            "`helmproc resume` continues where this stopped",
            hint_no_job=f"{AGAIN} later",
        ),
        ErrorRow(
            HelmprocError,
            "error",
            "`helmproc status` shows the job's state",
            hint_no_job=f"fix the cause, then {AGAIN}",
        ),
        ErrorRow(
            BrokenPipeError,
            "output closed (broken pipe)",
            "the reader of helmproc's output went away; `helmproc status` shows the job's state",
        ),
        ErrorRow(
            OSError,
            "system error",
            "fix the cause, then `helmproc resume` continues the job",
            hint_no_job=f"fix the cause, then {AGAIN}",
        ),
    )


def describe(exc: BaseException, job_recorded: bool = True) -> tuple[str, int] | None:
    """The user-facing message and exit code for ``exc``, or None if it is not ours to explain.
    ``job_recorded`` is False when the command failed before any job was recorded."""
    for row in error_table():
        if isinstance(exc, row.exc_type):
            hint = row.hint if job_recorded else row.hint_no_job or row.hint
            title = f"{row.title}: " if row.title else ""
            return f"helmproc: {title}{exc}\n  next: {hint}", row.exit_code
    return None


def interrupted_message(detail: str, job_recorded: bool) -> str:
    """What an interrupted command prints last (Ctrl-C, SIGTERM)."""
    if job_recorded:
        return f"helmproc: interrupted{detail}; `helmproc resume` continues where this stopped"
    return f"helmproc: interrupted{detail} before any job was recorded; nothing to resume"
