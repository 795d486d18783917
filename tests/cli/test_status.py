"""``helmproc status`` tells what a job is doing now; progress lines keep coming; ``run`` and
``resume`` of a finished job say so.

The journal is real (a real job over the fixture), and so is the lock: the test process holds
a job's journal open for writing, as a coordinator does, and ``status`` runs as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from helmproc.engine.job.coordinator import ExecOptions
from helmproc.engine.job.progress import LogProgress
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.folder import DirSource
from helmproc.journal.store import Journal
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, run_to_end, start

HELMPROC = [sys.executable, "-m", "helmproc.cli"]
LIVE_FIELDS = {
    "source", "destination", "running", "holder_pid", "elapsed_s", "rows_per_s",
    "runs_per_min", "rate_window_s", "eta_s", "last_event_at",
}  # fmt: skip


def helmproc(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)
    return subprocess.run(
        [*HELMPROC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_status_says_whether_a_live_process_holds_the_job(tmp_path: Path) -> None:
    started = start_job(
        DirSource(FIXTURE), DirPublisher(tmp_path / "out"), chunk_size=4, work_root=tmp_path / "w"
    )
    journal = str(started.paths.journal)
    with started.journal:  # this process holds the journal, as a running coordinator does
        held = helmproc(tmp_path, "status", "--json", "--journal", journal)
        text = helmproc(tmp_path, "status", "--journal", journal).stdout
    free = json.loads(helmproc(tmp_path, "status", "--json", "--journal", journal).stdout)
    data = json.loads(held.stdout)
    assert LIVE_FIELDS <= set(data)
    assert (data["running"], data["holder_pid"]) == (True, os.getpid())
    assert (free["running"], free["holder_pid"]) == (False, None)
    assert data["source"] == f"{FIXTURE.resolve()} (project local)"
    assert data["destination"] == str((tmp_path / "out").resolve())
    assert data["last_event_at"] == data["updated_at"]
    assert f"running (pid {os.getpid()} holds the journal)" in text
    assert "not running (no live process holds the journal)" in helmproc(
        tmp_path, "status", "--journal", journal
    ).stdout


def test_rates_and_eta_come_from_the_last_minutes_of_events(tmp_path: Path) -> None:
    from helmproc.cli.activity import RATE_WINDOW_S, job_activity

    work = tmp_path / "w"
    report = run_to_end(FIXTURE, tmp_path / "out", work, chunk_size=4)
    journal_path = next(work.rglob("journal.sqlite"))
    with Journal.open(journal_path, readonly=True) as jr:
        job = jr.job()
        events = jr.events()
        status = jr.status()
    assert job is not None and status.rows == report.rows and status.done
    processed = [e for e in events if e["state"] == "processed"]
    runs = sum(len(e["payload"]["outcomes"]) for e in processed)
    rows = sum(o["n_rows"] for e in processed for o in e["payload"]["outcomes"])
    begun = datetime.fromisoformat(job.started_at)
    old = job_activity(job.config, job.started_at, events, status, 4242, begun + timedelta(1))
    assert old.window_s == RATE_WINDOW_S  # a job older than the window: its last 5 minutes
    assert old.rows_per_s == 0.0 and old.eta_s is None  # nothing processed in them
    late = begun + timedelta(seconds=100)
    live = job_activity(job.config, job.started_at, events, status, 4242, late)
    assert live.window_s == 100.0
    assert live.rows_per_s == rows / 100.0
    assert live.runs_per_min == runs * 60.0 / 100.0
    assert live.eta_s == 0.0  # nothing pending
    assert live.elapsed_s == 100.0
    idle = job_activity(job.config, job.started_at, events, status, None, late)
    assert idle.rows_per_s is None and idle.eta_s is None  # no live process: no rate
    assert idle.elapsed_s == (datetime.fromisoformat(events[-1]["at"]) - begun).total_seconds()


def test_watch_refreshes_until_the_job_is_done(tmp_path: Path) -> None:
    started = start_job(
        DirSource(FIXTURE), DirPublisher(tmp_path / "out"), chunk_size=4, work_root=tmp_path / "w"
    )
    journal = str(started.paths.journal)
    with started.journal:
        proc = subprocess.Popen(
            [*HELMPROC, "status", "--watch", "--every", "0.2", "--json", "--journal", journal],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        reports = [json.loads(proc.stdout.readline()) for _ in range(3)]  # three refreshes
        proc.kill()
        proc.communicate(timeout=60)
    assert all(r["running"] and not r["done"] for r in reports)
    assert len({r["elapsed_s"] for r in reports}) == 3  # each a fresh reading


def test_piped_progress_prints_on_ticks_even_when_no_chunk_finishes() -> None:
    stream = io.StringIO()
    progress = LogProgress(stream, interval=0.0)
    progress.start(total_chunks=4, done_chunks=1, total_runs=10, done_runs=3, done_rows=30)
    progress.tick()
    progress.tick()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # the start line, then one per tick: no chunk event needed
    assert all("runs 3/10" in line and "rows 30," in line for line in lines)


def test_the_coordinator_ticks_progress_while_it_waits(tmp_path: Path) -> None:
    class Ticks(LogProgress):
        def __init__(self) -> None:
            super().__init__(io.StringIO(), interval=3600.0)
            self.ticks = 0

        def tick(self) -> None:
            self.ticks += 1

    progress = Ticks()
    started = start(FIXTURE, tmp_path / "out", tmp_path / "w", chunk_size=4)
    with started.journal as journal:
        assert execute_job(journal, ExecOptions(max_workers=1), progress).done
    assert progress.ticks > 0


def test_run_and_resume_of_a_finished_job_say_already_complete(tmp_path: Path) -> None:
    args = ["--source", str(FIXTURE), "--to", "out", "--max-workers", "1"]
    first = helmproc(tmp_path, "run", *args, "--memory-budget", "3G")
    assert first.returncode == 0, first.stderr
    again = helmproc(tmp_path, "run", *args, "--memory-budget", "3G")
    resumed = helmproc(tmp_path, "resume")
    overridden = helmproc(tmp_path, "resume", "--max-workers", "2")
    total = json.loads(helmproc(tmp_path, "status", "--json").stdout)
    # `run` again plans nothing new: the dataset already holds every run (its ledger)
    assert again.returncode == 0, again.stderr
    assert "nothing new to convert" in again.stderr
    for proc in (again, resumed, overridden):
        assert proc.returncode == 0, proc.stderr
        if proc is not again:
            assert "is already complete; nothing to do" in proc.stderr
        assert proc.stdout.startswith(
            f"done: {total['runs']['ok']} runs converted, 0 failed, {total['rows']} instance rows"
        )
        assert "chunks 0/" not in proc.stderr  # no work started
    assert "using the job's recorded options: --max-workers 1, --memory-budget 3G" in (
        resumed.stderr
    )
    assert "overriding the recorded options: --max-workers 2 (recorded: 1)" in overridden.stderr
