"""The planner: cut the discovered runs into deterministic chunks and give the job its id.

The plan is computed once per job and recorded in the journal before any work starts; resume
reads it back instead of planning again, so a source that changed in between cannot shift work
between chunks. The job id is a hash of what determines the output (source, filters, chunk
size, destination), so the same job asked twice lands on the same shard paths
(``dataset_layout.shard_path``: idempotent) and
two different jobs can never write the same path in one destination.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from helmproc.engine.facts import ChunkPlan, RunRef


def job_id_for(output_config: dict[str, Any], refs: Sequence[RunRef]) -> str:
    """Short stable id of a job: same config and run list -> same id."""
    digest = hashlib.sha256()
    digest.update(json.dumps(output_config, sort_keys=True).encode())
    for ref in refs:
        digest.update(json.dumps(ref.to_json(), sort_keys=True).encode())
    return digest.hexdigest()[:12]


def dedupe_runs(refs: Sequence[RunRef]) -> list[RunRef]:
    """Keep the first ref of each run identity, in sorted order."""
    seen: dict[tuple[str, str, str], RunRef] = {}
    for ref in sorted(refs):
        seen.setdefault((ref.project, ref.suite, ref.run_name), ref)
    return list(seen.values())


def ramp_sizes(n_runs: int, chunk_size: int) -> list[int]:
    """Chunk sizes 1, 2, 4, ... up to ``chunk_size``, then ``chunk_size`` until done.

    The first chunk holds one run so the first shard is published within seconds; doubling
    reaches full-size chunks after log2(chunk_size) chunks, so the extra per-chunk cost is
    bounded by that many small chunks.
    """
    sizes: list[int] = []
    size, left = 1, n_runs
    while left > 0:
        take = min(size, chunk_size, left)
        sizes.append(take)
        left -= take
        size *= 2
    return sizes


def plan_chunks(refs: Sequence[RunRef], chunk_size: int) -> list[ChunkPlan]:
    """Consecutive groups of runs (sizes from ``ramp_sizes``), numbered from 0."""
    if chunk_size < 1:
        raise ValueError("chunk size must be at least 1")
    runs = dedupe_runs(refs)
    plan: list[ChunkPlan] = []
    start = 0
    for i, size in enumerate(ramp_sizes(len(runs), chunk_size)):
        plan.append(ChunkPlan(chunk_id=i, runs=tuple(runs[start : start + size])))
        start += size
    return plan
