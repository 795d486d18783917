"""`helmproc resume --retry-failed`: only the chunks holding failed runs are processed again.

The design under test: a chunk whose latest outcomes include a failed run is processed again
as a whole (conversion is deterministic, so its ok runs rewrite byte-identical rows at the
same shard paths), published again and cleaned again; the journal records this as ordinary
append-only events, the ``processed`` one marked ``retry``. Chunks without failed runs get no
event at all, and a plain ``resume`` retries nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from helmproc.engine.chunks.worker import ChunkSpec, w_process_chunk
from helmproc.engine.errors import IllegalTransitionError
from helmproc.engine.facts import ChunkPlan, RunOutcome, RunRef
from helmproc.engine.job.executors import make_executor
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import StartedJob, execute_job
from helmproc.journal import ChunkState, Journal
from tests.fakes.jobkit import FIXTURE, coordinator, folder_digest, run_to_end, start
from tests.fakes.jobkit import helmproc as run_helmproc

# Two runs in different chunks of the fixture release (chunk size 3: chunks of 1, 2, 3, 3, 3).
BROKEN = {
    "v1.0.0": "simple1:model=simple_model1",
    "v1.1.0": "synthetic_reasoning_natural:difficulty=easy,model=simple_model1",
}


pytestmark = pytest.mark.usefixtures("fixed_epoch")


def helmproc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_helmproc(cwd, *args, check=check)


def status(cwd: Path) -> dict[str, Any]:
    return json.loads(helmproc(cwd, "status", "--json").stdout)  # type: ignore[no-any-return]


def journal_of(cwd: Path) -> Path:
    [path] = (cwd / ".helmproc" / "jobs").glob("*/journal.sqlite")
    return path


def events_by_chunk(journal: Path) -> dict[int, list[dict[str, Any]]]:
    with Journal.open(journal, readonly=True) as jr:
        events = jr.events()
    out: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        out.setdefault(event["chunk_id"], []).append(event)
    return out


def chunk_of(journal: Path) -> dict[str, int]:
    """run name -> chunk id, from the journaled plan."""
    with Journal.open(journal, readonly=True) as jr:
        return {ref.run_name: chunk.chunk_id for chunk in jr.plan() for ref in chunk.runs}


def break_runs(src: Path, aside: Path) -> None:
    """Move each broken run's stats.json out of the tree (kept aside to restore it)."""
    for suite, run in BROKEN.items():
        (aside / suite / run).mkdir(parents=True)
        shutil.move(src / "runs" / suite / run / "stats.json", aside / suite / run / "stats.json")


def restore_runs(src: Path, aside: Path) -> None:
    for suite, run in BROKEN.items():
        shutil.move(aside / suite / run / "stats.json", src / "runs" / suite / run / "stats.json")


