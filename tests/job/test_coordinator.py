"""The coordinator end to end in-process, and every crash window built directly then resumed.

Each crash-window test builds the on-disk state a crash at that boundary leaves (using the
same engine pieces the coordinator uses), resumes, and compares the whole output folder with
an uninterrupted run byte for byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helmproc.engine.chunks.worker import w_process_chunk
from helmproc.engine.job.coordinator import Coordinator
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import execute_job
from helmproc.engine.job.workdir import JobPaths
from helmproc.engine.publish.folder import DirPublisher
from helmproc.journal import ChunkState, Journal
from tests.fakes.jobkit import (
    FIXTURE,
    coordinator,
    folder_digest,
    run_to_end,
    start,
)

pytestmark = pytest.mark.usefixtures("fixed_epoch")



def test_uninterrupted_run_writes_all_tables(tmp_path: Path, reference: dict[str, str]) -> None:
    report = run_to_end(FIXTURE, tmp_path / "out", tmp_path / "work").to_json()
    assert report["done"] is True
    assert report["runs"] == {"ok": 12, "failed": 0}
    assert report["chunks"]["cleaned"] == 5  # sizes 1, 2, 3, 3, 3
    out = tmp_path / "out"
    runs = pq.read_table(sorted(out.glob("runs/**/*.parquet"))).to_pylist()
    assert sorted(r["helm_run"] for r in runs) == sorted(
        json.loads((FIXTURE / "releases/v1.1.0/runs_to_run_suites.json").read_text())
    )
    instances = pq.read_table(sorted(out.glob("instances/**/*.parquet")))
    assert instances.num_rows == report["rows"] > 0
    assert (out / "README.md").read_text().startswith("---\nconfigs:")
    # same input -> byte-identical dataset, including with other workers/chunk timing
    assert folder_digest(out) == reference
    # nothing left in staging once cleaned
    staging = next((tmp_path / "work" / "jobs").iterdir()) / "staging"
    assert not [p for p in staging.rglob("*") if p.is_file()]


def test_worker_count_does_not_change_bytes(tmp_path: Path, reference: dict[str, str]) -> None:
    run_to_end(FIXTURE, tmp_path / "out", tmp_path / "work", workers=1)
    assert folder_digest(tmp_path / "out") == reference


def test_bad_run_is_recorded_and_others_complete(tmp_path: Path) -> None:
    src = tmp_path / "bo"
    import shutil

    shutil.copytree(FIXTURE, src)
    broken = src / "runs/v1.1.0/simple_mcqa:model=simple_model1/per_instance_stats.json"
    broken.write_text('[{"instance_id": "id1", "train_trial_index": 0, "stats": [')
    (src / "runs/v1.0.0/simple1:model=simple_model1/stats.json").unlink()
    report = run_to_end(src, tmp_path / "out", tmp_path / "work").to_json()
    assert report["done"] is True
    assert report["runs"] == {"ok": 10, "failed": 2}
    reasons = {f["run"]: f["reason"] for f in report["failures"]}
    assert "per_instance_stats.json" in reasons["local/v1.1.0/simple_mcqa:model=simple_model1"]
    assert "stats.json" in reasons["local/v1.0.0/simple1:model=simple_model1"]
    runs = pq.read_table(sorted((tmp_path / "out").glob("runs/**/*.parquet"))).to_pylist()
    failed = {r["helm_run"]: r["error"] for r in runs if r["outcome"] == "failed"}
    assert set(failed) == {"simple_mcqa:model=simple_model1", "simple1:model=simple_model1"}


# -- crash windows -----------------------------------------------------------------------
# Each builder gets the started job and leaves the state that a crash at one boundary leaves.


def _specs(coord: Coordinator) -> list:
    return [coord._spec(cid) for cid in sorted(coord.plan)]


def crash_after_plan(coord: Coordinator, journal: Journal) -> None:
    """Planned, nothing processed; an interrupted write left a temp file in staging."""
    junk = coord.paths.staging / "instances" / "x.parquet.tmp-999"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"partial")


def crash_before_processed_event(coord: Coordinator, journal: Journal) -> None:
    """Shards of chunk 0 fully written to staging, but the worker's report never journaled."""
    w_process_chunk(_specs(coord)[0])


