"""The memory/disk budget: sizes, admission decisions, and a real overrun split in a job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helmproc.engine.errors import ConfigError
from helmproc.engine.job.budget import (
    INITIAL_BYTES_RATIO,
    INITIAL_CHUNK_ESTIMATE,
    INITIAL_WORKER_BYTES,
    Budget,
    TreeMeter,
    TreeSample,
    parse_size,
)
from helmproc.engine.job.executors import make_pool
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.plan import ramp_sizes
from helmproc.engine.job.start import exec_options, execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.folder import DirSource
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, inflate_run

MiB = 1 << 20


@pytest.mark.parametrize(
    "text, expected",
    [
        ("800M", 800 * MiB),
        ("4G", 4 << 30),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("512mb", 512 * MiB),
        ("2000000", 2_000_000),
        ("10k", 10 << 10),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "4X"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="not a size"):
        parse_size(text)


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


def test_auto_workers_follow_the_budget(tmp_path: Path) -> None:
    assert exec_options("auto", "300M", "1G", tmp_path).max_workers == 1
    assert exec_options("1", None, None, tmp_path).budget is not None
    with pytest.raises(ConfigError, match="number or 'auto'"):
        exec_options("many", None, None, tmp_path)


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