def test_retry_failed_converts_the_repaired_runs_and_equals_a_good_run(tmp_path: Path) -> None:
    src = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, src)
    break_runs(src, tmp_path / "aside")
    job = tmp_path / "job"
    job.mkdir()
    args = ["--source", str(src), "--to", "out", "--chunk-size", "3", "--max-workers", "2"]

    first = helmproc(job, "run", *args)
    assert "done: 10 runs converted, 2 failed" in first.stdout
    before = status(job)
    assert before["done"] is True and before["runs"] == {"ok": 10, "failed": 2}
    assert [(g["reason"], g["count"]) for g in before["failures_by_reason"]] == [
        ("stats.json: missing", 2)
    ]
    journal = journal_of(job)
    events_before = events_by_chunk(journal)
    failed_chunks = {chunk_of(journal)[run] for run in BROKEN.values()}
    assert len(failed_chunks) == 2 and len(events_before) == 5

    # a plain resume of a finished job retries nothing, even once the input is repaired
    restore_runs(src, tmp_path / "aside")
    helmproc(job, "resume")
    assert events_by_chunk(journal) == events_before
    assert status(job)["runs"] == {"ok": 10, "failed": 2}

    retried = helmproc(job, "resume", "--retry-failed")
    assert "done: 12 runs converted, 0 failed" in retried.stdout
    assert "retrying 2 failed runs: processing their 2 chunks again" in retried.stderr
    after = status(job)
    assert after["done"] is True and after["runs"] == {"ok": 12, "failed": 0}
    assert after["failures"] == [] and after["failures_by_reason"] == []

    events_after = events_by_chunk(journal)
    for cid, events in events_after.items():
        new = events[len(events_before[cid]) :]
        assert events[: len(events_before[cid])] == events_before[cid]  # append-only
        if cid not in failed_chunks:
            assert new == []  # chunks without failures: not one event
            continue
        assert [e["state"] for e in new] == ["processed", "uploaded", "cleaned"]
        assert new[0]["payload"]["retry"] is True
        assert all(o["ok"] for o in new[0]["payload"]["outcomes"])
        # the ok runs of the chunk came out exactly as before: same shard paths
        old_paths = {s["path"] for e in events_before[cid] for s in e["payload"].get("shards", ())}
        assert {s["path"] for s in new[0]["payload"]["shards"]} == old_paths
    staging = journal.parent / "staging"
    assert not [p for p in staging.rglob("*") if p.is_file()]

    # an uninterrupted run of the same job on the good tree: the same dataset, byte for byte
    good = tmp_path / "good"
    good.mkdir()
    helmproc(good, "run", *args)
    assert folder_digest(job / "out") == folder_digest(good / "out")


class FailRetries:
    """The local executor, except that pieces of ``chunk_id`` die as a whole (not a bad run:
    the machine), as a worker lost mid-chunk would."""

    def __init__(self, max_workers: int, chunk_id: int) -> None:
        self.inner = make_executor("local", max_workers)
        self.chunk_id = chunk_id
        self.n_failed = 0
        self.lost_worker_errors = self.inner.lost_worker_errors
        self.restart_on_loss = self.inner.restart_on_loss

    def submit(self, spec: ChunkSpec) -> Future[Any]:
        if spec.chunk_id != self.chunk_id:
            return self.inner.submit(spec)
        self.n_failed += 1
        future: Future[Any] = Future()
        future.set_exception(OSError("worker lost mid-chunk"))
        return future

    def collect(self, future: Future[Any], staging: Path) -> Any:
        return self.inner.collect(future, staging)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def kill(self) -> None:
        self.inner.kill()


def start_with_a_broken_run(tmp_path: Path) -> StartedJob:
    """A job over a copy of the fixture whose v1.0.0 victim lost its stats.json (out: out/)."""
    src = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, src)
    (src / "runs/v1.0.0" / BROKEN["v1.0.0"] / "stats.json").unlink()
    return start(src, tmp_path / "out", tmp_path / "work")


def test_retry_that_dies_leaves_the_published_chunk_as_it_was(tmp_path: Path) -> None:
    started = start_with_a_broken_run(tmp_path)
    with started.journal as journal:
        coordinator(started, tmp_path / "out").execute()
        [failed_chunk] = [
            cid
            for cid, st in journal.chunk_statuses().items()
            if any(not o.ok for o in st.outcomes)
        ]
        n_events = len(journal.events())
        dataset = folder_digest(tmp_path / "out")

        pool = FailRetries(1, failed_chunk)
        retrying = coordinator(
            started, tmp_path / "out", retry_failed=True, pool_factory=lambda n: pool
        )
        report = retrying.execute().to_json()
        assert pool.n_failed == retrying.options.max_attempts  # tried, gave up this session
        assert len(journal.events()) == n_events  # no `failed` event for a published chunk
        assert journal.chunk_status(failed_chunk).state is ChunkState.CLEANED
    assert report["done"] is True and report["runs"] == {"ok": 11, "failed": 1}
    assert folder_digest(tmp_path / "out") == dataset  # the published data is untouched


