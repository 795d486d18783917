"""Executors: where chunk work runs. The coordinator sees one small interface for all of them.

- ``LocalExecutor`` (default, ``--executor local``): a ``ProcessPoolExecutor`` on this
  machine (forkserver start, the worker module preloaded). Workers write shards straight into
  the job's staging folder.
- ``DaskExecutor`` (``--executor dask://HOST:PORT``): the same chunk function on the workers
  of a Dask distributed cluster, through the cluster's ``concurrent.futures`` executor.
  Workers on other machines cannot reach this machine's staging folder, so each chunk is
  converted into a temporary folder on its worker and comes back as small facts plus the
  shard bytes (compressed Parquet: a few MB per chunk); ``collect`` writes them into staging
  durably and checks each against its sha256. Chosen over a shared destination every machine
  can reach because it needs no shared filesystem, keeps the journal's "durable before
  journaled" rule on the coordinator, and the bytes in flight are bounded by the chunks in
  flight (``--max-workers``). A worker lost mid-chunk has written nothing the coordinator can
  see; Dask runs the task again elsewhere, and the journal records the chunk once.

Nothing here is persisted; after a crash the coordinator starts a new executor.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from helmproc.engine.chunks.lifeline import die_with_parent
from helmproc.engine.chunks.worker import (
    CONVERTER_MODULES,
    ChunkResult,
    ChunkSpec,
    w_process_chunk,
)
from helmproc.engine.durable import write_bytes
from helmproc.engine.errors import ConfigError, PublishError
from helmproc.engine.job.interrupts import worker_sigint
from helmproc.engine.lean_imports import refuse_pandas

LOCAL = "local"
DASK_SCHEME = "dask://"
DASK_CONNECT_TIMEOUT_S = 30


class ChunkExecutor(Protocol):
    #: exception types meaning "the worker died", not "the chunk is bad"
    lost_worker_errors: tuple[type[BaseException], ...]
    #: whether losing one worker fails every chunk in flight (a process pool breaks)
    restart_on_loss: bool

    def submit(self, spec: ChunkSpec) -> Future[Any]: ...

    def collect(self, future: Future[Any], staging: Path) -> ChunkResult:
        """The finished chunk's facts, its shards present in ``staging``."""
        ...

    def shutdown(self) -> None: ...

    def kill(self) -> None:
        """Stop every worker now, without waiting for the chunks they hold."""
        ...


# Imported by the fork server only: it then exits when this coordinator dies (chunks/lifeline).
FORKSERVER_LIFELINE = "helmproc.engine.chunks.forkserver_lifeline"


def init_worker() -> None:
    """Pool worker initializer: Ctrl-C is the coordinator's to handle (a worker's SIGINT only
    ends its network waits), and the worker dies with the fork server (so with the
    coordinator: ``chunks/lifeline.py``)."""
    worker_sigint()
    die_with_parent()
    refuse_pandas()  # pyarrow would import it in every worker for nothing (lean_imports.py)


def make_pool(max_workers: int) -> ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    preload = [FORKSERVER_LIFELINE, "helmproc.engine.chunks.worker", *CONVERTER_MODULES]
    ctx.set_forkserver_preload(preload)
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=ctx, initializer=init_worker)


class LocalExecutor:
    lost_worker_errors: tuple[type[BaseException], ...] = (BrokenProcessPool,)
    restart_on_loss = True

    def __init__(self, max_workers: int) -> None:
        self.pool = make_pool(max_workers)

    def submit(self, spec: ChunkSpec) -> Future[Any]:
        return self.pool.submit(w_process_chunk, spec)

    def collect(self, future: Future[Any], staging: Path) -> ChunkResult:
        result: ChunkResult = future.result()
        return result

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        # ProcessPoolExecutor has no public kill; its process table is the only handle.
        for proc in list(getattr(self.pool, "_processes", {}).values()):
            proc.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)


def w_process_chunk_remote(spec: ChunkSpec) -> tuple[ChunkResult, dict[str, bytes]]:
    """Convert a chunk on a cluster worker; return its facts and its shards' bytes."""
    with tempfile.TemporaryDirectory(prefix="helmproc-") as tmp:
        local = replace(
            spec,
            staging_root=str(Path(tmp) / "staging"),
            scratch_root=str(Path(tmp) / "scratch"),
            pid_dir="",
        )
        result = w_process_chunk(local)
        blobs = {f.path: (Path(local.staging_root) / f.path).read_bytes() for f in result.shards}
    return result, blobs


class DaskExecutor:
    restart_on_loss = False

    def __init__(self, address: str, timeout: float = DASK_CONNECT_TIMEOUT_S) -> None:
        try:
            from distributed import Client
            from distributed.client import FutureCancelledError
            from distributed.scheduler import KilledWorker
        except ImportError:
            raise ConfigError(
                "--executor dask://... needs Dask: pip install 'helmproc[dask]'"
            ) from None
        self.lost_worker_errors: tuple[type[BaseException], ...] = (
            KilledWorker,
            FutureCancelledError,
        )
        try:
            self.client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.executor = self.client.get_executor(pure=False)

    def submit(self, spec: ChunkSpec) -> Future[Any]:
        future: Future[Any] = self.executor.submit(w_process_chunk_remote, spec)
        return future

    def collect(self, future: Future[Any], staging: Path) -> ChunkResult:
        result, blobs = future.result()
        for fact in result.shards:
            data = blobs.get(fact.path)
            if data is None or hashlib.sha256(data).hexdigest() != fact.sha256:
                raise PublishError(f"shard {fact.path} came back damaged from the cluster")
            write_bytes(staging / fact.path, data)
        chunk: ChunkResult = result
        return chunk

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False)
        self.client.close()

    def kill(self) -> None:
        self.shutdown()  # the cluster cancels our tasks when the client goes


def parse_executor(text: str | None) -> str:
    """Validate ``--executor``: ``local`` (default) or ``dask://HOST:PORT``."""
    value = (text or LOCAL).strip()
    if value == LOCAL:
        return value
    if value.startswith(DASK_SCHEME) and len(value) > len(DASK_SCHEME):
        return value
    raise ConfigError(f"--executor must be 'local' or 'dask://HOST:PORT', not {value!r}")


def make_executor(executor: str, max_workers: int) -> ChunkExecutor:
    if executor == LOCAL:
        return LocalExecutor(max_workers)
    return DaskExecutor("tcp://" + executor[len(DASK_SCHEME) :])
