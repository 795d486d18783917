"""The memory/disk budget: admission decisions, and a real overrun split in a job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from helmproc.engine.chunks.pid_files import pid_file
from helmproc.engine.job.budget import (
    INITIAL_BYTES_RATIO,
    INITIAL_CHUNK_ESTIMATE,
    INITIAL_WORKER_BYTES,
    Budget,
    TreeMeter,
    TreeSample,
)
from helmproc.engine.job.executors import make_pool
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.plan import ramp_sizes
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.job.watchdog import Watchdog
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.folder import RUN_INPUT_FILES, DirSource
from helmproc.journal import Journal
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, inflate_run

MiB = 1 << 20


class FixedMeter(TreeMeter):
    """A meter that reports what the test says (patching at the interface)."""

    def __init__(self, by_pid: dict[int, int]) -> None:
        self.by_pid = by_pid
        self.peak = 0

    def sample(self) -> TreeSample:
        return TreeSample(sum(self.by_pid.values()), dict(self.by_pid))


@pytest.mark.parametrize(
    "tree, running, estimate, staged, admitted",
    [
        # nothing running: always admitted, however small the budget (progress guaranteed)
        ({1: 900 * MiB}, [], 500 * MiB, 0, True),
        # 100 used + new 300 <= 950 (the budget less its 5% headroom: the watchdog's level)
        ({1: 100 * MiB}, [(2, 100 * MiB)], 300 * MiB, 0, True),
        # a running chunk expected to grow to 400 but at 100 now: 300 more still to come
        ({1: 100 * MiB, 2: 100 * MiB}, [(2, 400 * MiB)], 500 * MiB, 0, False),
        ({1: 100 * MiB, 2: 100 * MiB}, [(2, 400 * MiB)], 450 * MiB, 0, True),  # exactly full
        # a chunk not yet started (no pid) counts its whole estimate
        ({1: 100 * MiB}, [(None, 400 * MiB)], 400 * MiB, 0, True),
        ({1: 100 * MiB}, [(None, 400 * MiB)], 500 * MiB, 0, False),
        # disk: staged bytes at the disk budget stop admission
        ({1: 10 * MiB}, [(2, 10 * MiB)], 10 * MiB, 50 * MiB, False),
    ],
)
def test_admission(
    tree: dict[int, int],
    running: list[tuple[int | None, int]],
    estimate: int,
    staged: int,
    admitted: bool,
) -> None:
    budget = Budget(1000 * MiB, 50 * MiB, meter=FixedMeter(tree), sample_interval=0)
    assert budget.admit(estimate, running, staged) is admitted


def test_estimates_learn_from_measurements() -> None:
    budget = Budget(1000 * MiB, 1000 * MiB, meter=FixedMeter({}))
    assert budget.estimate(None) == INITIAL_CHUNK_ESTIMATE  # nothing known
    # before any chunk finished: the conservative ratio times the largest run's input bytes
    assert budget.estimate(10 * MiB) == INITIAL_WORKER_BYTES + INITIAL_BYTES_RATIO * 10 * MiB
    budget.learn(peak_bytes=200 * MiB, largest_run_bytes=50 * MiB, baseline_bytes=100 * MiB)
    assert budget.estimate(None) == 200 * MiB
    # 100 MiB of growth for a 50 MiB run: a 100 MiB run is expected to need 100 + 200
    assert budget.estimate(100 * MiB) == 300 * MiB
    # a small run teaches no ratio, but nothing at least its size is expected to grow less
    budget.learn(peak_bytes=190 * MiB, largest_run_bytes=1 * MiB, baseline_bytes=100 * MiB)
    assert budget.ratio == 2.0
    assert budget.estimate(1 * MiB) == 100 * MiB + 90 * MiB
    assert budget.estimate(0) == 100 * MiB
    # a stopped worker that grew 600 MiB on a 100 MiB run: at least 6 bytes per input byte
    budget.learn_stopped(600 * MiB, 100 * MiB)
    assert budget.estimate(100 * MiB) == 700 * MiB


def test_real_meter_sees_this_process() -> None:
    sample = TreeMeter().sample()
    assert sample.total > 10 * MiB
    assert all(v >= 0 for v in sample.by_pid.values())


@pytest.mark.parametrize(
    "n, size, sizes",
    [
        (12, 5, [1, 2, 4, 5]),  # first shard after one run, then doubling up to the size
        (3, 16, [1, 2]),
        (0, 4, []),
        (10, 1, [1] * 10),
    ],
)
def test_ramp_sizes(n: int, size: int, sizes: list[int]) -> None:
    assert ramp_sizes(n, size) == sizes
    assert sum(ramp_sizes(n, size)) == n


def budget_above_idle_tree(room: int) -> Budget:
    """A budget of ``room`` above what this process tree uses idle with the pool's fork server
    running (the tree is what the budget bounds, and this test process is its coordinator:
    its size depends on what pytest imported)."""
    pool = make_pool(1)
    try:
        pool.submit(int).result()  # starts the fork server (it outlives the pool)
    finally:
        pool.shutdown()
    return Budget(TreeMeter().sample().total + room, 1 << 30, sample_interval=0.05)


def test_overrun_splits_the_chunk_and_fails_only_the_big_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker converting one huge run exceeds a small budget: it is stopped, its chunk is
    retried in halves, the huge run alone fails with a clear reason, every other run lands."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    corpus = tmp_path / "corpus"
    for run in sorted((FIXTURE / "runs" / "v1.0.0").iterdir()):
        shutil.copytree(run, corpus / run.name.replace(":", "-"))
    inflate_run(FIXTURE / "runs/v1.1.0/simple_mcqa:model=simple_model1", corpus / "huge", 250)

    started = start_job(
        DirSource(corpus), DirPublisher(tmp_path / "out"), chunk_size=4, work_root=tmp_path / "w"
    )
    sizes = [len(c.runs) for c in started.journal.plan()]
    assert sizes == [1, 2, 4]  # the huge run sits in the last chunk with three others
    # the plan records each run's input bytes (the files HELM wrote), for admission
    refs = [ref for chunk in started.journal.plan() for ref in chunk.runs]
    files = {ref.key: [corpus / ref.location / name for name in RUN_INPUT_FILES] for ref in refs}
    assert started.journal.run_input_bytes() == {
        key: sum(f.stat().st_size for f in paths if f.exists()) for key, paths in files.items()
    }
    budget = budget_above_idle_tree(150 * MiB)  # the huge run's worker needs ~240 MiB
    with started.journal as journal:
        report = execute_job(journal, ExecOptions(max_workers=1, budget=budget)).to_json()
        events = journal.events()
    assert report["done"] is True
    assert report["runs"] == {"ok": 6, "failed": 1}
    [failure] = report["failures"]
    assert failure["run"].endswith(",big=1")
    assert "needs more memory than the budget" in failure["reason"]
    assert "--memory-budget" in failure["reason"]
    memory_events = [e for e in events if e["state"] == "failed" and e["chunk_id"] == 2]
    assert memory_events and all("memory budget" in e["payload"]["error"] for e in memory_events)

    out = tmp_path / "out"
    parts = sorted(p.name for p in out.glob("runs/**/*.parquet"))
    assert any("-p" in name for name in parts)  # the split pieces have their own shards
    runs = pq.read_table(sorted(out.glob("runs/**/*.parquet"))).to_pylist()
    assert len(runs) == 7 and len({r["helm_run"] for r in runs}) == 7
    instances = pq.read_table(sorted(out.glob("instances/**/*.parquet")))
    assert set(instances.column("helm_run").to_pylist()) == {
        r["helm_run"] for r in runs if r["outcome"] == "ok" and r["n_rows"]
    }
    assert instances.num_rows == report["rows"]


def test_a_split_is_journaled_and_retry_failed_rewrites_the_same_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a memory split, `resume --retry-failed` (here with a budget large enough for the
    huge run) works on the journaled pieces: the same shard paths, so no run twice and no
    file that no journaled shard accounts for."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    corpus = tmp_path / "corpus"
    for run in sorted((FIXTURE / "runs" / "v1.0.0").iterdir()):
        shutil.copytree(run, corpus / run.name.replace(":", "-"))
    inflate_run(FIXTURE / "runs/v1.1.0/simple_mcqa:model=simple_model1", corpus / "huge", 250)
    out = tmp_path / "out"
    started = start_job(DirSource(corpus), DirPublisher(out), chunk_size=4, work_root=tmp_path)
    small = budget_above_idle_tree(150 * MiB)
    with started.journal as journal:
        first = execute_job(journal, ExecOptions(max_workers=1, budget=small)).to_json()
        pieces = journal.chunk_pieces()
    assert first["runs"] == {"ok": 6, "failed": 1}
    assert set(pieces) == {2} and len(pieces[2].parts) > 1  # the split is in the journal
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))

    big = Budget(8 << 30, 1 << 30)
    with started.journal.open(started.journal.path) as journal:
        retried = execute_job(
            journal, ExecOptions(max_workers=1, budget=big, retry_failed=True)
        ).to_json()
        journaled = {f.path for st in journal.chunk_statuses().values() for f in st.shards}
        assert journal.chunk_pieces() == pieces
    assert retried["done"] is True and retried["runs"] == {"ok": 7, "failed": 0}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == before  # the same pieces, rewritten in place
    assert set(files) == journaled  # nothing the journal does not account for
    runs = pq.read_table([out / f for f in files if f.startswith("runs/")]).to_pylist()
    assert sorted(r["helm_run"] for r in runs) == sorted({r["helm_run"] for r in runs})
    assert all(r["outcome"] == "ok" for r in runs) and len(runs) == 7
    instances = pq.read_table([out / f for f in files if f.startswith("instances/")])
    assert instances.num_rows == sum(r["n_rows"] for r in runs) == retried["rows"]


# -- the watchdog, on real processes ------------------------------------------------------

HOG = """
import sys
held = []
for line in sys.stdin:
    held.append(b"\\x01" * (int(line) << 20))  # resident: every page written
    print("ok", flush=True)
