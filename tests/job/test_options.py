"""``exec_options``: the one place a session's ``ExecOptions`` is built, from typed values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helmproc.engine.errors import ConfigError
from helmproc.engine.job.budget import INITIAL_CHUNK_ESTIMATE
from helmproc.engine.job.options import (
    DEFAULT_FILES_PER_COMMIT,
    DEFAULT_UPLOAD_WORKERS,
    exec_options,
)


def test_auto_workers_follow_the_memory_budget(tmp_path: Path) -> None:
    # the budget holds one worker at the first estimate of its peak, whatever the CPU count
    one = exec_options(tmp_path, max_workers="auto", memory_budget=INITIAL_CHUNK_ESTIMATE + 1)
    assert one.max_workers == 1
    many = exec_options(tmp_path, max_workers="auto", memory_budget=1 << 50)
    assert many.max_workers == max(1, os.cpu_count() or 1)


def test_defaults_and_given_values(tmp_path: Path) -> None:
    default = exec_options(tmp_path)
    assert default.max_workers == max(1, os.cpu_count() or 1)
    assert default.budget is not None and default.budget.memory_budget > 0
    assert (default.upload_workers, default.publish_max_files) == (
        DEFAULT_UPLOAD_WORKERS,
        DEFAULT_FILES_PER_COMMIT,
    )
    assert (default.executor, default.commits_per_hour, default.retry_failed) == (
        "local",
        None,
        False,
    )
    given = exec_options(
        tmp_path,
        max_workers=3,
        memory_budget=300 << 20,
        disk_budget=1 << 30,
        executor="dask://127.0.0.1:8786",
        upload_workers=2,
        files_per_commit=7,
        commits_per_hour=36_000.0,
        retry_failed=True,
    )
    assert given.budget is not None
    assert (given.budget.memory_budget, given.budget.disk_budget) == (300 << 20, 1 << 30)
    assert (given.max_workers, given.executor, given.upload_workers) == (
        3,
        "dask://127.0.0.1:8786",
        2,
    )
    assert (given.publish_max_files, given.commits_per_hour, given.retry_failed) == (
        7,
        36_000.0,
        True,
    )


def test_text_and_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_workers must be a whole number"):
        exec_options(tmp_path, max_workers="4")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_workers must be at least 1"):
        exec_options(tmp_path, max_workers=0)
    with pytest.raises(ConfigError, match="files_per_commit must be at least 1"):
        exec_options(tmp_path, files_per_commit=0)
    with pytest.raises(ConfigError, match="budgets must be positive"):
        exec_options(tmp_path, memory_budget=0)
    with pytest.raises(ConfigError, match="--executor"):
        exec_options(tmp_path, executor="spark://x")
