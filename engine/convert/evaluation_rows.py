"""Build the ``evaluations`` table of a run: EEE aggregate results from ``stats.json``.

Which stats: those of the metrics the run keeps (``metric_selection``: the core list, the
run groups' headlines and what their metric groups show). A stat's value is its ``mean``,
else ``sum / count`` with ``count > 0``; non-finite values are unusable.

How, like helm-summarize: the stats are grouped by (metric, split, whole perturbation
description, ``computed_on``); each group gives one result with ``sub_split`` null, the
group's stats merged as HELM's ``Stat.merge`` does (sum of sums / sum of counts, counts
added, population stddev from the summed squares when every stat has them; a group of one
stat keeps that stat's own values). A stat without ``sub_split`` is part of the merge (it
covers only the instances without a sub-split). Each sub-split of a group is also a result
of its own (``sub_split`` set, id ``...:sub_split=S...``). ``perturbed``, ``original`` and
``worst`` are different ``computed_on`` values, so results of their own.

Rows are sorted by evaluation_result_id. ``num_samples`` is the number of distinct instances
with rows under that id (else under the unperturbed id, else stats.json ``num_instances`` for
the split, else ``samples_number``, the distinct instance ids of scenario_state.json; null
for a sub-split result); ``source_data.sample_ids`` lists those instance ids;
``generation_config`` comes from request_states[0] (else the adapter spec). Pure: nothing is
written.
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
from helmproc.engine.convert.metric_selection import MetricSelection
from helmproc.engine.convert.run_index import CoreId, DescribeStat, EntryKey, EntryStats
from helmproc.engine.helm.perturbations import computed_on as computed_on_of
from helmproc.engine.helm.perturbations import key_name, perturbation_key
from helmproc.engine.helm.perturbations import label as perturbation_label
from helmproc.engine.helm.run_files import AdapterSpec, MetricName, RequestState, RunSpec, Stat
from helmproc.engine.helm.stat_values import finite, finite_int, stat_value

__all__ = ["CoreResult", "core_results", "evaluations_table", "samples_by_result"]

NUM_INSTANCES_STAT = "num_instances"


@dataclass(frozen=True)
class CoreResult:
    """One aggregate result: the HELM stats merged behind a result id."""

    result_id: str
    metric: str
    split: str | None
    sub_split: str | None
    perturbation: str | None  # perturbation key (canonical JSON), None if unperturbed
    computed_on: str | None
    score: float
    count: float
    stddev: float | None


# (metric, split, perturbation key, computed_on): what helm-summarize merges sub-splits by.
_GroupKey = tuple[str, str | None, str | None, str | None]


def _merged(
    result_id: str, key: _GroupKey, sub_split: str | None, stats: list[Stat]
) -> CoreResult | None:
    """``stats`` merged as HELM's ``Stat.merge`` does: sums and counts added; the stddev
    from the merged sum of squares (population, as HELM) when every stat has one."""
    metric, split, perturbation, computed_on = key
    if len(stats) == 1:
        only = stats[0]
        score = stat_value(only)
        if score is None:
            return None
        return CoreResult(
            result_id, metric, split, sub_split, perturbation, computed_on,
            score, only.count, only.stddev,
        )  # fmt: skip
    count = sum(stat.count for stat in stats)
    if count <= 0:
        return None
    total = 0.0
    for stat in stats:
        if stat.sum is not None:
            total += stat.sum
        elif stat.mean is not None:
            total += stat.mean * stat.count
    score = total / count
    if not math.isfinite(score):
        return None
    stddev = None
    squares = [stat.sum_squared for stat in stats]
    if all(value is not None for value in squares):
        variance = sum(squares) / count - score * score  # type: ignore[arg-type]
        stddev = math.sqrt(variance) if variance > 0 else 0.0
    return CoreResult(
        result_id, metric, split, sub_split, perturbation, computed_on, score, count, stddev
    )


def result_id_of(
    metric: str,
    split: str | None,
    perturbation: str | None,
    computed_on: str | None,
    sub_split: str | None = None,
) -> str:
    """The evaluation_result_id of a result (or row: no sub-split) in these terms."""
    label = perturbation_label(perturbation) if perturbation is not None else None
    return eee.evaluation_result_id(metric, split, label, computed_on, sub_split)


def row_describer(selection: MetricSelection) -> DescribeStat:
    """What ``run_index`` keeps of a per-instance stat: (evaluation_result_id, metric,
    split) for a row metric of ``selection``, else None. Row ids leave the sub-split out
    (an instance's sub-split is in its metadata), so they join the split-level result."""

    def describe(name: MetricName) -> CoreId | None:
        if not selection.is_row_metric(name.name):
            return None
        description = name.perturbation
        result_id = result_id_of(
            name.name, name.split, perturbation_key(description), computed_on_of(description)
        )
        return (result_id, name.name, name.split)

    return describe


def core_results(stats: Iterable[Stat], selection: MetricSelection) -> list[CoreResult]:
    """The run's aggregate results, sorted by evaluation_result_id (module docstring)."""
    groups: dict[_GroupKey, list[Stat]] = {}
    for stat in stats:
        name = stat.name
        if not selection.is_result_metric(name.name):
            continue
        description = name.perturbation
        pkey = perturbation_key(description)
        key = (name.name, name.split, pkey, computed_on_of(description))
        groups.setdefault(key, []).append(stat)
    results: list[CoreResult] = []
    for key, members in groups.items():
        metric, split, perturbation, computed_on = key
        whole = _merged(result_id_of(*key), key, None, members)
        if whole is not None:
            results.append(whole)
        by_sub_split: dict[str, list[Stat]] = {}
        for stat in members:
            if stat.name.sub_split is not None:
                by_sub_split.setdefault(stat.name.sub_split, []).append(stat)
        for sub_split, part in by_sub_split.items():
            result_id = result_id_of(metric, split, perturbation, computed_on, sub_split)
            found = _merged(result_id, key, sub_split, part)
            if found is not None:
                results.append(found)
    results.sort(key=lambda r: r.result_id)
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
    sample_ids: Sequence[str],
    first_state: RequestState | None,
    run_spec: RunSpec,
    facts: RunFacts,
    job_timestamp: str,
    selection: MetricSelection,
) -> pa.Table:
    """The ``evaluations`` rows of one run (``tables.EVALUATIONS_SCHEMA``)."""
    n = len(results)
    if n == 0:  # e.g. a run of metrics nobody selected: instance rows only, no aggregates
        return tables.EVALUATIONS_SCHEMA.empty_table()
    samples_number = len(sample_ids)
    num_instances = _num_instances_by_split(stats)
    scenario_args = run_spec.scenario_spec.args
    source_data = {
        "dataset_name": facts.dataset_name,
        "source_type": eee.SOURCE_TYPE,
        "samples_number": samples_number,
        "sample_ids": list(sample_ids),
        "additional_details": {
            "scenario_name": run_spec.scenario_spec.class_name,
            "scenario_args": json.dumps(scenario_args) if scenario_args else "",
        },
    }
    configs = [eee.metric_config(r.metric, selection.lower_is_better(r.metric)) for r in results]
    num_samples: list[int | None] = []
    for r in results:
        if r.sub_split is not None:
            num_samples.append(None)  # not known per sub-split
            continue
        unperturbed_id = result_id_of(r.metric, r.split, None, None)
        found = samples.get(r.result_id) or samples.get(unperturbed_id)
        num_samples.append(found or num_instances.get(r.split, samples_number))

    def repeat(value: Any, type_: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, type=type_), n)

    generation_config = _generation_config(run_spec.adapter_spec, first_state)
    columns: dict[str, pa.Array] = {
        **tables.provenance_columns(facts.ref, n),
        "schema_version": repeat(eee.SCHEMA_VERSION, pa.string()),
        "evaluation_id": repeat(facts.evaluation_id, pa.string()),
        "retrieved_timestamp": repeat(job_timestamp, pa.string()),
        "evaluation_timestamp": repeat(facts.evaluation_timestamp, pa.string()),
        "model_id": repeat(facts.model_id, pa.string()),
        "model_name": repeat(facts.model_id, pa.string()),
        "model_developer": repeat(eee.model_developer(facts.model_id), pa.string()),
        "model_deployment": repeat(facts.model_deployment, pa.string()),
        "evaluation_name": repeat(facts.dataset_name, pa.string()),
        "evaluation_result_id": pa.array([r.result_id for r in results], type=pa.string()),
        "metric_name": pa.array([c.metric_name for c in configs], type=pa.string()),
        "metric_id": pa.array([c.metric_id for c in configs], type=pa.string()),
        "metric_kind": pa.array([c.metric_kind for c in configs], type=pa.string()),
        "metric_unit": pa.array([c.metric_unit for c in configs], type=pa.string()),
        "metric_parameters": pa.array(
            [[{"key": k, "value": v} for k, v in c.metric_parameters.items()] for c in configs],
            type=tables.NUMBER_MAP,
        ),
        "metric_additional_details": pa.array(
            [[{"key": k, "value": v} for k, v in c.additional_details.items()] for c in configs],
            type=tables.STRING_MAP,
        ),
        "score_type": pa.array([c.score_type for c in configs], type=pa.string()),
        "split": pa.array([r.split for r in results], type=pa.string()),
        "sub_split": pa.array([r.sub_split for r in results], type=pa.string()),
        "perturbation": pa.array([key_name(r.perturbation) for r in results], type=pa.string()),
        "perturbation_description": pa.array([r.perturbation for r in results], type=pa.string()),
        "perturbation_computed_on": pa.array([r.computed_on for r in results], type=pa.string()),
        "score": pa.array([r.score for r in results], type=pa.float64()),
        "count": pa.array([finite_int(r.count) for r in results], type=pa.int64()),
        "stddev": pa.array([finite(r.stddev) for r in results], type=pa.float64()),
        "num_samples": pa.array(num_samples, type=pa.int64()),
        "lower_is_better": pa.array([c.lower_is_better for c in configs], type=pa.bool_()),
        "min_score": pa.array([c.min_score for c in configs], type=pa.float64()),
        "max_score": pa.array([c.max_score for c in configs], type=pa.float64()),
        "source_data": repeat(source_data, tables.SOURCE_DATA_TYPE),
        "generation_config": repeat(generation_config, tables.GENERATION_CONFIG_TYPE),
        "source_organization": repeat(facts.source_organization, pa.string()),
    }
    return tables.table_by_name(columns, tables.EVALUATIONS_SCHEMA)
