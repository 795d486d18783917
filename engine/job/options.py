"""How one session of a job executes: worker count, budgets, retries, publishing pace, executor.

Runtime choices only, never journaled: ``resume`` may change every one of them. ``ExecOptions``
is built in one place, ``exec_options``, from typed values (the CLI parses its text into them;
None: the default); the Python API and the CLI both go through it. Nothing here touches disk
(the default disk budget only asks how much space is free), so nothing here survives a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from helmproc.engine.errors import ConfigError
from helmproc.engine.job.budget import (
    INITIAL_CHUNK_ESTIMATE,
    Budget,
    default_disk_budget,
    default_memory_budget,
)
from helmproc.engine.job.executors import LOCAL, parse_executor

DEFAULT_MAX_ATTEMPTS = 3
CARD_INTERVAL_S = 600.0
DEFAULT_FILES_PER_COMMIT = 50
DEFAULT_UPLOAD_WORKERS = 1
# as many workers as the memory budget holds at the first estimate of a worker's peak
AUTO_WORKERS: Final = "auto"
Workers = int | Literal["auto"]


@dataclass(frozen=True)
class ExecOptions:
    max_workers: int
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    publish_max_files: int = DEFAULT_FILES_PER_COMMIT
    budget: Budget | None = field(default=None, compare=False)
    upload_workers: int = DEFAULT_UPLOAD_WORKERS
    # None: the destination's own pace (Hub: 100 commits/hour; a local folder: unlimited)
    commits_per_hour: float | None = None
    card_interval_s: float = CARD_INTERVAL_S
    # "local" (process pool) or "dask://HOST:PORT"
    executor: str = LOCAL
    # process again every chunk whose latest outcomes include a failed run (resume --retry-failed)
    retry_failed: bool = False


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def exec_options(
    work_dir: Path,
    *,
    max_workers: Workers | None = None,
    memory_budget: int | None = None,
    disk_budget: int | None = None,
    executor: str | None = None,
    upload_workers: int | None = None,
    files_per_commit: int | None = None,
    commits_per_hour: float | None = None,
    retry_failed: bool = False,
) -> ExecOptions:
    """A session's options; None is the default: one worker per CPU, 60% of the available
    memory, half the free space of ``work_dir``'s disk, the local executor, one upload worker,
    ``DEFAULT_FILES_PER_COMMIT`` files a commit, the destination's own pace.

    ``max_workers="auto"`` runs as many workers as the memory budget holds at the first
    estimate of a worker's peak, at most one per CPU.
    """
    budget = Budget(  # refuses a budget below one byte
        memory_budget if memory_budget is not None else default_memory_budget(),
        disk_budget if disk_budget is not None else default_disk_budget(work_dir),
    )
    if max_workers is None:
        workers = default_workers()
    elif max_workers == AUTO_WORKERS:
        workers = max(1, min(default_workers(), budget.memory_budget // INITIAL_CHUNK_ESTIMATE))
    else:
        workers = max_workers
    for name, value in (
        ("max_workers", workers),
        ("upload_workers", upload_workers),
        ("files_per_commit", files_per_commit),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name} must be a whole number, not {value!r}")
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    return ExecOptions(
        max_workers=workers,
        budget=budget,
        executor=parse_executor(executor),
        upload_workers=upload_workers or DEFAULT_UPLOAD_WORKERS,
        publish_max_files=files_per_commit or DEFAULT_FILES_PER_COMMIT,
        commits_per_hour=commits_per_hour,
        retry_failed=retry_failed,
    )
