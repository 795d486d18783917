"""``helmproc verify``: check every published shard in a journal against the job's destination.

For each chunk the journal has as ``uploaded`` or ``cleaned``, every shard must be at the
destination with the journaled size, sha256 and row count (read from the Parquet footer: a
local file's metadata, or two range requests to the Hub). Mismatches go to stdout, one line
each (or ``--json``); the exit code is 1 when there is any. The journal is opened readonly, so
verify is safe while a job runs; it writes nothing anywhere, so a crash mid-verify needs no
repair: run it again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

import typer

from helmproc.cli.errors import EXIT_ERROR
from helmproc.engine.errors import NoJobError
from helmproc.engine.facts import ShardFact
from helmproc.engine.job.workdir import DEFAULT_WORK_ROOT, find_journal
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.registry import destination_label, publisher_from_config
from helmproc.journal import ChunkState, Journal

PUBLISHED = (ChunkState.UPLOADED, ChunkState.CLEANED)


@runtime_checkable
class BatchChecker(Protocol):
    """A publisher that can check many shards in one round (the Hub: one paths-info call)."""

    def check_all(self, shards: Sequence[ShardFact]) -> dict[str, str | None]: ...


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


def check_shards(publisher: Publisher, shards: Sequence[ShardFact]) -> dict[str, str | None]:
    if isinstance(publisher, BatchChecker):
        return publisher.check_all(shards)
    return {fact.path: publisher.check(fact) for fact in shards}


def verify_journal(path: Path, publisher: Publisher | None = None) -> VerifyReport:
    """Check the published shards of the job in the journal at ``path``."""
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
    problems = check_shards(publisher, shards) if shards else {}
    mismatches = tuple(
        Mismatch(owners[fact.path], fact.path, problem)
        for fact in shards
        if (problem := problems.get(fact.path)) is not None
    )
    n_chunks = sum(1 for st in statuses.values() if st.state in PUBLISHED)
    return VerifyReport(destination_label(config), n_chunks, len(shards), mismatches)


def verify(
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            metavar="PATH",
            help="Journal file of the job (default: the job `run` last started in this directory).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check every published shard in the journal against the destination (exists, sha256,
    Parquet row count); exit 1 on any mismatch."""
    report = verify_journal(find_journal(DEFAULT_WORK_ROOT, journal))
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for m in report.mismatches:
            print(f"MISMATCH chunk {m.chunk_id} {m.path}: {m.problem}")
        verdict = "ok" if report.ok else f"{len(report.mismatches)} mismatch(es)"
        print(
            f"verified {report.n_shards} shards of {report.n_chunks} published chunks "
            f"at {report.destination}: {verdict}"
        )
    if not report.ok:
        raise typer.Exit(EXIT_ERROR)
