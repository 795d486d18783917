"""What each chunk needs when a session starts, decided from the journal and the disk alone.

    journal says        disk says                                    action
    planned / failed    anything (stray temp files are swept)        process again
    processed           destination already holds every shard        journal uploaded (no resend)
    processed           staged shards present with journaled sha256  publish
    processed           a staged shard missing or different          process again (rebuild)
    uploaded            -                                            delete staged files, cleaned
    cleaned             -                                            nothing

With ``retry_failed`` every chunk whose latest outcomes include a failed run is processed again,
whatever its state. ``check_ledger`` adds what the destination itself says (its ``runs``
table, no journal needed): a published chunk none of whose runs it holds any more is processed
again (``rebuild``); runs still to publish that another job published meanwhile stop the job.
Pure decision: reads the disk and the destination, writes nothing, so it
gives the same answer after any crash until the coordinator acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helmproc.engine.chunks.shards import shard_matches
from helmproc.engine.errors import DestinationConflictError
from helmproc.engine.facts import ChunkPlan
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.ledger import Ledger
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


def check_ledger(
    job_id: str, plan: dict[int, ChunkPlan], statuses: dict[int, ChunkStatus], ledger: Ledger
) -> tuple[int, ...]:
    """Compare the journal with what the destination holds (the ledger, no journal needed).

    Returns the published chunks none of whose runs the destination holds any more (the
    folder was deleted, or ``verify --repair`` removed a damaged group): they are converted
    and published again, byte-identical. Raises ``DestinationConflictError`` when runs this
    job has still to publish were published ok by another job meanwhile (one run, once).
    """
    rebuild: list[int] = []
    foreign: list[str] = []
    for cid in sorted(statuses):
        runs = plan[cid].runs
        held = [ledger.state((r.project, r.suite, r.run_name)) for r in runs]
        if statuses[cid].state in (ChunkState.UPLOADED, ChunkState.CLEANED):
            if runs and all(h is None for h in held):
                rebuild.append(cid)
            continue
        for ref, h in zip(runs, held, strict=True):
            if h is not None and h.outcome == "ok" and not h.group.startswith(job_id + "/"):
                foreign.append(ref.key)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise DestinationConflictError(
            f"{foreign[0]}{more} of this job's runs were published into the destination by "
            "another job since this job was planned; this job stops without writing them"
        )
    return tuple(rebuild)


def decide_repairs(
    statuses: dict[int, ChunkStatus],
    staging: Path,
    publisher: Publisher,
    *,
    retry_failed: bool = False,
    rebuild: tuple[int, ...] = (),
) -> RepairPlan:
    to_process: list[int] = []
    to_publish: list[int] = []
    to_clean: list[int] = []
    recovered: list[tuple[int, str]] = []
    retried: list[int] = []
    for cid in sorted(statuses):
        st = statuses[cid]
        if cid in rebuild or (retry_failed and has_failed_runs(st)):
            to_process.append(cid)
            if cid not in rebuild:
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
