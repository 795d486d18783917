"""``export-eee``: write a helmproc dataset folder as an Every Eval Ever (0.3.0) datastore.

How it works. The dataset's three tables are indexed from their Parquet footers
(:mod:`dataset_reader`); then runs are exported one at a time, in (project, suite, run) order.
For each run: its ``evaluations`` rows are read whole (tens of rows); its ``instances`` rows
are streamed a record batch at a time straight into ``<uuid>_samples.jsonl`` while the
sha256 and line count are computed; then ``<uuid>.json`` is written with
``detailed_evaluation_results`` pointing at the samples file. Peak memory is one batch of
instance rows plus one run's evaluation rows plus the footers, whatever the dataset's size.
Records and layout follow :mod:`eee_records` and :mod:`eee_layout` (model id, developer and
path-sanitizing rules are documented there).

Which runs are exported: every run listed in the ``runs`` table or having ``evaluations``
rows. A run is skipped, and listed with its reason in the report, when

- its ``runs`` row says ``failed`` (conversion failed; it has no rows),
- it has no ``evaluations`` rows: EEE requires an aggregate and a run whose ``stats.json`` has
  no kept metric (e.g. perplexity-only runs such as HELM's ``simple1``) has none; its
  instance rows (which have no score) are counted in the report but not exported. EEE's own
  HELM converter refuses these runs too,
- its rows disagree with themselves (an ``evaluation_result_id`` twice, the run listed twice
  in ``runs``, an instance row with another ``evaluation_id`` or ``evaluation_name``): the
  dataset was written by two jobs or damaged, and exporting it would put duplicates in EEE,
- a value cannot be written as strict JSON (NaN or infinity).

A run with aggregates but no instance rows gets the aggregate only (no
``detailed_evaluation_results``): EEE's validator refuses an empty samples file.

Writing. Each file is written to ``<name>.tmp-<pid>`` beside its final name, fsynced and
renamed, samples first, so a file under its final name is never partial and the aggregate's
checksum always describes a complete samples file. Folders are not fsynced (that would be a
third fsync per run): after a power loss the last renames may be missing, never torn. File
names are derived from the run identity (:func:`layout.file_uuid`) and the bytes from
the rows alone, so exporting the same dataset again rewrites identical bytes: a crashed or
interrupted export is repaired by running it again (which also removes the temp files of an
export that was killed, once their process is gone). Files already in the destination that
this export does not write are left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from helmproc.engine.dataset_layout import TABLES
from helmproc.engine.durable import remove_orphan_temp_files, write_chunks
from helmproc.engine.errors import DiskFullError, HelmprocError
from helmproc.engine.export.dataset_reader import RUN_COLUMNS, RunKey, TableIndex
from helmproc.engine.export.layout import RecordLayout, record_layout
from helmproc.engine.export.records import (
    aggregate_bytes,
    aggregate_record,
    sample_lines,
    samples_reference,
)


class DatasetNotFoundError(HelmprocError):
    """The folder given to ``export-eee`` does not exist or is not a folder."""


class DatasetError(HelmprocError):
    """The folder exists but holds no helmproc dataset (no Parquet tables)."""


class ExportIOError(HelmprocError):
    """Reading the dataset or writing the export failed (disk full, permissions, ...).
    Exporting again after fixing the cause finishes the job (same names, same bytes)."""


class _SkipRun(Exception):
    """This run cannot be exported; ``reason`` goes into the report."""


@dataclass(frozen=True)
class ExportedRun:
    """One run written: its files (repository-relative) and what they hold."""

    run: str
    aggregate_path: str
    samples_path: str | None
    n_results: int
    n_samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "aggregate": self.aggregate_path,
            "samples": self.samples_path,
            "results": self.n_results,
            "samples_rows": self.n_samples,
        }


@dataclass(frozen=True)
class SkippedRun:
    """One run not exported, why, and how many instance rows it had."""

    run: str
    reason: str
    n_rows: int

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "reason": self.reason, "instance_rows": self.n_rows}


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and skipped; ``to_json`` is what ``--json`` prints."""

    out: Path
    exported: tuple[ExportedRun, ...]
    skipped: tuple[SkippedRun, ...]
    dataset_instance_rows: int
    dataset_evaluation_rows: int

    @property
    def n_files(self) -> int:
        return sum(1 + (r.samples_path is not None) for r in self.exported)

    @property
    def n_samples(self) -> int:
        return sum(r.n_samples for r in self.exported)

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "runs_exported": len(self.exported),
            "runs_skipped": len(self.skipped),
            "files": self.n_files,
            "samples_rows": self.n_samples,
            "results": sum(r.n_results for r in self.exported),
            "dataset_instance_rows": self.dataset_instance_rows,
            "dataset_evaluation_rows": self.dataset_evaluation_rows,
            "exported": [r.to_json() for r in self.exported],
            "skipped": [r.to_json() for r in self.skipped],
        }


@dataclass(frozen=True)
class _Dataset:
    instances: TableIndex
    evaluations: TableIndex
    runs: TableIndex


def open_dataset(dataset: Path) -> _Dataset:
    """Index the three tables of ``dataset`` (footers only); raises if it is not one."""
    if not dataset.is_dir():
        what = "not a folder" if dataset.exists() else "no such folder"
        raise DatasetNotFoundError(f"{dataset}: {what}")
    try:
        indexes = {table: TableIndex.build(dataset, table) for table in TABLES}
    except (OSError, pa.ArrowException) as exc:  # unreadable or not Parquet
        raise DatasetError(f"{dataset}: cannot read the Parquet footers: {exc}") from exc
    if not any(index.files for index in indexes.values()):
        raise DatasetError(
            f"{dataset}: no helmproc dataset here (no Parquet files under "
            f"{', '.join(t + '/' for t in TABLES)})"
        )
    return _Dataset(**indexes)


