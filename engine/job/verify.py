"""Verify a job: check every published shard in its journal against its destination.

For each chunk the journal has as ``uploaded`` or ``cleaned``, every shard must be at the
destination with the journaled size, sha256 and row count (``Publisher.check_all``: a local
file's metadata, or the Hub's paths-info and two range requests per shard). The journal is
opened readonly, so verifying is safe while a job runs; it writes nothing anywhere, so a crash
mid-verify needs no repair: verify again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.errors import NoJobError
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.registry import destination_label, publisher_from_config
from helmproc.journal import ChunkState, Journal

PUBLISHED = (ChunkState.UPLOADED, ChunkState.CLEANED)


@dataclass(frozen=True)
class Mismatch:
    chunk_id: int
    path: str
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "path": self.path, "problem": self.problem}


@dataclass(frozen=True)
class VerifyReport:
    destination: str
    n_chunks: int
    n_shards: int
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "chunks": self.n_chunks,
            "shards": self.n_shards,
            "ok": self.ok,
            "mismatches": [m.to_json() for m in self.mismatches],
        }


def verify_journal(path: Path, publisher: Publisher | None = None) -> VerifyReport:
    """Check the published shards of the job in the journal at ``path`` (against
    ``publisher``, by default the destination the job recorded)."""
    with Journal.open(path, readonly=True) as journal:
        job = journal.job()
        statuses = journal.chunk_statuses()
    if job is None:
        raise NoJobError(f"journal {path} holds no job")
    config = job.config["destination"]
    publisher = publisher or publisher_from_config(config)
    owners = {
        fact.path: cid
        for cid, st in statuses.items()
        if st.state in PUBLISHED
        for fact in st.shards
    }
    shards = [
        fact for st in statuses.values() if st.state in PUBLISHED for fact in st.shards
    ]
    problems = publisher.check_all(shards) if shards else {}
    mismatches = tuple(
        Mismatch(owners[fact.path], fact.path, problem)
        for fact in shards
        if (problem := problems.get(fact.path)) is not None
    )
    n_chunks = sum(1 for st in statuses.values() if st.state in PUBLISHED)
    return VerifyReport(destination_label(config), n_chunks, len(shards), mismatches)