"""


def hog(pid_dir: Path, chunk_id: int) -> subprocess.Popen[str]:
    """A child of this process that announces itself as a worker on ``chunk_id`` and holds
    as many more MiB as each line it reads says."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    pid_file(pid_dir, chunk_id, "").write_text(str(proc.pid))
    return proc


def grow(proc: subprocess.Popen[str], mib: int) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{mib}\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "ok\n"


def test_watchdog_stops_the_worker_that_grew_most_before_the_tree_passes_the_budget(
    tmp_path: Path,
) -> None:
    """Two real workers under one budget: while the tree fits nothing is stopped; when their
    growth takes the tree over the budget less its headroom, the one that grew most since it
    started its piece gets SIGKILL (the other lives on), once until the watchdog is rearmed."""
    pid_dir = tmp_path / "running"
    pid_dir.mkdir()
    big, small = hog(pid_dir, 1), hog(pid_dir, 2)
    try:
        grow(big, 1)
        grow(small, 1)
        idle = TreeMeter().sample().total
        watchdog = Watchdog(idle + 200 * MiB, pid_dir)
        assert watchdog.check() is None  # both seen starting their pieces; the tree fits
        grow(big, 120)
        grow(small, 40)
        assert watchdog.check() is None  # idle + 160 MiB <= the stop level (idle + 190)
        grow(big, 60)  # idle + 220 MiB: over
        stop = watchdog.check()
        assert stop is not None and stop.pid == big.pid
        assert stop.grown >= 170 * MiB and stop.tree > watchdog.stop_level
        assert big.wait(timeout=10) == -signal.SIGKILL
        assert small.poll() is None  # only the one stopped
        assert watchdog.killed and watchdog.stopped(1, "") == stop
        assert watchdog.stopped(1, "") is None  # asked once
        pid_file(pid_dir, 1, "").unlink()
        grow(small, 200)
        assert watchdog.check() is None  # disarmed until the coordinator has a new pool
        watchdog.rearm()
        assert not watchdog.killed
        assert watchdog.check() is None  # rearmed: `small` is seen starting afresh at its size
    finally:
        for proc in (big, small):
            proc.kill()
            proc.wait()


