"""Convert one HELM run directory into its ``instances`` and ``evaluations`` Arrow tables.

How it works. The five helm-run files are decoded with typed msgspec views
(:mod:`helm_json`), smallest first, so that a run without any core metric in ``stats.json``
fails before its large ``scenario_state.json`` is read. Then:

- **evaluations**: one row per ``stats.json`` entry whose name is a core metric
  (:func:`eee_fields.is_core_metric`) and that has a usable value (``mean``, else
  ``sum / count`` with ``count > 0``; non-finite values are unusable). Entries that share an
  ``evaluation_result_id`` (it ignores ``sub_split`` and ``perturbation.computed_on``) are
  deduplicated: the first in file order wins. Rows are sorted by ``evaluation_result_id``.
  ``num_samples`` is the number of distinct instances with rows under that id (else under the
  unperturbed id, else stats.json ``num_instances`` for the split, else ``samples_number``,
  the distinct instance ids of scenario_state.json); ``generation_config`` comes from
  request_states[0] (else the adapter spec), as in eee-mapping.md.
- **instances**: request states are indexed by (instance id, perturbation name, train trial
  index) in one pass; each ``per_instance_stats.json`` entry is joined to its request state by
  that key (a dict lookup). For ``multiple_choice_separate_*`` runs (request states carry a
  ``reference_index``) only ``request_mode`` "original" states count, and the entry uses the
  request of the chosen reference: the entry's ``predicted_index`` stat, else reference 0.
  Each usable core stat of the entry gives one row (first wins if two share an id), with the
  stat's own score, so perturbed copies and extra train trials keep their own scores.
  Rows are sorted by (sample_id, perturbation name with unperturbed first, train trial,
  evaluation_result_id), which is also the row key. ``n_instances`` counts the distinct
  (instance id, perturbation name) pairs of per_instance_stats.json.
- Row fields follow ``docs/eee-mapping.md``: input.raw is the request prompt, output.raw the
  completions, token_usage the entry's stat sums (``num_prompt_tokens``,
  ``num_output_tokens``; total = prompt + ``num_completion_tokens``; reasoning = completion -
  output when positive and the request did not echo its prompt), generation_time_ms the
  request time. ``error`` is HELM's ``result.error`` when the request failed, else null.
- Columns are built as Python lists per column, once per (instance, perturbation, trial)
  entry, converted with ``pa.array`` / ``StructArray.from_arrays``, and repeated per metric
  row with one ``take``.

Everything is a pure function of the run's files and ``job_timestamp`` (no wall clock, no
dict-order dependence beyond HELM's own file order), so converting twice gives equal tables;
nothing is written, so a crash leaves nothing to repair. Any problem with the input raises
:class:`RunConversionError` naming the file at fault. Memory: each file is decoded whole
(minus the fields helm_json leaves out, e.g. per-token data), so a run needs roughly its
JSON size in memory; a streaming parser for multi-GB ``scenario_state.json`` is not here.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from helmproc.engine import eee_fields as eee
from helmproc.engine import tables
from helmproc.engine.errors import RunConversionError
from helmproc.engine.helm_json import (
    PER_INSTANCE_STATS_FILE,
    RUN_SPEC_FILE,
    SCENARIO_FILE,
    SCENARIO_STATE_FILE,
    STATS_FILE,
    MetricName,
    PerInstanceStats,
    PerturbationDescription,
    RequestState,
    RunSpec,
    Scenario,
    ScenarioState,
    Stat,
    load_json,
    text_of,
)
from helmproc.engine.runs import RunRef

__all__ = ["ConvertedRun", "convert_run"]

# (instance id, perturbation name or None, train trial index): HELM's per-instance key.
EntryKey = tuple[str, str | None, int]

ORIGINAL_REQUEST_MODE = "original"
PREDICTED_INDEX_STAT = "predicted_index"
NUM_INSTANCES_STAT = "num_instances"


@dataclass(frozen=True)
class ConvertedRun:
    """The tables of one converted run and the facts the ``runs`` table records about it."""

    instances: pa.Table
    evaluations: pa.Table
    model: str
    scenario: str
    method: str
    n_instances: int
    n_rows: int


@dataclass(frozen=True)
class _RunFacts:
    """Run-level values shared by every row."""

    ref: RunRef
    model_id: str
    model_deployment: str | None
    dataset_name: str
    evaluation_id: str
    evaluation_timestamp: str | None


@dataclass(frozen=True)
class _CoreResult:
    result_id: str
    stat: Stat
    score: float


def convert_run(run_dir: Path, ref: RunRef, job_timestamp: str) -> ConvertedRun:
    """Convert the HELM run in local directory ``run_dir`` (see the module docstring).

    ``job_timestamp`` becomes every evaluation's ``retrieved_timestamp`` and stands in for the
    evaluation timestamp when no request has a ``request_datetime``.
    """
    run_spec = load_json(run_dir / RUN_SPEC_FILE, RunSpec)
    scenario = load_json(run_dir / SCENARIO_FILE, Scenario)
    stats = load_json(run_dir / STATS_FILE, list[Stat])
    results = _core_results(stats)
    per_instance = load_json(run_dir / PER_INSTANCE_STATS_FILE, list[PerInstanceStats])
    state = load_json(run_dir / SCENARIO_STATE_FILE, ScenarioState)

    adapter = run_spec.adapter_spec
    model_id = eee.model_id(adapter.model, adapter.model_deployment, run_spec.name)
    if model_id is None:
        raise RunConversionError(
            RUN_SPEC_FILE,
            "no model: adapter_spec has no model or model_deployment, the run name no model=",
        )
    evaluation_timestamp = _evaluation_timestamp(state.request_states)
    dataset_name = eee.dataset_name(scenario.name, run_spec.name)
    facts = _RunFacts(
        ref=ref,
        model_id=model_id,
        model_deployment=adapter.model_deployment,
        dataset_name=dataset_name,
        evaluation_id=eee.evaluation_id(
            dataset_name, model_id, evaluation_timestamp or job_timestamp
        ),
        evaluation_timestamp=evaluation_timestamp,
    )
    built = _InstanceRows.build(per_instance, state.request_states)
    instances = built.table(facts)
    evaluations = _evaluations_table(
        results, stats, built, run_spec, state.request_states, facts, job_timestamp
    )
    return ConvertedRun(
        instances=instances,
        evaluations=evaluations,
        model=model_id,
        scenario=dataset_name,
        method=adapter.method or "unknown",
        n_instances=built.n_instances,
        n_rows=instances.num_rows,
    )


# --- values ---------------------------------------------------------------------------------


def _stat_value(stat: Stat) -> float | None:
    """The stat's mean (else sum / count); None when count is 0 or the value is not finite."""
    if stat.count <= 0:
        return None
    value = stat.mean
    if value is None and stat.sum is not None:
        value = stat.sum / stat.count
    if value is None or not math.isfinite(value):
        return None
    return value


