"""The status report of a job, computed from the journal alone.

How it works: ``build_report`` folds the job row, the plan and every chunk's current status
into one frozen ``StatusReport``; ``to_json`` is what ``helmproc status --json`` prints and
``render_text`` prints the same record as a short table. Nothing here writes.

Across a crash: the report is derived, never stored, so it is exactly as current as the last
committed journal event; a chunk whose work was interrupted before its event was journaled
shows its previous state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from helmproc.engine.facts import ChunkPlan
from helmproc.journal.records import ChunkState, ChunkStatus, JobRecord

MAX_FAILURES_SHOWN = 10
# Run names shown under each failure reason in the text report (--json lists them all).
MAX_RUNS_PER_REASON = 3

_DETAILS = re.compile(r"\s*\([^()]*\)")
_URL = re.compile(r"https?://\S+")


def reason_group(reason: str, location: str | None = None) -> str:
    """The kind of a run failure, shared by every run that failed the same way.

    Reasons read ``FILE: PROBLEM[: DETAIL]`` (``stats.json: malformed JSON: ...``); the group
    is ``FILE: PROBLEM`` without parenthesised details, URLs, or the run's own ``location``
    (shown as ``<run>``), e.g. ``per_instance_stats.json: malformed JSON``. A reason without a
    file (``unexpected KeyError while converting: ...``) groups by its first part.
    """
    text = reason.replace(location, "<run>") if location else reason
    text = _URL.sub("<url>", text)
    head, sep, rest = text.partition(": ")
    if sep and " " not in head:
        return f"{head}: {_first_part(rest)}"
    return _first_part(text)


def _first_part(text: str) -> str:
    return _DETAILS.sub("", text).partition(": ")[0].strip() or text.strip()


@dataclass(frozen=True)
class RunFailure:
    """A run whose latest outcome is failed; ``run`` is its key project/suite/run_name.

    ``group`` is the reason's kind (:func:`reason_group`; derived from ``reason`` if empty).
    """

    run: str
    reason: str
    group: str = ""

    @property
    def kind(self) -> str:
        return self.group or reason_group(self.reason)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "reason": self.reason}


@dataclass(frozen=True)
class FailureGroup:
    """The runs that failed for one kind of reason; ``example`` is the first one's reason."""

    reason: str
    runs: tuple[str, ...]
    example: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "count": len(self.runs),
            "runs": list(self.runs),
            "example": self.example,
        }


def group_failures(failures: Sequence[RunFailure]) -> tuple[FailureGroup, ...]:
    """Failures grouped by kind, most runs first (ties by reason), runs in report order."""
    runs: dict[str, list[str]] = {}
    examples: dict[str, str] = {}
    for failure in failures:
        runs.setdefault(failure.kind, []).append(failure.run)
        examples.setdefault(failure.kind, failure.reason)
    order = sorted(runs, key=lambda kind: (-len(runs[kind]), kind))
    return tuple(FailureGroup(kind, tuple(runs[kind]), examples[kind]) for kind in order)


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk currently in state ``failed`` as a whole (not one bad run)."""

    chunk_id: int
    attempts: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"chunk_id": self.chunk_id, "attempts": self.attempts, "reason": self.reason}


@dataclass(frozen=True)
class StatusReport:
    """Where a job stands. Counts of runs, rows, shards and bytes come from each chunk's
    latest ``processed`` event; runs of chunks never processed are in neither ``runs``
    count (``n_runs`` minus both is the number still pending)."""

    job_id: str | None
    done: bool
    n_chunks: int
    n_runs: int
    chunks: Mapping[str, int]
    runs: Mapping[str, int]
    rows: int
    shards: int
    bytes: int
    failures: tuple[RunFailure, ...]
    chunk_failures: tuple[ChunkFailure, ...]
    started_at: str | None
    updated_at: str | None
    # what planning found at the destination (runs matched, already in the dataset, changed)
    ledger: Mapping[str, Any] | None = None

    @property
    def failures_by_reason(self) -> tuple[FailureGroup, ...]:
        return group_failures(self.failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "done": self.done,
            "n_chunks": self.n_chunks,
            "n_runs": self.n_runs,
            "chunks": dict(self.chunks),
            "runs": dict(self.runs),
            "rows": self.rows,
            "shards": self.shards,
            "bytes": self.bytes,
            "failures": [f.to_json() for f in self.failures],
            "failures_by_reason": [g.to_json() for g in self.failures_by_reason],
            "chunk_failures": [f.to_json() for f in self.chunk_failures],
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "already_present": (self.ledger or {}).get("already_present", 0),
            "matched": (self.ledger or {}).get("matched"),
            "changed": list((self.ledger or {}).get("changed", [])),
        }


def build_report(
    *,
    job: JobRecord | None,
    plan: Sequence[ChunkPlan],
    statuses: Mapping[int, ChunkStatus],
    updated_at: str | None,
) -> StatusReport:
    """Fold a journal's job, plan and chunk statuses into a report."""
    chunk_counts = {state.value: 0 for state in ChunkState}
    n_ok = n_failed = rows = n_shards = n_bytes = 0
    failures: list[RunFailure] = []
    chunk_failures: list[ChunkFailure] = []
    for chunk_id in sorted(statuses):
        status = statuses[chunk_id]
        chunk_counts[status.state.value] += 1
        if status.state is ChunkState.FAILED:
            chunk_failures.append(ChunkFailure(chunk_id, status.attempts, status.error or ""))
        n_shards += len(status.shards)
        n_bytes += sum(shard.n_bytes for shard in status.shards)
        for outcome in status.outcomes:
            if outcome.ok:
                n_ok += 1
                rows += outcome.n_rows
            else:
                n_failed += 1
                reason = outcome.error or "unknown error"
                group = reason_group(reason, outcome.run.location)
                failures.append(RunFailure(outcome.run.key, reason, group))
    n_runs = sum(len(chunk.runs) for chunk in plan)
    return StatusReport(
        job_id=job.job_id if job else None,
        done=job is not None and all(s.state is ChunkState.CLEANED for s in statuses.values()),
        n_chunks=len(plan),
        n_runs=n_runs,
        chunks=chunk_counts,
        runs={"ok": n_ok, "failed": n_failed},
        rows=rows,
        shards=n_shards,
        bytes=n_bytes,
        failures=tuple(failures),
        chunk_failures=tuple(chunk_failures),
        started_at=job.started_at if job else None,
        updated_at=updated_at,
        ledger=job.config.get("ledger") if job else None,
    )


