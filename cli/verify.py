"""``helmproc verify``: check a dataset, from the dataset alone or against a job's journal.

With ``--to DIR`` or ``--repo-id ORG/NAME`` no journal is needed: the engine's
``check_destination`` checks the dataset itself (groups whole and readable, row counts as its
``runs`` table records, no run twice, no file that no shard accounts for); ``--repair``
deletes what is damaged so the next ``helmproc run`` (same command) converts those runs again.
Without them it calls the engine's ``verify_job`` (``engine/job/verify.py``: exists, size,
sha256 and Parquet row count of every shard of every published chunk). One line per problem
(or ``--json``); the exit code is 1 when there is any. Verifying only reads (``--repair``
deletes, in one step), so a crash mid-verify needs no repair: run it again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from helmproc.cli.destination import RepoIdOpt, RevisionOpt
from helmproc.cli.errors import EXIT_ERROR
from helmproc.engine import (
    Publisher,
    check_destination,
    destination_label,
    make_publisher,
    verify_job,
)
from helmproc.engine.errors import ConfigError


def verify_dataset(publisher: Publisher, repair: bool, as_json: bool) -> None:
    """The journal-free check (and repair) of ``publisher``'s destination."""
    checked = check_destination(publisher, repair=repair)
    report, removed = checked.check, checked.removed
    label = destination_label(publisher.config)
    if as_json:
        data = report.to_json()
        data["destination"] = label
        data["removed"] = removed
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        for p in report.problems:
            print(f"PROBLEM {p.path}: {p.problem}")
        verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        print(
            f"verified {report.files} files, {report.groups} groups, {report.runs} runs at "
            f"{label}: {verdict}"
        )
        if removed:
            print(f"repair: removed {len(removed)} damaged files")
    if removed:
        print(
            "helmproc: run the same `helmproc run` again to convert the removed runs again",
            file=sys.stderr,
        )
    if not report.ok and not removed:
        raise typer.Exit(EXIT_ERROR)


def verify(
    to: Annotated[
        Path | None,
        typer.Option(
            "--to", metavar="DIR", help="Check this dataset folder itself (no journal needed)."
        ),
    ] = None,
    repo_id: RepoIdOpt = None,
    revision: RevisionOpt = "main",
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="With --to / --repo-id: delete damaged groups and stray temp files; the next "
            "`helmproc run` converts their runs again.",
        ),
    ] = False,
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
    """Check a dataset: with --to / --repo-id the dataset itself (no journal); else every
    shard the job's journal published (exists, sha256, row count). Exit 1 on any problem."""
    if to is not None or repo_id is not None:
        verify_dataset(make_publisher(to or Path("."), repo_id, revision, False), repair, as_json)
        return
    if repair:
        raise ConfigError("--repair needs --to DIR or --repo-id ORG/NAME")
    report = verify_job(journal)
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