def _finite_int(value: float | None) -> int | None:
    """``value`` rounded to an int64, or None if it is absent, not finite or out of range."""
    if value is None or not math.isfinite(value) or abs(value) >= 2**63:
        return None
    return int(round(value))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class _Perturbed(Protocol):
    perturbation: PerturbationDescription | None


def _perturbation_name(item: _Perturbed) -> str | None:
    """The perturbation name of a stat name, per-instance entry or instance (None if none)."""
    perturbation = item.perturbation
    return perturbation.name if perturbation is not None else None


def _describe_key(key: EntryKey) -> str:
    instance_id, perturbation, trial = key
    return f"instance {instance_id!r} (perturbation {perturbation!r}, train trial {trial})"


def _evaluation_timestamp(states: Iterable[RequestState]) -> str | None:
    """Minimum ``result.request_datetime`` (Unix seconds) as a string, or None."""
    times = [
        s.result.request_datetime
        for s in states
        if s.result is not None
        and s.result.request_datetime is not None
        and math.isfinite(s.result.request_datetime)
    ]
    return str(int(min(times))) if times else None


# --- evaluations ----------------------------------------------------------------------------


def _core_results(stats: Sequence[Stat]) -> list[_CoreResult]:
    """Usable core-metric stats, first per evaluation_result_id, sorted by that id."""
    seen: dict[str, _CoreResult] = {}
    for stat in stats:
        name = stat.name
        if not eee.is_core_metric(name.name):
            continue
        score = _stat_value(stat)
        if score is None:
            continue
        result_id = eee.evaluation_result_id(name.name, name.split, _perturbation_name(name))
        if result_id not in seen:
            seen[result_id] = _CoreResult(result_id, stat, score)
    return [seen[k] for k in sorted(seen)]