def test_a_lone_worker_is_stopped_when_the_tree_passes_the_budget(tmp_path: Path) -> None:
    """With one worker busy, it is stopped as soon as its growth takes the tree over the
    budget less its headroom, long before it alone uses the whole budget (the watchdog this
    replaced stopped only a worker over the whole budget by itself)."""
    pid_dir = tmp_path / "running"
    pid_dir.mkdir()
    worker = hog(pid_dir, 7)
    try:
        grow(worker, 1)
        watchdog = Watchdog(TreeMeter().sample().total + 100 * MiB, pid_dir)
        assert watchdog.check() is None
        grow(worker, 60)
        assert watchdog.check() is None
        grow(worker, 45)  # the worker: ~115 MiB, under the idle + 100 MiB budget by itself
        stop = watchdog.check()
        assert stop is not None and stop.pid == worker.pid
        assert stop.used < watchdog.memory_budget < stop.tree
        assert worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        worker.kill()
        worker.wait()


# -- a job under a budget its tree would exceed ------------------------------------------


def sample_tree(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """(peak tree USS, peak USS of one process) of ``proc``'s tree until it exits: only to
    choose a budget for the next job, never asserted on."""
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        sizes = []
        for p in procs:
            try:
                sizes.append(p.memory_full_info().uss)
            except psutil.Error:
                pass
        peak_tree = max(peak_tree, sum(sizes))
        peak_one = max([peak_one, *sizes])
        time.sleep(0.02)
    return peak_tree, peak_one


def run_job(corpus: Path, work: Path, *budget: str) -> tuple[int, int]:
    work.mkdir()
    args = [sys.executable, "-m", "helmproc.cli", "run", "--source", str(corpus), "--to"]
    args += ["out", "--journal", "journal.db", "--chunk-size", "2", "--max-workers", "1"]
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)
    proc = subprocess.Popen([*args, *budget], cwd=work, env=env, stdout=subprocess.DEVNULL)
    peaks = sample_tree(proc)
    assert proc.wait() == 0
    return peaks


