"""The planner: cut the discovered runs into deterministic chunks, and name everything after them.

The plan is computed once per job and recorded in the journal before any work starts; resume
reads it back instead of planning again, so a source that changed in between cannot shift work
between chunks. The job id is a hash of what determines the output (source, filters, chunk
size, destination), so the same job asked twice lands on the same shard paths (idempotent) and
two different jobs can never write the same path in one destination.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from helmproc.engine.runs import RunRef
from helmproc.journal.store import ChunkPlan

TABLES = ("instances", "evaluations", "runs")
# Files per folder stay well under the Hub's 10,000 limit: chunks are bucketed by id.
CHUNKS_PER_FOLDER = 1000


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


def plan_chunks(refs: Sequence[RunRef], chunk_size: int) -> list[ChunkPlan]:
    """Consecutive groups of ``chunk_size`` runs, numbered from 0."""
    if chunk_size < 1:
        raise ValueError("chunk size must be at least 1")
    runs = dedupe_runs(refs)
    return [
        ChunkPlan(chunk_id=i, runs=tuple(runs[start : start + chunk_size]))
        for i, start in enumerate(range(0, len(runs), chunk_size))
    ]


def shard_path(table: str, job_id: str, chunk_id: int) -> str:
    """Dataset-relative path of one chunk's shard of ``table`` (POSIX separators)."""
    folder = chunk_id // CHUNKS_PER_FOLDER
    return f"{table}/{job_id}/{folder:04d}/{table}-{chunk_id:06d}.parquet"
