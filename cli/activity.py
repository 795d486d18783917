"""What a job is doing now, from its journal and its lock: the live part of ``helmproc status``.

``job_activity`` reads the job's config (source, destination), its event log (when runs were
processed) and the coordinator lock (``locking.live_holder``: is a live process working on
the job now?) and derives elapsed time, rows/s and runs/min over the last ``RATE_WINDOW_S``
seconds, an ETA and the last event's time. Nothing is stored: after a crash the report is as
current as the last committed event, and a job whose process died shows as not running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from helmproc.engine import StatusReport, destination_label

RATE_WINDOW_S = 300.0


def source_label(config: Mapping[str, Any]) -> str:
    """How to name a source to the user, from its journaled config."""
    if config.get("filters") is not None:
        inner = source_label({k: v for k, v in config.items() if k != "filters"})
        return f"{inner}, filtered"
    kind = config.get("kind")
    if kind == "multi":
        return " + ".join(source_label(part) for part in config.get("parts", ()))
    where = config.get("root") or config.get("base_url") or "?"
    what = [f"project {config.get('project')}"]
    for key in ("release", "suite", "run"):
        if config.get(key):
            what.append(f"{key} {config[key]}")
    return f"{where} ({', '.join(what)})"


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Activity:
    source: str
    destination: str
    holder_pid: int | None  # the live process holding the job's lock, if any
    elapsed_s: float | None
    rows_per_s: float | None  # over the last ``window_s`` seconds, while running
    runs_per_min: float | None
    window_s: float
    eta_s: float | None
    last_event_at: str | None

    @property
    def running(self) -> bool:
        return self.holder_pid is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "running": self.running,
            "holder_pid": self.holder_pid,
            "elapsed_s": self.elapsed_s,
            "rows_per_s": self.rows_per_s,
            "runs_per_min": self.runs_per_min,
            "rate_window_s": self.window_s,
            "eta_s": self.eta_s,
            "last_event_at": self.last_event_at,
        }


def job_activity(
    config: Mapping[str, Any],
    started_at: str | None,
    events: Sequence[Mapping[str, Any]],
    report: StatusReport,
    holder_pid: int | None,
    now: datetime | None = None,
) -> Activity:
    now = now or datetime.now(UTC)
    started = _when(started_at)
    last = _when(events[-1]["at"]) if events else None
    end = now if holder_pid is not None or last is None else last
    elapsed = (end - started).total_seconds() if started and end else None
    rows_per_s = runs_per_min = eta = None
    window = RATE_WINDOW_S
    if holder_pid is not None and started is not None:
        window = max(1.0, min(RATE_WINDOW_S, (now - started).total_seconds()))
        rows = runs = 0
        for event in events:
            at = _when(event["at"])
            if event["state"] != "processed" or at is None or (now - at).total_seconds() > window:
                continue
            for outcome in event["payload"].get("outcomes", ()):
                runs += 1
                rows += int(outcome.get("n_rows", 0))
        rows_per_s = rows / window
        runs_per_min = runs * 60.0 / window
        pending = max(report.n_runs - report.runs["ok"] - report.runs["failed"], 0)
        if runs:
            eta = pending / (runs / window)
    return Activity(
        source=source_label(config.get("source", {})),
        destination=destination_label(config.get("destination", {})),
        holder_pid=holder_pid,
        elapsed_s=elapsed,
        rows_per_s=rows_per_s,
        runs_per_min=runs_per_min,
        window_s=window,
        eta_s=eta,
        last_event_at=events[-1]["at"] if events else None,
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def render_activity(activity: Activity, done: bool) -> str:
    """The lines ``helmproc status`` prints above the counts."""
    if activity.running:
        holder = f"running (pid {activity.holder_pid} holds the journal)"
    else:
        holder = "done" if done else "not running (no live process holds the journal)"
    lines = [
        f"state    {holder}",
        f"source   {activity.source}",
        f"dest     {activity.destination}",
        f"elapsed  {_duration(activity.elapsed_s)} since the job started",
    ]
    if activity.running:
        minutes = activity.window_s / 60
        rows = activity.rows_per_s or 0.0
        runs = activity.runs_per_min or 0.0
        lines.append(
            f"rate     {rows:,.0f} rows/s, {runs:,.1f} runs/min over the last {minutes:.1f} min; "
            f"eta {_duration(activity.eta_s) if activity.eta_s is not None else 'unknown'}"
        )
    return "\n".join(lines) + "\n"
