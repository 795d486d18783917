"""The `helmproc` command as a user runs it: real subprocesses, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helmproc.engine.chunks.hold_points import ENV as HOLD_ENV
from helmproc.engine.chunks.hold_points import gate, held_marks
from helmproc.journal import Journal
from tests.fakes.jobkit import (
    FIXED_EPOCH,
    FIXTURE,
    HELMPROC,
    folder_digest,
    grow_corpus,
    processed_events,
    wait_for,
)
from tests.fakes.jobkit import (
    helmproc as run_helmproc,
)


def helmproc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_helmproc(cwd, *args, check=check)


def test_run_status_and_load_dataset(tmp_path: Path) -> None:
    proc = helmproc(tmp_path, "run", "--source", str(FIXTURE), "--to", "out", "--chunk-size", "4")
    assert "done: 12 runs converted, 0 failed" in proc.stdout
    assert "helmproc:" in proc.stderr  # narration on stderr, not stdout
    status = json.loads(helmproc(tmp_path, "status", "--json").stdout)
    assert status["done"] is True
    assert status["chunks"]["cleaned"] == 5  # sizes 1, 2, 4, 4, 1
    assert status["runs"] == {"ok": 12, "failed": 0}
    assert status["failures"] == []
    assert status["started_at"] and status["updated_at"]
    text = helmproc(tmp_path, "status").stdout
    assert "cleaned" in text

    import datasets

    ds = datasets.load_dataset(str(tmp_path / "out"), "instances", split="train")
    assert ds.num_rows == status["rows"]
    assert {"sample_id", "evaluation", "helm_run", "helm_train_trial"} <= set(ds.column_names)
    runs = datasets.load_dataset(str(tmp_path / "out"), "runs", split="train")
    assert runs.num_rows == 12


def test_resume_and_status_without_a_job_say_what_to_do(tmp_path: Path) -> None:
    for cmd in ("resume", "status"):
        proc = helmproc(tmp_path, cmd, check=False)
        assert proc.returncode == 1
        assert "no job found" in proc.stderr and "helmproc run" in proc.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    proc = helmproc(tmp_path, "run", "--chunk-size", "0", "--source", str(FIXTURE), check=False)
    assert proc.returncode == 2
    missing = helmproc(tmp_path, "run", "--source", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.mark.parametrize("command", ["run", "resume", "status"])
def test_every_command_has_help(tmp_path: Path, command: str) -> None:
    proc = helmproc(tmp_path, command, "--help")
    assert "--journal" in proc.stdout


def hold_all_but_the_first(hold: Path, n_chunks: int) -> dict[str, str]:
    """Gates holding chunks 1.. at their start (engine/chunks/hold_points.py), and the
    environment that arms them: the job journals chunk 0, then waits until they are removed."""
    hold.mkdir()
    for cid in range(1, n_chunks):
        gate(hold, cid).touch()
    return dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH, **{HOLD_ENV: str(hold)})


def journal_in(cwd: Path) -> Path | None:
    found = list(cwd.glob(".helmproc/jobs/*/journal.sqlite"))
    return found[0] if found else None


def test_kill_9_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    names = grow_corpus(corpus, copies=8)  # 56 runs, chunk size 2 -> 28 chunks
    args = ["--source", str(corpus), "--to", "out", "--chunk-size", "2", "--max-workers", "1"]

    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    helmproc(ref_dir, "run", *args)

    crash_dir = tmp_path / "crash"
    crash_dir.mkdir()
    hold = tmp_path / "hold"
    proc = subprocess.Popen(
        [*HELMPROC, "run", *args, "--quiet"],
        cwd=crash_dir,
        env=hold_all_but_the_first(hold, 28),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # chunk 0 journaled, chunk 1 held in a worker: the job is mid-way, on any machine
        wait_for(lambda: processed_events(journal_in(crash_dir)) == 1, proc)
        wait_for(lambda: held_marks(hold, 1) != [], proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # coordinator and its workers, no cleanup
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    before = json.loads(helmproc(crash_dir, "status", "--json").stdout)
    assert before["done"] is False
    journal = journal_in(crash_dir)
    assert journal is not None
    with Journal.open(journal, readonly=True) as opened:
        first_chunk = len(opened.plan()[0].runs)
    assert before["runs"] == {"ok": first_chunk, "failed": 0}  # chunk 0's runs, nothing after

    helmproc(crash_dir, "resume", "--max-workers", "2")  # not held: no HELMPROC_TEST_HOLD
    after = json.loads(helmproc(crash_dir, "status", "--json").stdout)
    assert after["done"] is True
    assert folder_digest(crash_dir / "out") == folder_digest(ref_dir / "out")
    runs = pq.read_table(sorted((crash_dir / "out").glob("runs/**/*.parquet"))).column("helm_run")
    assert sorted(runs.to_pylist()) == names  # none missing, none twice


def test_second_coordinator_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    grow_corpus(corpus, copies=8)
    args = ["run", "--source", str(corpus), "--to", "out"]
    args += ["--chunk-size", "1", "--max-workers", "1"]
    hold = tmp_path / "hold"
    first = subprocess.Popen(
        [*HELMPROC, *args, "--quiet"],
        cwd=tmp_path,
        env=hold_all_but_the_first(hold, 56),  # the first job cannot end while the second tries
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: held_marks(hold, 1) != [], first)  # it holds the lock and works
        second = helmproc(tmp_path, *args, check=False)
        assert first.poll() is None
        # the destination's writer lock refuses it first (before the journal's lock would)
        assert second.returncode == 3
        assert "destination in use" in second.stderr
        assert f"pid {first.pid}" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