def instance_rows(out: Path, skip: str) -> list[dict[str, object]]:
    rows = pq.read_table(sorted(out.glob("instances/**/*.parquet"))).to_pylist()
    kept = [r for r in rows if r["helm_run"] != skip]
    return sorted(kept, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def test_a_worker_under_the_budget_that_takes_the_tree_over_it_is_stopped_and_split(
    tmp_path: Path,
) -> None:
    """The budget bounds the tree, not one worker: a big run whose worker stays under the
    budget by itself but takes the coordinator + fork server + worker over it is stopped;
    its chunk's split is journaled, the big run alone fails naming the tree, and every other
    run's rows are those of a job without a budget."""
    corpus = tmp_path / "corpus"
    for run in sorted((FIXTURE / "runs" / "v1.0.0").iterdir()):
        shutil.copytree(run, corpus / run.name.replace(":", "-"))
    inflate_run(FIXTURE / "runs/v1.1.0/simple_mcqa:model=simple_model1", corpus / "huge", 120)
    peak_tree, peak_worker = run_job(corpus, tmp_path / "free")
    assert peak_tree - peak_worker > 40 * MiB  # the rest of the tree, beside the big worker
    budget = (peak_tree + peak_worker) // 2  # the worker fits alone, the tree does not
    run_job(corpus, tmp_path / "bounded", "--memory-budget", str(budget))

    with Journal.open(tmp_path / "bounded" / "journal.db", readonly=True) as journal:
        report = journal.status().to_json()
        pieces = journal.chunk_pieces()
        plan = journal.plan()
    [big_chunk] = [c.chunk_id for c in plan if any(r.key.endswith(",big=1") for r in c.runs)]
    assert set(pieces) == {big_chunk}  # the split is journaled: later attempts cut the same
    [(given_up, reason)] = pieces[big_chunk].skipped
    assert given_up.endswith(",big=1") and "process tree reached" in reason
    assert report["done"] is True and report["runs"] == {"ok": 6, "failed": 1}
    big_run = given_up.split("/")[-1]
    free = instance_rows(tmp_path / "free" / "out", big_run)
    assert free and instance_rows(tmp_path / "bounded" / "out", big_run) == free