def export_eee(
    dataset: Path, out: Path, on_run: Callable[[str, bool], None] | None = None
) -> ExportReport:
    """Export dataset folder ``dataset`` into ``out/data/...`` (see the module docstring).

    ``on_run(run, exported)`` is called after each run, for progress output.
    """
    tables = open_dataset(dataset)
    # the runs table: (outcome, error) per listing of each run
    listed: dict[RunKey, list[tuple[str, str | None]]] = {}
    for row in tables.runs.all_rows([*RUN_COLUMNS, "outcome", "error"]):
        key = RunKey(row["helm_project"], row["helm_suite"], row["helm_run"])
        listed.setdefault(key, []).append((row["outcome"], row["error"]))
    exported: list[ExportedRun] = []
    skipped: list[SkippedRun] = []
    swept: set[Path] = set()  # folders already cleared of a killed export's temp files
    for key in sorted(set(listed) | tables.evaluations.keys()):
        try:
            exported.append(_export_run(tables, key, listed.get(key, []), out, swept))
            done = True
        except (OSError, pa.ArrowException, DiskFullError) as exc:
            raise ExportIOError(f"run {key}: {exc}") from exc
        except _SkipRun as skip:
            skipped.append(SkippedRun(str(key), str(skip), tables.instances.count(key)))
            done = False
        if on_run is not None:
            on_run(str(key), done)
    return ExportReport(
        out=out,
        exported=tuple(exported),
        skipped=tuple(skipped),
        dataset_instance_rows=tables.instances.n_rows,
        dataset_evaluation_rows=tables.evaluations.n_rows,
    )


def _check_listing(listings: Sequence[tuple[str, str | None]]) -> None:
    """Skip a run listed more than once, or listed as not converted."""
    if len(listings) > 1:
        raise _SkipRun(f"listed {len(listings)} times in the runs table (published twice?)")
    for outcome, error in listings:
        if outcome != "ok":
            raise _SkipRun(f"conversion {outcome}: {error or 'no reason recorded'}")


def _export_run(
    tables: _Dataset,
    key: RunKey,
    listings: Sequence[tuple[str, str | None]],
    out: Path,
    swept: set[Path],
) -> ExportedRun:
    _check_listing(listings)
    evaluations = tables.evaluations.rows(key)
    if not evaluations:
        raise _SkipRun(
            "no aggregate results (stats.json has no kept metric), so no EEE record; "
            "its instance rows are not exported"
        )
    result_ids = [row["evaluation_result_id"] for row in evaluations]
    if len(set(result_ids)) != len(result_ids):
        raise _SkipRun("an evaluation_result_id occurs twice (run published twice?)")
    first = evaluations[0]
    layout = record_layout(
        key.project,
        key.suite,
        key.run,
        evaluation_name=first["evaluation_name"],
        model_id=first["model_id"],
        model_developer=first["model_developer"],
        model_deployment=first["model_deployment"],
    )
    folder = out / layout.folder
    folder.mkdir(parents=True, exist_ok=True)
    for parent in {(out / layout.samples_path).parent, (out / layout.aggregate_path).parent}:
        if parent not in swept and parent.is_dir():
            remove_orphan_temp_files(parent)  # an earlier export killed mid-write
            swept.add(parent)
    expected = {name: first[name] for name in ("evaluation_id", "evaluation_name")}
    lines = _sample_lines(tables.instances, key, layout, expected)
    try:
        checksum, n_samples = write_chunks(out / layout.samples_path, lines, fsync_folder=False)
    except (_SkipRun, ValueError) as exc:  # ValueError: a non-finite number in a row
        _remove_empty_folders(folder, out)
        if isinstance(exc, _SkipRun):
            raise
        raise _SkipRun(f"instance row is not valid JSON: {exc}") from exc
    if n_samples == 0:
        (out / layout.samples_path).unlink()
        samples = None
    else:
        samples = samples_reference(layout, checksum, n_samples)
    try:
        text = aggregate_bytes(aggregate_record(evaluations, layout, samples))
    except ValueError as exc:
        (out / layout.samples_path).unlink(missing_ok=True)
        _remove_empty_folders(folder, out)
        raise _SkipRun(f"aggregate is not valid JSON: {exc}") from exc
    write_chunks(out / layout.aggregate_path, [text], fsync_folder=False)
    return ExportedRun(
        run=str(key),
        aggregate_path=layout.aggregate_path,
        samples_path=layout.samples_path if samples else None,
        n_results=len(evaluations),
        n_samples=n_samples,
    )


def _sample_lines(
    instances: TableIndex, key: RunKey, layout: RecordLayout, expected: dict[str, str]
) -> Iterable[bytes]:
    """The run's sample lines, streamed batch by batch; checks that every row belongs to the
    aggregate (same evaluation_id and evaluation_name)."""
    for batch in instances.batches(key):
        for name, value in expected.items():
            differs = pc.invert(pc.fill_null(pc.equal(batch.column(name), value), False))
            if pc.any(differs).as_py():
                row = batch.filter(differs).slice(0, 1).to_pylist()[0]
                raise _SkipRun(
                    f"instance row {row['sample_id']!r} has {name} {row[name]!r}, "
                    f"the evaluations have {value!r}"
                )
        yield from sample_lines(batch, layout.model_id)


def _remove_empty_folders(folder: Path, stop: Path) -> None:
    """Remove ``folder`` and its parents below ``stop`` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): keep it and its parents
            return
        folder = folder.parent
