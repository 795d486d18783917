"""Build the ``evaluations`` table of a run: EEE aggregate results from ``stats.json``.

One row per evaluation_result_id (``name[:split][:perturbation]``) that has a usable core
stat (:func:`eee_fields.is_core_metric`; value = ``mean``, else ``sum / count`` with
``count > 0``; non-finite values are unusable). Several HELM stats can share an id, because
the id leaves out ``perturbation.computed_on`` and ``sub_split``. Which one the row shows:

- computed_on: the first stat of the id in file order fixes it (HELM writes ``perturbed``
  before ``original`` / ``worst``), as EEE does;
- sub_split: among the stats with that computed_on, a stat without ``sub_split`` wins (the
  first one). When there is none (HELM aggregates scenarios with sub-splits only per
  sub-split), the sub-split stats are merged the way helm-summarize shows a split:
  score = sum of their sums / sum of their counts, ``count`` = the largest count (the number
  of train trials), ``stddev`` unknown (null), ``sub_split`` null. A single sub-split stat
  is kept as it is.

Rows are sorted by evaluation_result_id. ``num_samples`` is the number of distinct instances
with rows under that id (else under the unperturbed id, else stats.json ``num_instances`` for
the split, else ``samples_number``, the distinct instance ids of scenario_state.json);
``generation_config`` comes from request_states[0] (else the adapter spec), as in
``docs/eee-mapping.md``. Pure: nothing is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from helmproc.engine.convert import eee_fields as eee
from helmproc.engine.convert import schemas as tables
from helmproc.engine.convert.instance_rows import RunFacts
from helmproc.engine.convert.run_index import CoreId, EntryKey, EntryStats
from helmproc.engine.helm.run_files import AdapterSpec, RequestState, RunSpec, Stat
from helmproc.engine.helm.stat_values import finite, finite_int, perturbation_name, stat_value

__all__ = ["CoreResult", "core_results", "evaluations_table", "samples_by_result"]

NUM_INSTANCES_STAT = "num_instances"


@dataclass(frozen=True)
class CoreResult:
    """One aggregate result: the HELM stat (or merged sub-split stats) behind a result id."""

    result_id: str
    metric: str
    split: str | None
    sub_split: str | None
    perturbation: str | None
    computed_on: str | None
    score: float
    count: float
    stddev: float | None


def _computed_on(stat: Stat) -> str | None:
    perturbation = stat.name.perturbation
    return perturbation.computed_on if perturbation is not None else None


def _from_stat(result_id: str, stat: Stat, score: float) -> CoreResult:
    name = stat.name
    return CoreResult(
        result_id=result_id,
        metric=name.name,
        split=name.split,
        sub_split=name.sub_split,
        perturbation=perturbation_name(name),
        computed_on=_computed_on(stat),
        score=score,
        count=stat.count,
        stddev=stat.stddev,
    )


def _merge_sub_splits(result_id: str, candidates: Sequence[tuple[Stat, float]]) -> CoreResult:
    """One result from the stats of several sub-splits (see the module docstring)."""
    first = candidates[0][0]
    total = sum(
        stat.sum if stat.sum is not None else score * stat.count for stat, score in candidates
    )
    count = sum(stat.count for stat, _ in candidates)
    merged = _from_stat(result_id, first, total / count)
    return CoreResult(
        result_id=merged.result_id,
        metric=merged.metric,
        split=merged.split,
        sub_split=None,
        perturbation=merged.perturbation,
        computed_on=merged.computed_on,
        score=merged.score,
        count=max(stat.count for stat, _ in candidates),
        stddev=None,
    )


def core_results(stats: Iterable[Stat]) -> list[CoreResult]:
    """The run's aggregate results, one per evaluation_result_id, sorted by that id."""
    by_id: dict[str, list[tuple[Stat, float]]] = {}
    for stat in stats:
        name = stat.name
        if not eee.is_core_metric(name.name):
            continue
        score = stat_value(stat)
        if score is None:
            continue
        result_id = eee.evaluation_result_id(name.name, name.split, perturbation_name(name))
        by_id.setdefault(result_id, []).append((stat, score))
    results: list[CoreResult] = []
    for result_id in sorted(by_id):
        candidates = by_id[result_id]
        computed_on = _computed_on(candidates[0][0])
        same = [c for c in candidates if _computed_on(c[0]) == computed_on]
        whole = [c for c in same if not c[0].name.sub_split]
        if whole:
            results.append(_from_stat(result_id, *whole[0]))
            continue
        per_sub_split: dict[str | None, tuple[Stat, float]] = {}
        for stat, score in same:
            per_sub_split.setdefault(stat.name.sub_split, (stat, score))
        if len(per_sub_split) == 1:
            results.append(_from_stat(result_id, *same[0]))
            continue
        merged = _merge_sub_splits(result_id, list(per_sub_split.values()))
        if math.isfinite(merged.score):
            results.append(merged)
    return results


def samples_by_result(entries: Mapping[EntryKey, EntryStats]) -> dict[str, int]:
    """Number of distinct instance ids with a row under each evaluation_result_id.

    Entries are grouped by their tuple of core ids first (entries with the same metrics share
    one tuple, see ``run_index``), so each entry costs one set insertion, not one per metric.
    """
    groups: dict[int, tuple[tuple[CoreId, ...], set[str]]] = {}
    for (instance_id, _, _), scanned in entries.items():
        group = groups.get(id(scanned.core_ids))
        if group is None:
            group = groups[id(scanned.core_ids)] = (scanned.core_ids, set())
        group[1].add(instance_id)
    ids: dict[str, set[str]] = {}
    for core_ids, instance_ids in groups.values():
        for result_id, _, _ in core_ids:
            found = ids.get(result_id)
            if found is None:
                ids[result_id] = set(instance_ids)
            else:
                found |= instance_ids
    return {result_id: len(found) for result_id, found in ids.items()}


