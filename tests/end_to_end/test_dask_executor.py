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
    processed_events,
    run_to_end,
)

pytestmark = pytest.mark.usefixtures("fixed_epoch")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,
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
    tmp_path: Path, cluster: LocalCluster
) -> None:
    corpus = tmp_path / "corpus"
    names = grow_corpus(corpus, copies=4)
    run_to_end(corpus, tmp_path / "local", tmp_path / "w1", chunk_size=2)

    started = start_job(
        DirSource(corpus), DirPublisher(tmp_path / "dask"), chunk_size=2, work_root=tmp_path / "w2"
    )
    with Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and processed_events(started.paths.journal) < 1:
            time.sleep(0.01)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    with started.journal as journal:
        options = ExecOptions(max_workers=2, executor=dask_url(cluster))
        report = execute_job(journal, options).to_json()
    killer.join()
    assert killed, "no worker was killed"
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
