"""What each chunk needs when a session starts, decided from the journal and the disk alone.

    journal says        disk says                                    action
    planned / failed    anything (stray temp files are swept)        process again
    processed           destination already holds every shard        journal uploaded (no resend)
    processed           staged shards present with journaled sha256  publish
    processed           a staged shard missing or different          process again (rebuild)
    uploaded            -                                            delete staged files, cleaned
    cleaned             -                                            nothing

With ``retry_failed`` every chunk whose latest outcomes include a failed run is processed again,
whatever its state. Pure decision: reads the disk and the destination, writes nothing, so it
gives the same answer after any crash until the coordinator acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helmproc.engine.chunks.shards import shard_matches
from helmproc.engine.publish.folder import Publisher
from helmproc.journal import ChunkState, ChunkStatus


@dataclass(frozen=True)
class RepairPlan:
    """What each unfinished chunk needs, decided from the journal and the disk."""

    to_process: tuple[int, ...]
    to_publish: tuple[int, ...]
    to_clean: tuple[int, ...]
    recovered_uploads: tuple[tuple[int, str], ...]
    # chunks in ``to_process`` only to retry their failed runs (``retry_failed``)
    retried: tuple[int, ...] = ()


def has_failed_runs(status: ChunkStatus) -> bool:
    return any(not outcome.ok for outcome in status.outcomes)


def decide_repairs(
    statuses: dict[int, ChunkStatus],
    staging: Path,
    publisher: Publisher,
    *,
    retry_failed: bool = False,
) -> RepairPlan:
    to_process: list[int] = []
    to_publish: list[int] = []
    to_clean: list[int] = []
    recovered: list[tuple[int, str]] = []
    retried: list[int] = []
    for cid in sorted(statuses):
        st = statuses[cid]
        if retry_failed and has_failed_runs(st):
            to_process.append(cid)
            retried.append(cid)
            continue
        if st.state is ChunkState.CLEANED:
            continue
        if st.state is ChunkState.UPLOADED:
            to_clean.append(cid)
        elif st.state is ChunkState.PROCESSED:
            commit = publisher.published_commit(st.shards)
            if commit is not None:
                recovered.append((cid, commit))
                to_clean.append(cid)
            elif all(shard_matches(staging, fact) for fact in st.shards):
                to_publish.append(cid)
            else:
                to_process.append(cid)
        else:
            to_process.append(cid)
    return RepairPlan(
        tuple(to_process), tuple(to_publish), tuple(to_clean), tuple(recovered), tuple(retried)
    )
