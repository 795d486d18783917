"""The same job on a real Dask cluster (a scheduler and two worker processes on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from helmproc.engine.chunks.hold_points import ENV as HOLD_ENV
from helmproc.engine.chunks.hold_points import gate, held_marks
from helmproc.engine.errors import ConfigError
from helmproc.engine.job.executors import DaskExecutor, parse_executor
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.folder import DirSource
from tests.fakes.jobkit import (
    FIXTURE,
    folder_digest,
    grow_corpus,
    run_to_end,
)

pytestmark = pytest.mark.usefixtures("fixed_epoch")


@pytest.fixture(scope="module")
def hold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hold points' folder of the cluster's workers (engine/chunks/hold_points.py): a chunk
    is held only while a test keeps its gate there."""
    return tmp_path_factory.mktemp("hold")


@pytest.fixture(scope="module")
def cluster(hold: Path) -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
        env={HOLD_ENV: str(hold)},  # every worker process, restarted ones too
    ) as local:
        yield local


def dask_url(cluster: LocalCluster) -> str:
    return "dask://" + cluster.scheduler_address.removeprefix("tcp://")


def test_dask_output_is_byte_identical_to_the_local_pool(
    tmp_path: Path, cluster: LocalCluster
) -> None:
    run_to_end(FIXTURE, tmp_path / "local", tmp_path / "w1")
    report = run_to_end(
        FIXTURE, tmp_path / "dask", tmp_path / "w2", executor=dask_url(cluster)
    ).to_json()
    assert report["done"] and report["runs"] == {"ok": 12, "failed": 0}
    assert folder_digest(tmp_path / "dask") == folder_digest(tmp_path / "local")


def test_a_worker_killed_mid_job_loses_and_doubles_nothing(
    tmp_path: Path, cluster: LocalCluster, hold: Path
) -> None:
    """The worker killed is the one converting chunk 2: held at the chunk's start
    (engine/chunks/hold_points.py) and listed by the scheduler as processing a task when the
    kill lands. The chunk is then converted again by another worker, journaled once, and the
    dataset equals the local pool's."""
    corpus = tmp_path / "corpus"
    names = grow_corpus(corpus, copies=4)  # 28 runs in 14 chunks
    run_to_end(corpus, tmp_path / "local", tmp_path / "w1", chunk_size=2)

    started = start_job(
        DirSource(corpus), DirPublisher(tmp_path / "dask"), chunk_size=2, work_root=tmp_path / "w2"
    )
    victim_chunk = 2
    gate(hold, victim_chunk).touch()
    with Client(cluster.scheduler_address) as client:
        address_of = {pid: address for address, pid in client.run(os.getpid).items()}
        seen: dict[str, object] = {}

        def kill_the_worker_holding_the_chunk() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not held_marks(hold, victim_chunk):
                time.sleep(0.01)
            [victim] = held_marks(hold, victim_chunk)
            seen["victim"] = victim
            # the scheduler's view at the kill: the victim is processing a task
            seen["processing"] = client.processing().get(address_of[victim], ())
            os.kill(victim, signal.SIGKILL)
            # the chunk comes back to the gate on another worker: converted again
            while time.monotonic() < deadline and len(held_marks(hold, victim_chunk)) < 2:
                time.sleep(0.01)
            seen["marks"] = held_marks(hold, victim_chunk)
            gate(hold, victim_chunk).unlink()

        killer = threading.Thread(target=kill_the_worker_holding_the_chunk)
        killer.start()
        try:
            with started.journal as journal:
                options = ExecOptions(max_workers=2, executor=dask_url(cluster))
                report = execute_job(journal, options).to_json()
                events = journal.events()
        finally:
            gate(hold, victim_chunk).unlink(missing_ok=True)
            killer.join()
    assert seen["processing"], "the victim held no task when it was killed"
    marks = seen["marks"]
    assert isinstance(marks, list) and len(marks) == 2 and marks[0] == seen["victim"]
    assert marks[1] != seen["victim"]  # the task ran again, in another process
    assert [e["chunk_id"] for e in events if e["state"] == "processed"].count(victim_chunk) == 1
    assert report["done"] is True
    assert report["runs"] == {"ok": len(names), "failed": 0}
    runs = pq.read_table(sorted((tmp_path / "dask").glob("runs/**/*.parquet")))
    assert sorted(runs.column("helm_run").to_pylist()) == names  # each run exactly once
    assert folder_digest(tmp_path / "dask") == folder_digest(tmp_path / "local")


def test_executor_flag_is_checked() -> None:
    assert parse_executor(None) == "local"
    assert parse_executor("dask://127.0.0.1:8786") == "dask://127.0.0.1:8786"
    with pytest.raises(ConfigError, match="dask://HOST:PORT"):
        parse_executor("spark://x")
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:1", timeout=2)
