"""The pool function: convert one chunk of runs into its shard files.

``w_process_chunk`` runs in a worker process. It takes a small picklable ``ChunkSpec`` and
returns a small ``ChunkResult`` (paths, counts, hashes, per-run outcomes); the rows themselves
go to shard files in the staging folder, never back through the pipe. It never touches the
journal. If the worker dies mid-chunk, the only trace is ``*.tmp-*`` files (swept on resume)
or complete shards the journal does not know about (rewritten identically on resume).

A run that cannot be converted becomes a ``failed`` outcome with its reason; its chunk still
completes. A run's instance rows reach the shard only after the whole run converted
(``spool``: runs of several batches are spooled to scratch first), so a run failing
midway leaves no rows behind. Errors of the machine (disk full, out of memory) fail the
whole chunk instead, so the coordinator can retry it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.chunks.hold_points import hold_at_chunk_start
from helmproc.engine.chunks.pid_files import announced
from helmproc.engine.dataset_layout import shard_path
from helmproc.engine.errors import RunConversionError
from helmproc.engine.facts import RunOutcome, RunRef, ShardFact
from helmproc.engine.input_files import read_limit
from helmproc.engine.sources.folder import RUN_INPUT_FILES, Source
from helmproc.engine.sources.registry import source_from_config

# What converting and writing needs (pyarrow, msgspec, the converter) is imported by
# ``_process``, not here: the coordinator imports this module for ChunkSpec/ChunkResult and
# must not pay for the converter at start-up. Worker processes get these modules preloaded
# in the forkserver (``executors.make_pool``), so the imports cost nothing per chunk.
CONVERTER_MODULES = (
    "helmproc.engine.chunks.shards",
    "helmproc.engine.chunks.spool",
    "helmproc.engine.convert.converter",
    "helmproc.engine.convert.schemas",
    "helmproc.engine.sources.prefetch",
    "psutil",
    "pyarrow.parquet",
)

# Exceptions raised by converter code on input it did not foresee: the run fails, the chunk
# goes on. Anything else (OSError, MemoryError, ...) is the machine's fault and fails the chunk.
# RecursionError: input nested past the parsers' limit that a reader did not name (the readers
# turn it into a RunConversionError naming the file; this is the net under them).
RUN_LEVEL_ERRORS = (
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    AttributeError,
    UnicodeError,
    RecursionError,
)


@dataclass(frozen=True)
class ChunkSpec:
    job_id: str
    chunk_id: int
    runs: tuple[RunRef, ...]
    source_config: dict[str, Any]
    staging_root: str
    scratch_root: str
    job_timestamp: str
    # A piece of a chunk split after a memory overrun ("" = the whole chunk).
    part: str = ""
    # Runs recorded as failed without converting them: (run key, reason).
    skip_reasons: tuple[tuple[str, str], ...] = ()
    # Where the worker announces its pid while it works (for the budget's watchdog).
    pid_dir: str = ""
    # --max-file-bytes of the job: a run with a bigger input file fails (None: no limit).
    max_file_bytes: int | None = None
    # One coordinator's execution of the job ("" = none): a worker process reuses the source
    # (and what it cached) for the chunks of one execution only, so a resume reads afresh.
    execution: str = ""
    # --source-organization of the job (None: unknown).
    source_organization: str | None = None


@dataclass(frozen=True)
class ChunkResult:
    chunk_id: int
    shards: tuple[ShardFact, ...]
    outcomes: tuple[RunOutcome, ...]
    peak_rss_bytes: int
    part: str = ""
    baseline_bytes: int = 0
    largest_run_bytes: int = 0
    # the worker's USS when it started the chunk (0: not measured)
    baseline_uss_bytes: int = 0


def source_fingerprint(run_dir: Path) -> tuple[str, str]:
    """``(sizes, crc32c)`` of a run's input files (``RUN_INPUT_FILES`` present in ``run_dir``):
    ``name=bytes`` joined by ``;`` in name order, and the crc32c of their bytes in that order
    (hex). Recorded in the ``runs`` table so a later job can tell a source that changed."""
    import google_crc32c

    sizes: list[str] = []
    crc = 0
    for name in sorted(RUN_INPUT_FILES):
        path = run_dir / name
        try:
            with open(path, "rb") as fh:
                size = 0
                while block := fh.read(1 << 20):
                    crc = google_crc32c.extend(crc, block)
                    size += len(block)
        except FileNotFoundError:
            continue
        sizes.append(f"{name}={size}")
    return ";".join(sizes), f"{crc:08x}"


def run_input_bytes(run_dir: Path) -> int:
    total = 0
    for entry in os.scandir(run_dir):
        if entry.is_file():
            total += entry.stat().st_size
    return total


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, RunConversionError):
        return str(exc)
    return f"unexpected {type(exc).__name__} while converting: {exc}"


def w_process_chunk(spec: ChunkSpec) -> ChunkResult:
    # announced only with a run to convert: the memory watchdog never stops a piece whose runs
    # were all given up (it only writes their failed rows)
    skipped = dict(spec.skip_reasons)
    announcing = (
        announced(Path(spec.pid_dir), spec.chunk_id, spec.part)
        if spec.pid_dir and any(ref.key not in skipped for ref in spec.runs)
        else contextlib.nullcontext()
    )
    with announcing, gc_paused(), read_limit(spec.max_file_bytes):
        hold_at_chunk_start(spec.chunk_id)  # tests only: inert unless HELMPROC_TEST_HOLD is set
        return _process(spec)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a chunk's conversion, then back as it was.

    Decoded runs hold no reference cycles (lists inside the msgspec structs are still
    tracked), so the collections that hundreds of thousands of fresh containers trigger find
    nothing; on the bench corpus they cost ~8% of a worker's CPU. Memory is unaffected: freed
    objects still go by reference counting.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_cached_source: tuple[str, Source] | None = None


def _source_for(spec: ChunkSpec) -> Source:
    """The job's source, built once per worker process and coordinator execution: what it
    caches (a release index: lite's is 0.2 MB, fetched and parsed) then serves every chunk of
    that execution. Only the latest execution's source is kept; without an execution id
    (direct callers) a fresh source every time."""
    global _cached_source
    if not spec.execution:
        return source_from_config(spec.source_config)
    key = spec.execution + "\0" + spec.job_id
    if _cached_source is None or _cached_source[0] != key:
        _cached_source = (key, source_from_config(spec.source_config))
    return _cached_source[1]


def _process(spec: ChunkSpec) -> ChunkResult:
    import psutil

    from helmproc.engine.chunks.shards import ShardWriter
    from helmproc.engine.chunks.spool import StagedInstances
    from helmproc.engine.convert import instance_rows
    from helmproc.engine.convert.converter import convert_run
    from helmproc.engine.convert.schemas import (
        EVALUATIONS_SCHEMA,
        INSTANCES_SCHEMA,
        RUNS_SCHEMA,
        RunRow,
        runs_table,
    )
    from helmproc.engine.sources.prefetch import Prefetcher

    me = psutil.Process()
    baseline = me.memory_info().rss
    try:
        baseline_uss = int(me.memory_full_info().uss)
    except (psutil.AccessDenied, AttributeError):
        baseline_uss = 0
    largest_run = 0
    skip = dict(spec.skip_reasons)
    source = _source_for(spec)
    staging = Path(spec.staging_root)
    scratch = Path(spec.scratch_root) / f"chunk-{spec.chunk_id:06d}{spec.part}"
    schemas = {
        "instances": INSTANCES_SCHEMA,
        "evaluations": EVALUATIONS_SCHEMA,
        "runs": RUNS_SCHEMA,
    }
    # Small runs' tables are buffered and written together (see shards.ShardWriter).
    coalesce = instance_rows.BATCH_BYTES
    writers: dict[str, ShardWriter] = {}
    try:
        for table, schema in schemas.items():
            path = shard_path(table, spec.job_id, spec.chunk_id, spec.part)
            writers[table] = ShardWriter(staging, path, table, schema, coalesce_bytes=coalesce)
    except BaseException:
        for started in writers.values():  # a full disk: drop the writers already started
            started.abort()
        raise
    outcomes: list[RunOutcome] = []
    run_rows: list[RunRow] = []
    fetched = [ref for ref in spec.runs if ref.key not in skip]
    prefetch = Prefetcher(source, fetched, scratch, max_file_bytes=spec.max_file_bytes)
    # The release's / suite's schema.json, read once per source object (see sources.folder).
    schema_reader = getattr(source, "schema_for", None)
    try:
        for ref in spec.runs:
            try:
                if ref.key in skip:
                    raise RunConversionError(ref.location, skip[ref.key])
                run_dir = prefetch.take(ref)  # and the next run starts downloading
                largest_run = max(largest_run, run_input_bytes(run_dir))
                schema = schema_reader(ref) if schema_reader is not None else None
                converted = convert_run(
                    run_dir,
                    ref,
                    spec.job_timestamp,
                    schema=schema,
                    source_organization=spec.source_organization,
                )
                sizes, crc = source_fingerprint(run_dir)  # files the converter read
                # All of a run's rows or none: a big run is spooled until it has converted.
                staged = StagedInstances.stage(converted, scratch)
            except (RunConversionError, *RUN_LEVEL_ERRORS) as exc:
                reason = describe_failure(exc)
                outcomes.append(RunOutcome(ref, ok=False, n_instances=0, n_rows=0, error=reason))
                run_rows.append(
                    RunRow(
                        ref, None, None, None, 0, 0, "failed", reason,
                        converted_at=spec.job_timestamp,
                    )
                )
                continue
            try:
                staged.write_to(writers["instances"])
            finally:
                staged.discard()
            writers["evaluations"].write(converted.evaluations)
            outcomes.append(
                RunOutcome(ref, ok=True, n_instances=converted.n_instances, n_rows=converted.n_rows)
            )
            run_rows.append(
                RunRow(
                    ref,
                    converted.model,
                    converted.scenario,
                    converted.method,
                    converted.n_instances,
                    converted.n_rows,
                    "ok",
                    None,
                    converted.metric_source,
                    n_evaluations=converted.evaluations.num_rows,
                    source_sizes=sizes,
                    source_crc32c=crc,
                    converted_at=spec.job_timestamp,
                )
            )
            del converted, staged  # the run's index must not outlive it into the next run
        writers["runs"].write(runs_table(run_rows))
        shards = tuple(writer.close() for writer in writers.values())
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        prefetch.close()  # no download still writing into scratch
        shutil.rmtree(scratch, ignore_errors=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ChunkResult(
        spec.chunk_id,
        shards,
        tuple(outcomes),
        peak_kib * 1024,
        part=spec.part,
        baseline_bytes=baseline,
        largest_run_bytes=largest_run,
        baseline_uss_bytes=baseline_uss,
    )
