"""Convert one HELM run directory into its ``instances`` and ``evaluations`` Arrow tables.

How it works. The small files (``run_spec.json``, ``scenario.json``, ``stats.json``) are
decoded whole with the typed msgspec views of :mod:`run_files`. The two big files are reduced
by :mod:`run_index`: ``per_instance_stats.json`` to one small record per (instance id,
perturbation description, train trial) entry, ``scenario_state.json`` to an index of the
request state each entry joins to (a dict lookup by that key; for
``multiple_choice_separate_*`` runs the state of the chosen reference). Each of the two is
decoded whole when it is at most ``stream_threshold_bytes`` (the fast path) and streamed
element by element otherwise
(:mod:`array_stream`), so a run with a multi-GB ``scenario_state.json`` never has the file, or
its decoded form, in memory. Which metrics are kept is decided first, from the run's
``run_spec.groups`` and the release's ``schema.json`` (:mod:`metric_selection`). Then:

- **evaluations** (:mod:`evaluation_rows`): the kept stats of ``stats.json`` merged over
  sub-splits as helm-summarize does, built up front (it is small).
- **instances** (:mod:`instance_rows`): one row per entry x usable kept stat, in entry-key
  order, produced lazily in batches by :meth:`ConvertedRun.instance_batches`; every count
  (``n_instances``, ``n_rows``) and every check that can fail on the run's structure (a
  duplicate entry, an entry without a request state) is done before the first batch.
  Rows are sorted by (sample_id, unperturbed first, perturbation name, whole description,
  train trial, evaluation_result_id), which is also the row key; ``n_instances`` counts the
  distinct (instance id, perturbation description) pairs of per_instance_stats.json.
- Encrypted runs (``encryption_data.json``) are decrypted through :mod:`decrypt`.

Everything is a pure function of the run's files and ``job_timestamp`` (no wall clock, no
dict-order dependence beyond HELM's own file order; batch boundaries depend on the rows only),
so converting twice gives equal tables, whichever path each file took. Nothing is written, so
a crash leaves nothing to repair. Any problem with the input raises
:class:`RunConversionError` naming the file at fault, from :func:`convert_run` or, for a
request state or an encrypted text that turns out bad while rows are built, from the batch
iterator: the caller must treat a run as converted only once all its batches came out (the
worker spools multi-batch runs, see :mod:`spool`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from helmproc.engine.convert import eee_fields as eee
from helmproc.engine.convert import instance_rows
from helmproc.engine.convert import schemas as tables
from helmproc.engine.convert.evaluation_rows import (
    core_results,
    evaluations_table,
    row_describer,
    samples_by_result,
)
from helmproc.engine.convert.instance_rows import RunFacts, instance_batches
from helmproc.engine.convert.metric_selection import select_metrics
from helmproc.engine.convert.run_index import (
    EntryKey,
    EntryStats,
    RequestStates,
    describe_key,
    read_entries,
    read_states,
    sorted_keys,
)
from helmproc.engine.errors import RunConversionError
from helmproc.engine.facts import RunRef
from helmproc.engine.helm.decrypt import Decryptor
from helmproc.engine.helm.file_names import (
    PER_INSTANCE_STATS_FILE,
    RUN_SPEC_FILE,
    SCENARIO_FILE,
    SCENARIO_STATE_FILE,
    STATS_FILE,
)
from helmproc.engine.helm.run_files import (
    RunSpec,
    Scenario,
    Stat,
    load_json,
)
from helmproc.engine.helm.schema_file import HelmSchema
from helmproc.engine.input_files import check_regular

__all__ = ["STREAM_THRESHOLD_BYTES", "ConvertedRun", "convert_run"]

# Files larger than this are streamed instead of decoded whole. Decoding whole costs about
# 1-2x the file size in memory (per_instance_stats.json more: ~1.5x as Stat objects); at
# 32 MiB a worker on the fast path stays near 200 MB RSS. Most modern runs are below it.
STREAM_THRESHOLD_BYTES = 32 << 20


@dataclass(frozen=True)
class ConvertedRun:
    """One converted run: its evaluations, the facts the ``runs`` table records, and its
    instance rows as a re-iterable source of batches."""

    evaluations: pa.Table
    model: str
    scenario: str
    method: str
    n_instances: int
    n_rows: int
    metric_source: str  # what decided the kept metrics (``MetricSelection.description``)
    _batches: Callable[[], Iterator[pa.Table]] = field(repr=False, compare=False)

    def instance_batches(self) -> Iterator[pa.Table]:
        """The instance rows as tables of ``INSTANCES_SCHEMA``, in row order (one pass over
        the run's files per call; may raise :class:`RunConversionError`)."""
        return self._batches()

    @functools.cached_property
    def instances(self) -> pa.Table:
        """All instance rows in one table (materialised: for tests and small runs)."""
        batches = list(self.instance_batches())
        if not batches:
            return tables.INSTANCES_SCHEMA.empty_table()
        return pa.concat_tables(batches) if len(batches) > 1 else batches[0]


def _is_large(path: Path, threshold: int) -> bool:
    try:
        return check_regular(path) > threshold
    except FileNotFoundError:
        raise RunConversionError(path.name, "missing") from None
    except OSError as exc:
        raise RunConversionError(path.name, f"unreadable: {exc.strerror or exc}") from None


def convert_run(
    run_dir: Path,
    ref: RunRef,
    job_timestamp: str,
    *,
    schema: HelmSchema | None = None,
    source_organization: str | None = None,
    stream_threshold_bytes: int | None = None,
    batch_bytes: int | None = None,
) -> ConvertedRun:
    """Convert the HELM run in local directory ``run_dir`` (see the module docstring).

    ``schema`` is the release's or suite's ``schema.json`` (None when the source has none):
    with the run's ``run_spec.groups`` it decides which metrics are kept
    (:mod:`metric_selection`). ``source_organization`` is who published the output (the
    job's ``--source-organization``; None: unknown), kept in every evaluation row.

    ``job_timestamp`` becomes every evaluation's ``retrieved_timestamp`` and stands in for the
    evaluation timestamp when no request has a ``request_datetime``. ``stream_threshold_bytes``
    and ``batch_bytes`` default to :data:`STREAM_THRESHOLD_BYTES` and
    ``instance_rows.BATCH_BYTES`` (read at call time).
    """
    if stream_threshold_bytes is None:
        stream_threshold_bytes = STREAM_THRESHOLD_BYTES
    if batch_bytes is None:
        batch_bytes = instance_rows.BATCH_BYTES
    run_spec = load_json(run_dir / RUN_SPEC_FILE, RunSpec)
    scenario = load_json(run_dir / SCENARIO_FILE, Scenario)
    stats = load_json(run_dir / STATS_FILE, list[Stat])
    selection = select_metrics(run_spec.groups, schema)
    results = core_results(stats, selection)
    adapter = run_spec.adapter_spec
    model_id = eee.model_id(adapter.model, adapter.model_deployment, run_spec.name)
    if model_id is None:
        raise RunConversionError(
            RUN_SPEC_FILE,
            "no model: adapter_spec has no model or model_deployment, the run name no model=",
        )
    entries_path = run_dir / PER_INSTANCE_STATS_FILE
    states_path = run_dir / SCENARIO_STATE_FILE
    stream_entries = _is_large(entries_path, stream_threshold_bytes)
    stream_states = _is_large(states_path, stream_threshold_bytes)
    entries = read_entries(entries_path, row_describer(selection), stream=stream_entries)
    states = read_states(states_path, stream=stream_states)
    decryptor = Decryptor.for_run(run_dir)

    evaluation_timestamp = states.evaluation_timestamp
    dataset_name = eee.dataset_name(scenario.name, run_spec.name)
    facts = RunFacts(
        ref=ref,
        model_id=model_id,
        model_deployment=adapter.model_deployment,
        dataset_name=dataset_name,
        evaluation_id=eee.evaluation_id(
            dataset_name, model_id, evaluation_timestamp or job_timestamp
        ),
        evaluation_timestamp=evaluation_timestamp,
        source_organization=source_organization,
    )
    plan = _join(entries, states)
    evaluations = evaluations_table(
        results,
        stats,
        samples_by_result(entries),
        states.sample_ids,
        states.first,
        run_spec,
        facts,
        job_timestamp,
        selection,
    )
    n_instances = len({(k[0], k[1]) for k in entries})
    n_rows = sum(scanned.n_rows for scanned in entries.values())
    del entries, stats
    return ConvertedRun(
        evaluations=evaluations,
        model=model_id,
        scenario=dataset_name,
        method=adapter.method or "unknown",
        n_instances=n_instances,
        n_rows=n_rows,
        metric_source=selection.description,
        _batches=functools.partial(instance_batches, plan, states, decryptor, facts, batch_bytes),
    )


def _join(
    entries: dict[EntryKey, EntryStats], states: RequestStates[Any]
) -> list[tuple[EntryKey, EntryStats, Any]]:
    """Each entry in row order with the handle of its request state."""
    plan = []
    for key in sorted_keys(entries):
        scanned = entries[key]
        handle = states.choose(key, scanned.predicted_index)
        if handle is None:
            raise RunConversionError(
                SCENARIO_STATE_FILE,
                f"no request state for {describe_key(key)} of {PER_INSTANCE_STATS_FILE}",
            )
        plan.append((key, scanned, handle))
    return plan
