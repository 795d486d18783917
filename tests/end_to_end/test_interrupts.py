"""Stopping on purpose and by accident: SIGINT/SIGTERM (once, twice) and a full disk."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from helmproc.engine.chunks.hold_points import ENV as HOLD_ENV
from helmproc.engine.chunks.hold_points import gate, held_marks
from helmproc.engine.durable import simulate_disk_full
from helmproc.engine.errors import DiskFullError
from helmproc.engine.job.executors import LocalExecutor
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import StartedJob, execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.bucket import HttpSource
from helmproc.journal import Journal
from tests.fakes.bucket_server import BucketServer
from tests.fakes.jobkit import (
    FIXED_EPOCH,
    FIXTURE,
    HELMPROC,
    coordinator,
    folder_digest,
    grow_corpus,
    processed_events,
    run_to_end,
    start,
    wait_for,
)

N_CHUNKS = 28  # the corpus's 56 runs in chunks of 2


def env() -> dict[str, str]:
    return dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)


def processed_in(cwd: Path) -> int:
    found = list(cwd.glob(".helmproc/jobs/*/journal.sqlite"))
    return processed_events(found[0] if found else None)


def processed_chunks(cwd: Path) -> list[int]:
    """Chunk ids with a ``processed`` event in the job's journal."""
    journal = next(cwd.glob(".helmproc/jobs/*/journal.sqlite"))
    with Journal.open(journal, readonly=True) as opened:
        return sorted({e["chunk_id"] for e in opened.events() if e["state"] == "processed"})


def status(cwd: Path) -> dict:
    proc = subprocess.run(
        [*HELMPROC, "status", "--json"], cwd=cwd, env=env(), capture_output=True, text=True
    )
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A 56-run corpus and the digest of its uninterrupted conversion."""
    root = tmp_path_factory.mktemp("interrupts")
    grow_corpus(root / "corpus", copies=8)
    ref = root / "ref"
    ref.mkdir()
    args = ["run", "--source", str(root / "corpus"), "--to", "out", "--chunk-size", "2"]
    subprocess.run([*HELMPROC, *args, "--quiet"], cwd=ref, env=env(), check=True, timeout=300)
    return root / "corpus", folder_digest(ref / "out")


@pytest.mark.parametrize(
    "signals",
    [
        [signal.SIGINT],  # Ctrl-C once: finish chunks in flight, then stop
        [signal.SIGTERM],  # a service manager's stop: same
        [signal.SIGINT, signal.SIGINT],  # twice: stop at once
    ],
)
def test_signal_stops_with_130_and_resume_completes(
    tmp_path: Path, corpus: tuple[Path, dict[str, str]], signals: list[signal.Signals]
) -> None:
    source, reference = corpus
    # every chunk but the first is held at its start (chunks/hold_points.py) until released:
    # when the signal lands the job has journaled chunk 0 and is converting chunk 1, on any
    # machine, however fast
    hold = tmp_path / "hold"
    hold.mkdir()
    for cid in range(1, N_CHUNKS):
        gate(hold, cid).touch()
    args = ["run", "--source", str(source), "--to", "out"]
    args += ["--chunk-size", "2", "--max-workers", "1"]
    proc = subprocess.Popen(
        [*HELMPROC, *args],
        cwd=tmp_path,
        env=dict(env(), **{HOLD_ENV: str(hold)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: processed_in(tmp_path) == 1 and held_marks(hold, 1) != [], proc)
        assert proc.stderr is not None
        lines: list[str] = []
        noted = threading.Event()  # the coordinator has taken the first signal

        def read_stderr() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                lines.append(line)
                if "finishing the chunks in flight" in line:
                    noted.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        for n, sig in enumerate(signals):
            if n:  # two signals sent at once may reach Python's handler as one
                assert noted.wait(timeout=60)
            proc.send_signal(sig)
        assert noted.wait(timeout=60)
        assert proc.poll() is None  # held: still running after it took the signal
        for cid in range(1, N_CHUNKS):  # release: the chunks in flight may now finish
            gate(hold, cid).unlink()
        proc.wait(timeout=120)
        reader.join(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "helmproc resume" in err, err
    processed = processed_chunks(tmp_path)
    if len(signals) == 1:
        assert "finishing the chunks in flight" in err
        # the chunk held when the signal came was finished, and no chunk was started after it
        assert 1 in processed and len(processed) < N_CHUNKS, processed
    else:  # the second signal stops at once, and still says so last
        assert err.strip().splitlines()[-1].startswith("helmproc: interrupted (stopped at once")
        assert processed == [0]  # the held chunk was abandoned, not finished
    before = status(tmp_path)
    assert before["done"] is False
    # a graceful stop leaves no chunk half-way: each is planned, cleaned, or (rarely) waiting
    # to be published; never processed-and-lost
    resumed = subprocess.run(
        [*HELMPROC, "resume"], cwd=tmp_path, env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    # the job's own runtime options, said; the counter starts from the runs already converted
    assert "using the job's recorded options: --max-workers 1" in resumed.stderr
    assert "helmproc: 1 worker, memory budget" in resumed.stderr
    first = next(ln for ln in resumed.stderr.splitlines() if ln.startswith("helmproc: chunks"))
    done_before = before["runs"]["ok"] + before["runs"]["failed"]
    assert f"runs {done_before}/{before['n_runs']} " in first
    assert status(tmp_path)["done"] is True
    assert folder_digest(tmp_path / "out") == reference


class ForkExecutor(LocalExecutor):
    """The local executor with fork-started workers, so a test's patch reaches them."""

    def __init__(self, max_workers: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context("fork"))


