"""Truth at the end: a job says "done" only if its journal on disk says so; a folder that stops
taking writes (read-only, full: real small file systems, mounted for the test) stops the job at
once with the path; a closed output is a message from the error table, not a traceback.

The file-system cases mount a tmpfs (``mount -t tmpfs -o size=...``), which needs root: CI runs
the suite as root, as on the development machines.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helmproc.engine.errors import BadJournalFileError, DiskFullError, UnwritableError
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.progress import NullProgress
from helmproc.engine.job.start import execute_job
from helmproc.journal import Journal
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, folder_digest, start

pytestmark = pytest.mark.usefixtures("fixed_epoch")


class OnFirstChunk(NullProgress):
    """Progress that does ``action`` once, when the first chunk is journaled processed."""

    def __init__(self, action: Any) -> None:
        self.action = action
        self.fired = False

    def chunk_processed(self, result: Any) -> None:
        if not self.fired:
            self.fired = True
            self.action()


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


@pytest.mark.parametrize("damage", ["removed", "cut"])
def test_a_journal_damaged_mid_job_is_not_reported_done(tmp_path: Path, damage: str) -> None:
    started = start(FIXTURE, tmp_path / "out", tmp_path / "work", chunk_size=2)
    wal = Path(f"{started.paths.journal}-wal")

    def break_wal() -> None:
        if damage == "removed":
            wal.unlink()
        else:
            with wal.open("r+b") as fh:
                fh.truncate(wal.stat().st_size // 3)

    with started.journal as journal:
        with pytest.raises(BadJournalFileError, match="was damaged while the job ran"):
            execute_job(journal, ExecOptions(max_workers=1), OnFirstChunk(break_wal))


def test_a_read_only_staging_folder_stops_the_job_at_once(tmp_path: Path) -> None:
    started = start(FIXTURE, tmp_path / "out", tmp_path / "work", chunk_size=1)
    staging = started.paths.staging
    with tmpfs(staging, "64m"), started.journal as journal:
        progress = OnFirstChunk(lambda: remount(staging, "ro"))
        with pytest.raises(UnwritableError) as info:
            execute_job(journal, ExecOptions(max_workers=1), progress)
        assert str(staging) in str(info.value) and "Read-only file system" in str(info.value)
        failed = [e for e in journal.events() if e["state"] == "failed"]
        assert len(failed) <= 1  # stopped at the first refusal, not every chunk three times
        assert journal.status().to_json()["done"] is False


def test_disk_full_on_a_real_small_filesystem_stops_and_resume_completes(
    tmp_path: Path, reference: dict[str, str]
) -> None:
    started = start(FIXTURE, tmp_path / "out", tmp_path / "work")
    staging = started.paths.staging
    with tmpfs(staging, "16k"):
        with started.journal as journal:
            with pytest.raises(DiskFullError) as info:
                execute_job(journal, ExecOptions(max_workers=2))
            assert info.value.path.startswith(str(staging))
            assert journal.status().to_json()["done"] is False
        assert not list(staging.rglob("*.tmp-*"))  # no half-written shard left behind
        remount(staging, "size=64m")  # space freed
        with Journal.open(started.paths.journal) as journal:
            assert execute_job(journal, ExecOptions(max_workers=2)).to_json()["done"] is True
    assert folder_digest(tmp_path / "out") == reference


def test_a_closed_output_is_an_error_table_message(tmp_path: Path) -> None:
    """`helmproc status --json` writing into a pipe nobody reads any more."""
    subprocess.run(
        [sys.executable, "-m", "helmproc.cli", "run", "--source", str(FIXTURE), "--to", "out"],
        cwd=tmp_path,
        env={**__import__("os").environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH},
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "helmproc.cli", "status", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 1, text
    assert "helmproc: output closed (broken pipe)" in text and "next: " in text
    assert "Traceback" not in text and "Exception ignored" not in text