def _num_instances_by_split(stats: Sequence[Stat]) -> dict[str | None, int]:
    counts: dict[str | None, int] = {}
    for stat in stats:
        name = stat.name
        if name.name == NUM_INSTANCES_STAT and name.perturbation is None and not name.sub_split:
            value = _finite_int(_stat_value(stat))
            if value is not None:
                counts.setdefault(name.split, value)
    return counts


def _generation_config(adapter_spec: Any, states: Sequence[RequestState]) -> dict[str, Any]:
    """EEE generation_config from request_states[0] (else the adapter spec)."""
    details: list[dict[str, str]] = []
    if states:
        request = states[0].request
        result = states[0].result
        completions = result.completions if result is not None else []
        args = {
            "temperature": _finite(request.temperature),
            "top_p": _finite(request.top_p),
            "top_k": _finite(request.top_k_per_token),
            "max_tokens": _finite_int(request.max_tokens) or None,
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
            "temperature": _finite(adapter_spec.temperature),
            "top_p": None,
            "top_k": None,
            "max_tokens": _finite_int(adapter_spec.max_tokens) or None,
            "reasoning": False,
        }
        extra = [("num_completions", adapter_spec.num_outputs)]
        stop_sequences = adapter_spec.stop_sequences
    if stop_sequences is not None:
        details.append({"key": "stop_sequences", "value": json.dumps(stop_sequences)})
    details.extend({"key": k, "value": str(v)} for k, v in extra if v is not None)
    return {"generation_args": args, "additional_details": details}


def _evaluations_table(
    results: Sequence[_CoreResult],
    stats: Sequence[Stat],
    built: _InstanceRows,
    run_spec: RunSpec,
    states: Sequence[RequestState],
    facts: _RunFacts,
    job_timestamp: str,
) -> pa.Table:
    n = len(results)
    if n == 0:  # e.g. a perplexity-only run: instance rows (fallback scores), no aggregates
        return tables.EVALUATIONS_SCHEMA.empty_table()
    samples_number = len({s.instance.id for s in states})
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
    configs = [eee.metric_config(r.stat.name.name) for r in results]
    num_samples: list[int] = []
    for r in results:
        name = r.stat.name
        unperturbed_id = eee.evaluation_result_id(name.name, name.split, None)
        samples = built.samples_by_result.get(r.result_id) or built.samples_by_result.get(
            unperturbed_id
        )
        if samples:
            num_samples.append(len(samples))
        else:
            num_samples.append(num_instances.get(name.split, samples_number))

    def repeat(value: Any, type_: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, type=type_), n)

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
        pa.array([r.stat.name.split for r in results], type=pa.string()),
        pa.array([r.stat.name.sub_split for r in results], type=pa.string()),
        pa.array([_perturbation_name(r.stat.name) for r in results], type=pa.string()),
        pa.array(
            [
                p.computed_on if (p := r.stat.name.perturbation) is not None else None
                for r in results
            ],
            type=pa.string(),
        ),
        pa.array([r.score for r in results], type=pa.float64()),
        pa.array([_finite_int(r.stat.count) for r in results], type=pa.int64()),
        pa.array([_finite(r.stat.stddev) for r in results], type=pa.float64()),
        pa.array(num_samples, type=pa.int64()),
        pa.array([c.lower_is_better for c in configs], type=pa.bool_()),
        pa.array([c.min_score for c in configs], type=pa.float64()),
        pa.array([c.max_score for c in configs], type=pa.float64()),
        repeat(source_data, tables.SOURCE_DATA_TYPE),
        repeat(_generation_config(run_spec.adapter_spec, states), tables.GENERATION_CONFIG_TYPE),
    ]
    return pa.Table.from_arrays(columns, schema=tables.EVALUATIONS_SCHEMA)


# --- instances ------------------------------------------------------------------------------


def _index_request_states(
    states: Sequence[RequestState],
) -> tuple[dict[EntryKey, RequestState], dict[EntryKey, dict[int, RequestState]]]:
    """(single request per key, {reference_index: request} per key for separate MC methods).

    The first request state wins when a key repeats. Calibration requests are left out.
    """
    single: dict[EntryKey, RequestState] = {}
    by_reference: dict[EntryKey, dict[int, RequestState]] = {}
    for state in states:
        instance = state.instance
        key = (instance.id, _perturbation_name(instance), state.train_trial_index)
        if state.reference_index is None:
            single.setdefault(key, state)
        elif state.request_mode in (None, ORIGINAL_REQUEST_MODE):
            by_reference.setdefault(key, {}).setdefault(state.reference_index, state)
    return single, by_reference