def test_disk_full_fails_the_chunk_names_the_path_and_resume_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    run_to_end(FIXTURE, tmp_path / "ref", tmp_path / "w0")
    reference = folder_digest(tmp_path / "ref")

    started = start(FIXTURE, tmp_path / "out", tmp_path / "work")
    with started.journal as journal:
        coord = coordinator(started, tmp_path / "out", pool_factory=ForkExecutor)
        # the disk fills up while chunk 2's instances shard is written (workers are forked)
        full = simulate_disk_full(lambda path: "instances-000002.parquet" in path.name)
        with full, pytest.raises(DiskFullError) as info:
            coord.execute()
        assert "disk full at" in str(info.value)
        assert "instances-000002.parquet" in str(info.value)
        failed = [e for e in journal.events() if e["state"] == "failed"]
        assert [e["chunk_id"] for e in failed] == [2]  # recorded once, not retried blindly
        assert failed[0]["payload"]["error"].startswith("disk full at")
        report = journal.status().to_json()
        assert report["done"] is False and report["chunks"]["failed"] == 1
    assert not list(started.paths.staging.rglob("*.tmp-*"))  # no half-written shard left

    with Journal.open(started.paths.journal) as journal:
        assert execute_job(journal, ExecOptions(max_workers=1)).to_json()["done"] is True
    assert folder_digest(tmp_path / "out") == reference


def test_disk_full_while_downloading_stops_the_job_and_resume_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in the middle of a download (HTTP source, chunk 2's scenario_state.json): the
    chunk fails once with the path, the job stops, and after space is freed resume finishes
    with the bytes of an uninterrupted job."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    with BucketServer() as server:
        server.mount("lite/benchmark_output", FIXTURE)

        def job(dest: Path, work: Path) -> StartedJob:
            source = HttpSource(server.base_url, project="lite", release="v1.1.0")
            return start_job(source, DirPublisher(dest), chunk_size=3, work_root=work)

        with job(tmp_path / "ref", tmp_path / "w0").journal as journal:
            assert execute_job(journal, ExecOptions(max_workers=1)).to_json()["done"]
        reference = folder_digest(tmp_path / "ref")

        blocks: dict[Path, int] = {}

        def mid_download(path: Path) -> bool:
            """Chunk 2's scenario_state.json: the disk fills up after its first block."""
            if path.name != "scenario_state.json.part" or "chunk-000002" not in str(path):
                return False
            blocks[path] = blocks.get(path, 0) + 1
            return blocks[path] > 1  # past the download's own block: its first write

        started = job(tmp_path / "out", tmp_path / "work")
        with started.journal as journal:
            coord = coordinator(started, tmp_path / "out", pool_factory=ForkExecutor)
            with simulate_disk_full(mid_download), pytest.raises(DiskFullError) as info:
                coord.execute()
            assert str(info.value).startswith("disk full at ")
            assert str(info.value).endswith("scenario_state.json.part")
            failed = [e for e in journal.events() if e["state"] == "failed"]
            assert [e["chunk_id"] for e in failed] == [2]
        assert not list(started.paths.scratch.rglob("*.part"))  # the half download is gone

        with Journal.open(started.paths.journal) as journal:
            assert execute_job(journal, ExecOptions(max_workers=1)).to_json()["done"] is True
    assert folder_digest(tmp_path / "out") == reference