def crash_after_processed(coord: Coordinator, journal: Journal) -> None:
    """Chunks 0 and 1 processed and journaled, nothing published."""
    for spec in _specs(coord)[:2]:
        result = w_process_chunk(spec)
        journal.record_processed(spec.chunk_id, result.shards, result.outcomes)


def crash_after_commit_before_uploaded(coord: Coordinator, journal: Journal) -> None:
    """Chunk 0 published to the destination, but `uploaded` never journaled."""
    spec = _specs(coord)[0]
    result = w_process_chunk(spec)
    journal.record_processed(spec.chunk_id, result.shards, result.outcomes)
    coord.publisher.publish(coord.paths.staging, result.shards, "test")


def crash_after_uploaded(coord: Coordinator, journal: Journal) -> None:
    """Chunk 0 uploaded and journaled, staging not yet cleaned."""
    spec = _specs(coord)[0]
    result = w_process_chunk(spec)
    journal.record_processed(spec.chunk_id, result.shards, result.outcomes)
    commit = coord.publisher.publish(coord.paths.staging, result.shards, "test")
    journal.record_uploaded(spec.chunk_id, commit)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def crash_mid_place(coord: Coordinator, journal: Journal) -> None:
    """Chunk 0 processed; killed inside DirPublisher after linking a shard to its temp name."""
    spec = _specs(coord)[0]
    result = w_process_chunk(spec)
    journal.record_processed(spec.chunk_id, result.shards, result.outcomes)
    for fact in result.shards:
        final = coord.publisher.root / fact.path  # type: ignore[attr-defined]
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f"{final.name}.tmp-{_dead_pid()}")
        os.link(coord.paths.staging / fact.path, temp)
    card = coord.publisher.root / f"README.md.tmp-{_dead_pid()}"  # type: ignore[attr-defined]
    card.write_text("half a card")


def crash_with_corrupt_staged_shard(coord: Coordinator, journal: Journal) -> None:
    """Chunk 0 journaled processed but its staged shard was damaged (e.g. disk trouble)."""
    spec = _specs(coord)[0]
    result = w_process_chunk(spec)
    journal.record_processed(spec.chunk_id, result.shards, result.outcomes)
    victim = coord.paths.staging / result.shards[0].path
    victim.write_bytes(victim.read_bytes()[:-10])
    (coord.paths.staging / result.shards[1].path).unlink()


def crash_after_failed_attempt(coord: Coordinator, journal: Journal) -> None:
    """Chunk 0's worker died once and was journaled failed; chunk 1 fully done."""
    journal.record_failed(0, "BrokenProcessPool: worker died")
    crash_after_uploaded_chunk(coord, journal, 1)


def crash_after_uploaded_chunk(coord: Coordinator, journal: Journal, idx: int) -> None:
    spec = _specs(coord)[idx]
    result = w_process_chunk(spec)
    journal.record_processed(spec.chunk_id, result.shards, result.outcomes)
    commit = coord.publisher.publish(coord.paths.staging, result.shards, "test")
    journal.record_uploaded(spec.chunk_id, commit)
    journal.record_cleaned(spec.chunk_id)
    for fact in result.shards:
        (coord.paths.staging / fact.path).unlink()


@pytest.mark.parametrize(
    "crash",
    [
        crash_after_plan,
        crash_before_processed_event,
        crash_after_processed,
        crash_after_commit_before_uploaded,
        crash_mid_place,
        crash_after_uploaded,
        crash_with_corrupt_staged_shard,
        crash_after_failed_attempt,
    ],
)
def test_resume_after_crash_window_equals_uninterrupted(
    tmp_path: Path, reference: dict[str, str], crash: Callable[[Coordinator, Journal], None]
) -> None:
    started = start(FIXTURE, tmp_path / "out", tmp_path / "work")
    with started.journal as journal:
        coord = coordinator(started, tmp_path / "out")
        crash(coord, journal)
    with Journal.open(started.paths.journal) as journal:
        report = execute_job(journal, ExecOptions(max_workers=2)).to_json()
        events = journal.events()
    assert report["done"] is True
    assert report["runs"] == {"ok": 12, "failed": 0}
    assert folder_digest(tmp_path / "out") == reference
    assert not [p for p in started.paths.staging.rglob("*") if p.is_file()]
    if crash is crash_after_commit_before_uploaded:
        # the landed commit was recognised, not re-sent: chunk 0 processed exactly once
        processed = [e for e in events if e["chunk_id"] == 0 and e["state"] == "processed"]
        assert len(processed) == 1