def _num_instances_by_split(stats: Sequence[Stat]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for stat in stats:
        name = stat.name
        if name.name == NUM_INSTANCES_STAT and name.perturbation is None and not name.sub_split:
            value = finite_int(stat_value(stat))
            if value is not None:
                counts.setdefault(name.split, value)
    return counts


def _generation_config(adapter_spec: AdapterSpec, first: RequestState | None) -> dict[str, Any]:
    """EEE generation_config from request_states[0] (else the adapter spec)."""
    details: list[dict[str, str]] = []
    if first is not None:
        request = first.request
        completions = first.result.completions if first.result is not None else []
        args = {
            "temperature": finite(request.temperature),
            "top_p": finite(request.top_p),
            "top_k": finite(request.top_k_per_token),
            "max_tokens": finite_int(request.max_tokens) or None,
            "reasoning": bool(completions) and completions[0].thinking is not None,
        }
        extra: list[tuple[str, Any]] = [
            ("presence_penalty", request.presence_penalty),
            ("frequency_penalty", request.frequency_penalty),
            ("num_completions", request.num_completions),
        ]
        stop_sequences = request.stop_sequences
    else:
        args = {
            "temperature": finite(adapter_spec.temperature),
            "top_p": None,
            "top_k": None,
            "max_tokens": finite_int(adapter_spec.max_tokens) or None,
            "reasoning": False,
        }
        extra = [("num_completions", adapter_spec.num_outputs)]
        stop_sequences = adapter_spec.stop_sequences
    if stop_sequences is not None:
        details.append({"key": "stop_sequences", "value": json.dumps(stop_sequences)})
    details.extend({"key": k, "value": str(v)} for k, v in extra if v is not None)
    return {"generation_args": args, "additional_details": details}


def evaluations_table(
    results: Sequence[CoreResult],
    stats: Sequence[Stat],
    samples: Mapping[str, int],
    samples_number: int,
    first_state: RequestState | None,
    run_spec: RunSpec,
    facts: RunFacts,
    job_timestamp: str,
) -> pa.Table:
    """The ``evaluations`` rows of one run (``tables.EVALUATIONS_SCHEMA``)."""
    n = len(results)
    if n == 0:  # e.g. a perplexity-only run: instance rows (fallback scores), no aggregates
        return tables.EVALUATIONS_SCHEMA.empty_table()
    num_instances = _num_instances_by_split(stats)
    scenario_args = run_spec.scenario_spec.args
    source_data = {
        "dataset_name": facts.dataset_name,
        "source_type": eee.SOURCE_TYPE,
        "samples_number": samples_number,
        "additional_details": {
            "scenario_name": run_spec.scenario_spec.class_name,
            "scenario_args": json.dumps(scenario_args) if scenario_args else "",
        },
    }
    configs = [eee.metric_config(r.metric) for r in results]
    num_samples: list[int] = []
    for r in results:
        unperturbed_id = eee.evaluation_result_id(r.metric, r.split, None)
        found = samples.get(r.result_id) or samples.get(unperturbed_id)
        num_samples.append(found or num_instances.get(r.split, samples_number))

    def repeat(value: Any, type_: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, type=type_), n)

    generation_config = _generation_config(run_spec.adapter_spec, first_state)
    columns: list[pa.Array] = [
        *tables.provenance_arrays(facts.ref, n),
        repeat(eee.SCHEMA_VERSION, pa.string()),
        repeat(facts.evaluation_id, pa.string()),
        repeat(job_timestamp, pa.string()),
        repeat(facts.evaluation_timestamp, pa.string()),
        repeat(facts.model_id, pa.string()),
        repeat(facts.model_id, pa.string()),
        repeat(eee.model_developer(facts.model_id), pa.string()),
        repeat(facts.model_deployment, pa.string()),
        repeat(facts.dataset_name, pa.string()),
        pa.array([r.result_id for r in results], type=pa.string()),
        pa.array([c.metric_name for c in configs], type=pa.string()),
        pa.array([c.metric_id for c in configs], type=pa.string()),
        pa.array([c.metric_kind for c in configs], type=pa.string()),
        pa.array([c.metric_unit for c in configs], type=pa.string()),
        pa.array(
            [[{"key": k, "value": v} for k, v in c.metric_parameters.items()] for c in configs],
            type=tables.NUMBER_MAP,
        ),
        pa.array(
            [[{"key": k, "value": v} for k, v in c.additional_details.items()] for c in configs],
            type=tables.STRING_MAP,
        ),
        pa.array([c.score_type for c in configs], type=pa.string()),
        pa.array([r.split for r in results], type=pa.string()),
        pa.array([r.sub_split for r in results], type=pa.string()),
        pa.array([r.perturbation for r in results], type=pa.string()),
        pa.array([r.computed_on for r in results], type=pa.string()),
        pa.array([r.score for r in results], type=pa.float64()),
        pa.array([finite_int(r.count) for r in results], type=pa.int64()),
        pa.array([finite(r.stddev) for r in results], type=pa.float64()),
        pa.array(num_samples, type=pa.int64()),
        pa.array([c.lower_is_better for c in configs], type=pa.bool_()),
        pa.array([c.min_score for c in configs], type=pa.float64()),
        pa.array([c.max_score for c in configs], type=pa.float64()),
        repeat(source_data, tables.SOURCE_DATA_TYPE),
        repeat(generation_config, tables.GENERATION_CONFIG_TYPE),
    ]
    return pa.Table.from_arrays(columns, schema=tables.EVALUATIONS_SCHEMA)
