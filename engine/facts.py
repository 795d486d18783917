"""The small picklable facts passed between stages and recorded by the journal.

``RunRef`` (a run's identity), ``RunOutcome`` (what converting it produced), ``ShardFact`` (one
durable shard file) and ``ChunkPlan`` (a planned chunk). Nothing here touches disk; these values
are what the journal records and what workers return, so they survive a crash only through the
journal. Shared vocabulary: imports nothing else from helmproc.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class RunRef:
    """One HELM run as a source knows it.

    Identity is (project, suite, run_name). ``location`` is where the source finds the run's
    files (a path relative to the source root, or an object prefix); ``release`` is the release
    the run was listed under, or None in suite / bare-folder mode.
    """

    project: str
    suite: str
    run_name: str
    release: str | None
    location: str

    @property
    def key(self) -> str:
        """Stable text form of the identity, used in logs and failure lists."""
        return f"{self.project}/{self.suite}/{self.run_name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRef:
        return cls(**data)


@dataclass(frozen=True)
class RunOutcome:
    """What converting one run produced: ``ok`` with counts, or ``failed`` with a reason."""

    run: RunRef
    ok: bool
    n_instances: int
    n_rows: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run.to_json(),
            "ok": self.ok,
            "n_instances": self.n_instances,
            "n_rows": self.n_rows,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunOutcome:
        return cls(
            run=RunRef.from_json(data["run"]),
            ok=data["ok"],
            n_instances=data["n_instances"],
            n_rows=data["n_rows"],
            error=data.get("error"),
        )


@dataclass(frozen=True)
class ShardFact:
    """One durable shard file. ``path`` is relative to the dataset root (POSIX separators)."""

    table: str
    path: str
    n_rows: int
    n_bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "path": self.path,
            "n_rows": self.n_rows,
            "n_bytes": self.n_bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardFact:
        return cls(
            table=data["table"],
            path=data["path"],
            n_rows=data["n_rows"],
            n_bytes=data["n_bytes"],
            sha256=data["sha256"],
        )


@dataclass(frozen=True)
class ChunkPlan:
    """One planned chunk: its id and its runs in processing order."""

    chunk_id: int
    runs: tuple[RunRef, ...]
