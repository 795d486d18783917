"""How one session of a job executes: worker count, retries, publishing pace, executor.

Runtime choices only, never journaled: ``resume`` may change every one of them. Built once by
``start.exec_options`` (the CLI and the Python API both go through it). Nothing here touches
disk, so nothing here survives a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from helmproc.engine.job.budget import Budget
from helmproc.engine.job.executors import LOCAL

DEFAULT_MAX_ATTEMPTS = 3
CARD_INTERVAL_S = 600.0
DEFAULT_FILES_PER_COMMIT = 50


@dataclass(frozen=True)
class ExecOptions:
    max_workers: int
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    publish_max_files: int = DEFAULT_FILES_PER_COMMIT
    budget: Budget | None = field(default=None, compare=False)
    upload_workers: int = 1
    # None: the destination's own pace (Hub: 100 commits/hour; a local folder: unlimited)
    commits_per_hour: float | None = None
    card_interval_s: float = CARD_INTERVAL_S
    # "local" (process pool) or "dask://HOST:PORT"
    executor: str = LOCAL
    # process again every chunk whose latest outcomes include a failed run (resume --retry-failed)
    retry_failed: bool = False
