"""The journal's records: chunk states, the legal transitions between them, a job and a
chunk's folded status.

Plain frozen values, nothing here touches disk: ``store`` folds journal events into them and
``status`` reads them, so both import this module and neither imports the other's internals.
They survive a crash only as the events ``store`` committed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from helmproc.engine.facts import RunOutcome, ShardFact


class ChunkState(enum.StrEnum):
    PLANNED = "planned"
    PROCESSED = "processed"
    UPLOADED = "uploaded"
    CLEANED = "cleaned"
    FAILED = "failed"


# From-state -> states a chunk may move to. ``planned`` is written only by ``start_job``.
LEGAL_TRANSITIONS: dict[ChunkState, frozenset[ChunkState]] = {
    ChunkState.PLANNED: frozenset({ChunkState.PROCESSED, ChunkState.FAILED}),
    ChunkState.FAILED: frozenset({ChunkState.PROCESSED, ChunkState.FAILED}),
    # processed -> processed: a shard rebuilt on resume after it was found missing or changed.
    ChunkState.PROCESSED: frozenset({ChunkState.PROCESSED, ChunkState.UPLOADED, ChunkState.FAILED}),
    # uploaded -> uploaded: a commit re-confirmed against the remote on resume.
    # uploaded / cleaned -> processed: only a reprocess for ``resume --retry-failed`` (the
    # event's payload carries ``"retry": true``; ``_append`` refuses it otherwise).
    ChunkState.UPLOADED: frozenset(
        {ChunkState.UPLOADED, ChunkState.CLEANED, ChunkState.PROCESSED}
    ),
    ChunkState.CLEANED: frozenset({ChunkState.PROCESSED}),
}
# States a chunk leaves for ``processed`` only when its failed runs are retried.
RETRY_ONLY_FROM = frozenset({ChunkState.UPLOADED, ChunkState.CLEANED})


@dataclass(frozen=True)
class JobRecord:
    """The job a journal belongs to. ``job_timestamp`` is fixed at plan time (determinism)."""

    job_id: str
    config: dict[str, Any]
    job_timestamp: str
    started_at: str


@dataclass(frozen=True)
class ChunkStatus:
    """A chunk's current state, folded from its events.

    ``attempts`` counts the chunk's ``processed`` and ``failed`` events: every time the chunk
    was worked on and the outcome journaled, including a shard rebuilt on resume.
    ``shards`` and ``outcomes`` come from the latest ``processed`` event (kept when the chunk
    later fails), ``commit_id`` from the latest ``uploaded`` event. ``error`` is the reason of
    the latest ``failed`` event while the chunk is ``failed``, else None. ``updated_at`` is the
    time of the chunk's latest event.
    """

    chunk_id: int
    state: ChunkState
    attempts: int
    shards: tuple[ShardFact, ...]
    outcomes: tuple[RunOutcome, ...]
    commit_id: str | None
    error: str | None
    updated_at: str


@dataclass(frozen=True)
class ChunkPieces:
    """How a chunk is cut after its memory splits: its pieces (``""`` = the whole chunk; a
    piece ``"01"`` is the second half of the first half of the chunk's runs) and the runs
    given up as too big (run key -> reason)."""

    parts: tuple[str, ...] = ("",)
    skipped: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def runs_of(runs: tuple[Any, ...], part: str) -> tuple[Any, ...]:
        """The runs of piece ``part`` of a chunk of ``runs`` (halving as the splits did)."""
        for step in part:
            half = len(runs) // 2
            runs = runs[:half] if step == "0" else runs[half:]
        return runs