def _chosen_reference(
    predicted_index: float | None, references: dict[int, RequestState]
) -> RequestState:
    """The request of the reference HELM chose (``predicted_index``), else of reference 0."""
    predicted = _finite_int(predicted_index)
    if predicted is not None and predicted in references:
        return references[predicted]
    return references[0] if 0 in references else references[min(references)]


# How a per-instance stat is used: a core metric, a token count, the MC choice, or not at all.
_CORE, _PROMPT_TOKENS, _OUTPUT_TOKENS, _COMPLETION_TOKENS, _PREDICTED, _UNUSED = range(6)
_SPECIAL_STATS = {
    "num_prompt_tokens": _PROMPT_TOKENS,
    "num_output_tokens": _OUTPUT_TOKENS,
    "num_completion_tokens": _COMPLETION_TOKENS,
    PREDICTED_INDEX_STAT: _PREDICTED,
}


@functools.lru_cache(maxsize=4096)
def _stat_role(name: MetricName) -> tuple[int, str]:
    """(role, evaluation_result_id) of a per-instance stat name (cached: files repeat names)."""
    if eee.is_core_metric(name.name):
        return _CORE, eee.evaluation_result_id(name.name, name.split, _perturbation_name(name))
    return _SPECIAL_STATS.get(name.name, _UNUSED), ""


@dataclass
class _EntryStats:
    """What one per-instance entry's stats contribute: core scores and token sums."""

    # (evaluation_result_id, metric name, split, score), first per id, sorted by id
    core: list[tuple[str, str, str | None, float]]
    prompt_tokens: float | None = None
    output_tokens: float | None = None
    completion_tokens: float | None = None
    predicted_index: float | None = None


def _scan_entry_stats(stats: Sequence[Stat]) -> _EntryStats:
    """One pass over an entry's stats (the first stat of each name / result id wins)."""
    core: dict[str, tuple[str, str, str | None, float]] = {}
    found = _EntryStats(core=[])
    for stat in stats:
        role, result_id = _stat_role(stat.name)
        if role == _UNUSED:
            continue
        if role == _CORE:
            if result_id not in core:
                score = _stat_value(stat)
                if score is not None:
                    core[result_id] = (result_id, stat.name.name, stat.name.split, score)
        elif role == _PREDICTED:
            if found.predicted_index is None:
                found.predicted_index = _stat_value(stat)
        elif role == _PROMPT_TOKENS:
            if found.prompt_tokens is None:
                found.prompt_tokens = stat.sum
        elif role == _OUTPUT_TOKENS:
            if found.output_tokens is None:
                found.output_tokens = stat.sum
        elif found.completion_tokens is None:
            found.completion_tokens = stat.sum
    found.core = [core[k] for k in sorted(core)]
    return found


