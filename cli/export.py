"""``helmproc export-eee``: a helmproc dataset folder -> the EEE datastore layout.

A thin view over :func:`helmproc.engine.export_eee`. The summary (runs exported,
files written, runs skipped with their reasons) goes to stdout, as text or with ``--json`` as
one JSON object; progress lines go to stderr. A missing or empty dataset folder is reported
through the error table (``cli/errors.py``). Exporting again is the repair for an
interrupted export: names and bytes are deterministic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from helmproc.cli.narration import count

if TYPE_CHECKING:
    from helmproc.engine import ExportReport

PROGRESS_EVERY_RUNS = 500


def _progress(quiet: bool) -> Callable[[str, bool], None]:
    """A line on stderr every PROGRESS_EVERY_RUNS runs (nothing when quiet)."""
    seen = 0

    def on_run(run: str, exported: bool) -> None:
        nonlocal seen
        seen += 1
        if not quiet and seen % PROGRESS_EVERY_RUNS == 0:
            print(f"helmproc: export-eee: {seen} runs done", file=sys.stderr, flush=True)

    return on_run


def render_summary(report: ExportReport) -> str:
    """The text summary: one headline, then one line per skipped run."""
    data = report.to_json()
    lines = [
        f"exported {data['runs_exported']} runs to {data['out']}: {data['files']} files, "
        f"{data['results']} aggregate results, {data['samples_rows']} sample rows; "
        f"skipped {count(data['runs_skipped'], 'run')}"
    ]
    lines += [f"  skipped {s.run} ({s.n_rows} instance rows): {s.reason}" for s in report.skipped]
    return "\n".join(lines)


def export_eee_command(
    source: Annotated[
        Path,
        typer.Option(
            "--from", metavar="DIR", help="helmproc dataset folder (written by `helmproc run`)."
        ),
    ],
    to: Annotated[
        Path,
        typer.Option(
            "--to", metavar="OUT", help="Folder to write data/<collection>/<dev>/<model>/ into."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Write the dataset as Every Eval Ever 0.3.0 records (aggregate JSON + samples JSONL)."""
    # resolved on first use (engine/__init__.py): the writer (pyarrow.compute) is imported
    # when exporting, not at start-up
    from helmproc.engine import export_eee

    report = export_eee(source, to, on_run=_progress(quiet))
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(render_summary(report))