def test_publish_keeps_a_live_writers_temp_file(tmp_path: Path) -> None:
    """Another live process's temp file is a write in flight, not a leftover."""
    run_to_end(FIXTURE, tmp_path / "ref", tmp_path / "w0")
    shard = next(p for p in (tmp_path / "ref").rglob("*.parquet"))
    rel = shard.relative_to(tmp_path / "ref")
    live = tmp_path / "out" / rel.parent / f"other.parquet.tmp-{os.getppid()}"
    dead = tmp_path / "out" / rel.parent / f"old.parquet.tmp-{_dead_pid()}"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"in flight")
    dead.write_bytes(b"left over")
    run_to_end(FIXTURE, tmp_path / "out", tmp_path / "w1")
    assert live.exists() and not dead.exists()


def test_resume_of_a_finished_job_changes_nothing(tmp_path: Path, reference: dict) -> None:
    run_to_end(FIXTURE, tmp_path / "out", tmp_path / "work")
    journal_path = next((tmp_path / "work" / "jobs").iterdir()) / "journal.sqlite"
    with Journal.open(journal_path) as journal:
        n_events = len(journal.events())
        report = execute_job(journal, ExecOptions(max_workers=1)).to_json()
        assert len(journal.events()) == n_events
    assert report["done"]
    assert folder_digest(tmp_path / "out") == reference
    statuses = Journal.open(journal_path, readonly=True).chunk_statuses()
    assert {s.state for s in statuses.values()} == {ChunkState.CLEANED}


def test_paths_follow_the_plan(tmp_path: Path) -> None:
    started = start(FIXTURE, tmp_path / "out", tmp_path / "work", chunk_size=5)
    with started.journal as journal:
        job = journal.job()
        assert job is not None
        assert [len(c.runs) for c in journal.plan()] == [1, 2, 4, 5]  # ramp, then full
        assert isinstance(started.paths, JobPaths)
    again = start(FIXTURE, tmp_path / "out", tmp_path / "work", chunk_size=5)
    with again.journal as journal:
        assert again.continued is True
        assert journal.job().job_id == job.job_id  # type: ignore[union-attr]


def test_journal_file_names_keep_their_own_files(tmp_path: Path) -> None:
    """`--journal DIR/a.sqlite` and `--journal DIR/b.sqlite`: two jobs, nothing shared."""
    from helmproc.engine.job.start import start_job
    from helmproc.engine.sources.folder import DirSource

    shared = tmp_path / "jobs"
    jobs = []
    for name, suite in (("a.sqlite", "v1.0.0"), ("b.sqlite", "v0.1.0")):
        started = start_job(
            DirSource(FIXTURE, suite=suite),
            DirPublisher(tmp_path / f"out-{name}"),
            chunk_size=3,
            work_root=tmp_path / "unused",
            journal_path=shared / name,
        )
        assert started.paths.journal == (shared / name).resolve()
        with started.journal as journal:
            report = execute_job(journal, ExecOptions(max_workers=1)).to_json()
        assert report["done"]
        jobs.append((started.paths, report))
    (a, ra), (b, rb) = jobs
    assert a.staging != b.staging and a.scratch != b.scratch
    assert ra["job_id"] != rb["job_id"] and ra["n_runs"] == 6 and rb["n_runs"] == 2
    assert sorted(p.name for p in shared.glob("*.sqlite")) == ["a.sqlite", "b.sqlite"]
    assert not (shared / "journal.sqlite").exists()


def test_instances_shards_keep_statistics_on_keys_not_on_free_text(tmp_path: Path) -> None:
    run_to_end(FIXTURE, tmp_path / "out", tmp_path / "work")
    shard = next((tmp_path / "out" / "instances").rglob("*.parquet"))
    group = pq.ParquetFile(shard).metadata.row_group(0)
    stats = {
        group.column(i).path_in_schema: group.column(i).statistics
        for i in range(group.num_columns)
    }
    for key in ("helm_run", "model_id", "sample_id", "evaluation.score"):
        assert stats[key] is not None and stats[key].has_min_max, key
    for text in ("input.raw", "input.choices.list.element", "sample_hash"):
        assert stats[text] is None, text