def _human_bytes(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{n_bytes} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def render_text(report: StatusReport) -> str:
    """A short human table of the report (the non-JSON ``helmproc status``)."""
    if report.job_id is None:
        return "no job recorded in this journal yet\n"
    chunk_parts = ", ".join(f"{n} {state}" for state, n in report.chunks.items())
    runs = report.runs
    n_pending = max(report.n_runs - runs["ok"] - runs["failed"], 0)
    lines = [
        f"job      {report.job_id}  ({'done' if report.done else 'not done'})",
        f"time     started {report.started_at}, last event {report.updated_at or '-'}",
        f"chunks   {report.n_chunks}: {chunk_parts}",
        f"runs     {report.n_runs}: {runs['ok']} ok, {runs['failed']} failed, {n_pending} pending",
        f"output   {report.rows:,} rows in {report.shards} shards, {_human_bytes(report.bytes)}",
    ]
    if report.ledger is not None:
        changed = len(report.ledger.get("changed", []))
        lines.append(
            f"dataset  {report.ledger.get('already_present', 0)} of "
            f"{report.ledger.get('matched', 0)} matched runs were already in it when planned"
            + (f"; {changed} of those changed at the source (not converted again)" if changed
               else "")
        )
    groups = report.failures_by_reason
    if groups:
        lines.append(f"failed runs ({len(report.failures)}) by reason:")
        for group in groups[:MAX_FAILURES_SHOWN]:
            n_runs = len(group.runs)
            lines.append(f"  {group.reason}: {n_runs} run{'s' if n_runs != 1 else ''}")
            lines += [f"    {run}" for run in group.runs[:MAX_RUNS_PER_REASON]]
            if n_runs > MAX_RUNS_PER_REASON:
                lines.append(f"    ... and {n_runs - MAX_RUNS_PER_REASON} more")
            if group.example != group.reason:
                lines.append(f"    e.g. {group.example}")
    if report.chunk_failures:
        lines.append(f"failed chunks ({len(report.chunk_failures)}):")
        lines += [
            f"  chunk {f.chunk_id} after {f.attempts} attempt(s): {f.reason}"
            for f in report.chunk_failures[:MAX_FAILURES_SHOWN]
        ]
    if len(groups) > MAX_FAILURES_SHOWN or len(report.chunk_failures) > MAX_FAILURES_SHOWN:
        lines.append(f"  (first {MAX_FAILURES_SHOWN} shown; 'helmproc status --json' lists all)")
    return "\n".join(lines) + "\n"