def test_retry_while_the_input_is_still_bad_records_the_same_failure(tmp_path: Path) -> None:
    started = start_with_a_broken_run(tmp_path)
    with started.journal as journal:
        first = coordinator(started, tmp_path / "out").execute()
        dataset = folder_digest(tmp_path / "out")
        again = coordinator(started, tmp_path / "out", retry_failed=True).execute()
        states = Counter(e["state"] for e in journal.events())
    assert again.to_json()["failures"] == first.to_json()["failures"]
    assert again.to_json()["runs"] == {"ok": 11, "failed": 1}
    assert states["processed"] == 5 + 1 and states["cleaned"] == 5 + 1  # one chunk again
    assert folder_digest(tmp_path / "out") == dataset  # deterministic: the same bytes


def test_retry_from_uploaded_and_processed_states(tmp_path: Path) -> None:
    """A crash left one chunk with a failed run uploaded (not cleaned) and another processed
    (not published); the input is then repaired and `resume --retry-failed` reprocesses both
    from where they stand, and the dataset equals an uninterrupted run."""
    src = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, src)
    break_runs(src, tmp_path / "aside")
    started = start(src, tmp_path / "out", tmp_path / "work")
    with started.journal as journal:
        coord = coordinator(started, tmp_path / "out")
        publisher = coord.publisher
        chunks = {ref.run_name: c.chunk_id for c in journal.plan() for ref in c.runs}
        uploaded, processed = sorted(chunks[run] for run in BROKEN.values())
        for cid in (uploaded, processed):
            result = w_process_chunk(coord._spec(cid))
            assert sum(not o.ok for o in result.outcomes) == 1
            journal.record_processed(cid, result.shards, result.outcomes)
        commit = publisher.publish(started.paths.staging, journal.chunk_status(uploaded).shards, "")
        journal.record_uploaded(uploaded, commit)
    restore_runs(src, tmp_path / "aside")

    with Journal.open(started.paths.journal) as journal:
        options = ExecOptions(max_workers=2, retry_failed=True)
        report = execute_job(journal, options).to_json()
        by_chunk = Counter((e["chunk_id"], e["state"]) for e in journal.events())
        retries = [e["chunk_id"] for e in journal.events() if e["payload"].get("retry")]
    assert report["done"] is True and report["runs"] == {"ok": 12, "failed": 0}
    assert sorted(retries) == [uploaded, processed]
    assert (by_chunk[(uploaded, "processed")], by_chunk[(uploaded, "uploaded")]) == (2, 2)
    assert (by_chunk[(processed, "processed")], by_chunk[(processed, "uploaded")]) == (2, 1)
    assert run_to_end(src, tmp_path / "good", tmp_path / "good-work").to_json()["done"]
    assert folder_digest(tmp_path / "out") == folder_digest(tmp_path / "good")


def _ref(i: int) -> RunRef:
    return RunRef("p", "s", f"r{i}", None, f"r{i}")


def test_journal_reprocesses_a_published_chunk_only_as_a_retry(tmp_path: Path) -> None:
    runs = (_ref(0),)
    bad = RunOutcome(runs[0], ok=False, n_instances=0, n_rows=0, error="stats.json: missing")
    good = RunOutcome(runs[0], ok=True, n_instances=1, n_rows=2)
    with Journal.open(tmp_path / "journal.sqlite") as journal:
        journal.start_job("j", {}, "t", [ChunkPlan(0, runs)])
        journal.record_processed(0, [], [bad])
        journal.record_uploaded(0, "c1")
        with pytest.raises(IllegalTransitionError, match="only to retry its failed runs"):
            journal.record_processed(0, [], [good])  # uploaded -> processed, not a retry
        journal.record_cleaned(0)
        with pytest.raises(IllegalTransitionError, match="--retry-failed"):
            journal.record_processed(0, [], [good])  # cleaned -> processed, not a retry
        assert journal.status().runs == {"ok": 0, "failed": 1}
        journal.record_processed(0, [], [good], retry=True)
        status = journal.chunk_status(0)
        assert (status.state, status.outcomes, status.attempts) == (
            ChunkState.PROCESSED,
            (good,),
            2,
        )
        assert journal.events()[-1]["payload"]["retry"] is True
        assert "retry" not in journal.events()[1]["payload"]  # ordinary events stay as they were
        assert journal.status().runs == {"ok": 1, "failed": 0}
