"""``helmproc verify``: check every published shard in a journal against the job's destination.

Parses the options, calls the engine's ``verify_journal`` (``engine/job/verify.py``: exists,
size, sha256 and Parquet row count of every shard of every published chunk) and prints one
line per mismatch (or ``--json``); the exit code is 1 when there is any. Verifying only reads,
so a crash mid-verify needs no repair: run it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from helmproc.cli.errors import EXIT_ERROR
from helmproc.engine.job.verify import verify_journal
from helmproc.engine.job.workdir import DEFAULT_WORK_ROOT, find_journal


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