class _InstanceRows:
    """Column lists of the instances table: per entry (instance, perturbation, trial) and per
    row (entry x core metric). ``samples_by_result`` collects the sample ids behind each
    evaluation_result_id (EEE ``uncertainty.num_samples``)."""

    def __init__(self) -> None:
        # per entry
        self.sample_id: list[str] = []
        self.perturbation: list[str | None] = []
        self.train_trial: list[int] = []
        self.prompt: list[str] = []
        self.reference: list[list[str]] = []
        self.choices: list[list[str]] = []
        self.output: list[list[str]] = []
        self.reasoning: list[list[str]] = []
        self.extracted: list[str | None] = []
        self.sample_hash: list[str] = []
        self.input_tokens: list[int | None] = []
        self.output_tokens: list[int | None] = []
        self.total_tokens: list[int | None] = []
        self.reasoning_tokens: list[int | None] = []
        self.generation_ms: list[float | None] = []
        self.error: list[str | None] = []
        # per row
        self.entry_index: list[int] = []
        self.result_id: list[str | None] = []
        self.split: list[str | None] = []
        self.score: list[float] = []
        self.is_correct: list[bool] = []
        # summaries
        self.samples_by_result: dict[str, set[str]] = {}
        self.n_instances = 0

    @classmethod
    def build(
        cls, per_instance: Sequence[PerInstanceStats], states: Sequence[RequestState]
    ) -> _InstanceRows:
        rows = cls()
        single, by_reference = _index_request_states(states)
        keyed: dict[EntryKey, PerInstanceStats] = {}
        for entry in per_instance:
            key = (entry.instance_id, _perturbation_name(entry), entry.train_trial_index)
            if key in keyed:
                raise RunConversionError(
                    PER_INSTANCE_STATS_FILE, f"two entries for {_describe_key(key)}"
                )
            keyed[key] = entry
        rows.n_instances = len({(k[0], k[1]) for k in keyed})
        for key in sorted(keyed, key=lambda k: (k[0], k[1] is not None, k[1] or "", k[2])):
            entry = keyed[key]
            scanned = _scan_entry_stats(entry.stats)
            state = single.get(key)
            if state is None:
                references = by_reference.get(key)
                if not references:
                    raise RunConversionError(
                        SCENARIO_STATE_FILE,
                        f"no request state for {_describe_key(key)} of {PER_INSTANCE_STATS_FILE}",
                    )
                state = _chosen_reference(scanned.predicted_index, references)
            rows._add_entry(key, scanned, state)
        return rows

    def _add_entry(
        self,
        key: EntryKey,
        scanned: _EntryStats,
        state: RequestState,
    ) -> None:
        instance_id, perturbation, trial = key
        entry_index = len(self.sample_id)
        instance = state.instance
        references = [text_of(r.output) for r in instance.references]
        correct = [text_of(r.output) for r in instance.references if "correct" in r.tags]
        prompt = state.request.prompt
        completions = state.result.completions if state.result is not None else []
        self.sample_id.append(instance_id)
        self.perturbation.append(perturbation)
        self.train_trial.append(trial)
        self.prompt.append(prompt)
        self.reference.append(correct)
        mapping = state.output_mapping
        self.choices.append(list(mapping.values()) if mapping else references)
        self.output.append([c.text for c in completions])
        self.reasoning.append(
            [c.thinking.text for c in completions if c.thinking and c.thinking.text is not None]
        )
        self.extracted.append(completions[0].text.strip() if completions else None)
        self.sample_hash.append(eee.sample_hash(prompt, correct[0] if correct else ""))
        self._add_token_usage(scanned, state.request.echo_prompt)
        result = state.result
        request_time = _finite(result.request_time) if result is not None else None
        self.generation_ms.append(
            request_time * 1000.0 if request_time is not None and request_time >= 0 else None
        )
        failed = result is not None and not result.success
        self.error.append((result.error or "request failed") if failed and result else None)
        if not scanned.core:
            # Fallback row (as EEE does): no core stat for this entry, so score the share of
            # completions that equal a correct reference, under a null evaluation_result_id.
            wanted = {c.strip() for c in correct}
            hits = sum(1 for c in completions if c.text.strip() in wanted)
            score = hits / len(completions) if completions else 0.0
            self.entry_index.append(entry_index)
            self.result_id.append(None)
            self.split.append(instance.split)
            self.score.append(score)
            self.is_correct.append(score > 0)
        for result_id, metric, split, score in scanned.core:
            self.entry_index.append(entry_index)
            self.result_id.append(result_id)
            self.split.append(split if split is not None else instance.split)
            self.score.append(score)
            self.is_correct.append(eee.is_correct(metric, score))
            self.samples_by_result.setdefault(result_id, set()).add(instance_id)

    def _add_token_usage(self, scanned: _EntryStats, echo_prompt: bool) -> None:
        """EEE token_usage from the entry's stat sums (all None if prompt/output are absent).

        reasoning_tokens = completion - output tokens when positive, except for requests that
        echo the prompt (separate-MC scoring), where the difference is the echoed text.
        """
        prompt = _finite_int(scanned.prompt_tokens)
        output = _finite_int(scanned.output_tokens)
        completion = _finite_int(scanned.completion_tokens)
        if prompt is None or output is None or prompt < 0 or output < 0:
            self.input_tokens.append(None)
            self.output_tokens.append(None)
            self.total_tokens.append(None)
            self.reasoning_tokens.append(None)
            return
        self.input_tokens.append(prompt)
        self.output_tokens.append(output)
        self.total_tokens.append(prompt + (completion if completion is not None else output))
        reasoning = completion - output if completion is not None and not echo_prompt else 0
        self.reasoning_tokens.append(reasoning if reasoning > 0 else None)

    def table(self, facts: _RunFacts) -> pa.Table:
        n_entries = len(self.sample_id)
        n_rows = len(self.entry_index)
        string_list = pa.list_(pa.string())
        nulls = pa.nulls
        per_entry = pa.Table.from_arrays(
            [
                pa.array(self.perturbation, type=pa.string()),
                pa.array(self.train_trial, type=pa.int32()),
                pa.array(self.sample_id, type=pa.string()),
                pa.array(self.sample_hash, type=pa.string()),
                pa.StructArray.from_arrays(
                    [
                        pa.array(self.prompt, type=pa.string()),
                        nulls(n_entries, pa.string()),
                        pa.array(self.reference, type=string_list),
                        pa.array(self.choices, type=string_list),
                    ],
                    fields=list(tables.INPUT_TYPE),
                ),
                pa.StructArray.from_arrays(
                    [
                        pa.array(self.output, type=string_list),
                        pa.array(self.reasoning, type=string_list),
                    ],
                    fields=list(tables.OUTPUT_TYPE),
                ),
                self._answer_attribution(),
                self._token_usage(),
                pa.StructArray.from_arrays(
                    [
                        nulls(n_entries, pa.float64()),
                        nulls(n_entries, pa.float64()),
                        pa.array(self.generation_ms, type=pa.float64()),
                        nulls(n_entries, tables.STRING_MAP),
                    ],
                    fields=list(tables.PERFORMANCE_TYPE),
                ),
                pa.array(self.error, type=pa.string()),
            ],
            names=[
                "perturbation",
                "train_trial",
                "sample_id",
                "sample_hash",
                "input",
                "output",
                "answer_attribution",
                "token_usage",
                "performance",
                "error",
            ],
        ).take(pa.array(self.entry_index, type=pa.int64()))

        def repeat(value: str) -> pa.Array:
            return pa.repeat(pa.scalar(value, type=pa.string()), n_rows)

        score = pa.array(self.score, type=pa.float64())
        evaluation = pa.StructArray.from_arrays(
            [
                score,
                pa.array(self.is_correct, type=pa.bool_()),
                nulls(n_rows, pa.int32()),
                nulls(n_rows, pa.int32()),
            ],
            fields=list(tables.EVALUATION_TYPE),
        )
        columns = [
            *tables.provenance_arrays(facts.ref, n_rows),
            per_entry.column("perturbation"),
            per_entry.column("train_trial"),
            pa.array(self.split, type=pa.string()),
            repeat(eee.SCHEMA_VERSION),
            repeat(facts.evaluation_id),
            repeat(facts.model_id),
            repeat(facts.dataset_name),
            pa.array(self.result_id, type=pa.string()),
            per_entry.column("sample_id"),
            per_entry.column("sample_hash"),
            repeat(eee.INTERACTION_TYPE),
            per_entry.column("input"),
            per_entry.column("output"),
            nulls(n_rows, pa.string()),
            per_entry.column("answer_attribution"),
            evaluation,
            per_entry.column("token_usage"),
            per_entry.column("performance"),
            per_entry.column("error"),
            nulls(n_rows, tables.STRING_MAP),
        ]
        return pa.Table.from_arrays(columns, schema=tables.INSTANCES_SCHEMA)

    def _answer_attribution(self) -> pa.Array:
        """One item per entry with a completion (turn 0, from output.raw), else empty."""
        values = [v for v in self.extracted if v is not None]
        offsets = [0]
        for v in self.extracted:
            offsets.append(offsets[-1] + (v is not None))
        n = len(values)
        items = pa.StructArray.from_arrays(
            [
                pa.repeat(pa.scalar(0, type=pa.int32()), n),
                pa.repeat(pa.scalar(eee.ATTRIBUTION_SOURCE, type=pa.string()), n),
                pa.array(values, type=pa.string()),
                pa.repeat(pa.scalar(eee.ATTRIBUTION_METHOD, type=pa.string()), n),
                pa.repeat(pa.scalar(True, type=pa.bool_()), n),
            ],
            fields=list(tables.ANSWER_ATTRIBUTION_TYPE.value_type),
        )
        return pa.ListArray.from_arrays(
            pa.array(offsets, type=pa.int32()), items, type=tables.ANSWER_ATTRIBUTION_TYPE
        )

    def _token_usage(self) -> pa.Array:
        n = len(self.input_tokens)
        return pa.StructArray.from_arrays(
            [
                pa.array(self.input_tokens, type=pa.int64()),
                pa.array(self.output_tokens, type=pa.int64()),
                pa.array(self.total_tokens, type=pa.int64()),
                pa.nulls(n, pa.int64()),
                pa.nulls(n, pa.int64()),
                pa.array(self.reasoning_tokens, type=pa.int64()),
            ],
            fields=list(tables.TOKEN_USAGE_TYPE),
            mask=pa.array([t is None for t in self.input_tokens], type=pa.bool_()),
        )
