"""Property: for any HELM run, helmproc's tables agree exactly with HELM's own numbers.

Hypothesis generates whole HELM runs as the five JSON files (varying methods incl. separate
and calibrated multiple choice, instances, train trials, perturbations, splits and
sub-splits, plain-string vs ``{text}`` inputs, failed / unexecuted requests, missing optional
fields, stats with ``count == 0`` and NaN, stats.json entries that share an id), converts
them, and checks against expectations computed here from the JSON alone:

- every usable core per-instance stat is one row, with its value, under its full key
  (instance, whole perturbation description, train trial, metric, split), same-named
  perturbation variants each under their own; entries without one get one row with no
  score; the row's input is the request state HELM scored (separate MC: the chosen
  reference's);
- ``evaluations`` equals the core stats of ``stats.json`` merged over sub-splits as
  helm-summarize does, plus one result per sub-split, each computed_on its own (rule in
  ``test_converter.expected_evaluations``);
- ``n_instances`` / ``n_rows`` are right;
- HELM JSON -> Arrow -> Parquet -> read back gives the same tables, and the streamed path
  gives the same tables as the whole-file path.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.facts import RunRef
from tests.convert.helm_runs import (
    CORE_PREFIXES,
    JOB_TIMESTAMP,
    expected_evaluations,
    pert_key,
    result_id,
)

METHODS = (
    "generation",
    "multiple_choice_joint",
    "multiple_choice_separate_original",
    "multiple_choice_separate_calibrated",
)
CORE_METRICS = ("exact_match", "quasi_exact_match", "f1_score", "exact_match@5", "rouge_l")
OTHER_METRICS = ("num_prompt_tokens", "num_output_tokens", "num_completion_tokens", "logprob")
# Descriptions as HELM writes them; "typos" and "style" each come in same-named variants.
PERTURBATIONS: tuple[dict[str, Any], ...] = (
    {"name": "typos", "robustness": True, "fairness": False, "prob": 0.1},
    {"name": "typos", "robustness": True, "fairness": False, "prob": 0.05},
    {"name": "style", "robustness": True, "fairness": False, "suffix": "!", "mode": "add"},
    {"name": "style", "robustness": True, "fairness": False, "suffix": "?", "mode": "add"},
    {"name": "lowercase", "robustness": True, "fairness": False},
)

# A stat value: None -> count 0 (no mean), NaN -> bare NaN as old HELM wrote it.
stat_values = st.one_of(
    st.none(), st.just(math.nan), st.sampled_from([0.0, 1.0]), st.floats(0, 1, width=32)
)


def stat(name: dict[str, Any], value: float | None, count: int = 1) -> dict[str, Any]:
    if value is None or count == 0:
        return {"name": name, "count": 0, "sum": 0, "sum_squared": 0}
    total = value * count
    return {
        "name": name,
        "count": count,
        "sum": total,
        "sum_squared": value * total,
        "min": value,
        "max": value,
        "mean": value,
        "stddev": 0.0,
    }


def metric_name(
    name: str,
    split: str | None,
    sub_split: str | None,
    perturbation: dict[str, Any] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if split is not None:
        out["split"] = split
    if sub_split is not None:
        out["sub_split"] = sub_split
    if perturbation is not None:
        out["perturbation"] = perturbation
    return out


@st.composite
def helm_runs(draw: st.DrawFn) -> dict[str, Any]:
    """The five files of one HELM run (file name -> JSON value)."""
    method = draw(st.sampled_from(METHODS))
    separate = method.startswith("multiple_choice_separate")
    n_trials = draw(st.integers(1, 2))
    perturbations = draw(
        st.lists(st.sampled_from(range(len(PERTURBATIONS))), unique=True, max_size=3)
    )
    legacy_strings = draw(st.booleans())
    numbers = draw(st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True))
    states: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for n in numbers:
        split = draw(st.sampled_from(["test", "valid"]))
        sub_split = draw(st.sampled_from([None, None, "a", "b"]))
        n_refs = draw(st.integers(2, 3))
        correct = draw(st.integers(0, n_refs - 1))
        references = [f"answer {n}.{r}" for r in range(n_refs)]
        for perturbation in (None, *perturbations):
            description = (
                {**PERTURBATIONS[perturbation], "computed_on": "perturbed"}
                if perturbation is not None
                else None
            )
            instance: dict[str, Any] = {
                "input": f"question {n}" if legacy_strings else {"text": f"question {n}"},
                "references": [
                    {
                        "output": text if legacy_strings else {"text": text},
                        "tags": ["correct"] if r == correct else [],
                    }
                    for r, text in enumerate(references)
                ],
                "split": split,
                "id": f"id{n}",
            }
            if sub_split is not None:
                instance["sub_split"] = sub_split
            if description is not None:
                instance["perturbation"] = description
            for trial in range(n_trials):
                states.extend(draw_states(draw, instance, trial, method, references))
                if draw(st.integers(0, 5)) == 0:
                    continue  # some request states get no per-instance stats at all
                entries.append(
                    draw_entry(
                        draw, f"id{n}", description, trial, split, sub_split, separate, n_refs
                    )
                )
    states = draw(st.permutations(states))
    entries = draw(st.permutations(entries))
    adapter_spec: dict[str, Any] = {"method": method, "model": "dev/model-x"}
    if draw(st.booleans()):
        adapter_spec["model_deployment"] = "host/model-x"
    return {
        "run_spec.json": {
            "name": "prop:model=dev_model-x",
            "scenario_spec": {"class_name": "x.Prop", "args": {"k": 1}},
            "adapter_spec": adapter_spec,
        },
        "scenario.json": {"name": "prop"},
        "scenario_state.json": {"adapter_spec": adapter_spec, "request_states": states},
        "per_instance_stats.json": entries,
        "stats.json": draw_stats(draw, perturbations),
    }


def draw_states(
    draw: st.DrawFn, instance: dict[str, Any], trial: int, method: str, references: list[str]
) -> list[dict[str, Any]]:
    key = f"{instance['id']}/{pert_key(instance)}/{trial}"
    if not method.startswith("multiple_choice_separate"):
        state = base_state(draw, instance, trial, f"prompt {key}", references)
        if method == "multiple_choice_joint":
            state["output_mapping"] = {chr(65 + i): ref for i, ref in enumerate(references)}
        return [state]
    modes = ["original", "calibration"] if method.endswith("calibrated") else ["original"]
    out = []
    for r in range(len(references)):
        for mode in modes:
            state = base_state(draw, instance, trial, f"prompt {key} ref{r} {mode}", references)
            state.update(reference_index=r, request_mode=mode)
            state["request"]["echo_prompt"] = True
            out.append(state)
    return out


def base_state(
    draw: st.DrawFn, instance: dict[str, Any], trial: int, prompt: str, references: list[str]
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "instance": instance,
        "train_trial_index": trial,
        "request": {
            "model": "dev/model-x",
            "prompt": prompt,
            "temperature": 0,
            "echo_prompt": False,
        },
        "num_train_instances": 0,
    }
    outcome = draw(st.sampled_from(["ok", "ok", "ok", "failed", "missing"]))
    if outcome == "missing":
        return state
    if outcome == "failed":
        state["result"] = {"success": False, "completions": [], "error": "boom"}
        return state
    texts = draw(st.lists(st.sampled_from([*references, "other"]), min_size=1, max_size=2))
    result: dict[str, Any] = {
        "success": True,
        "completions": [{"text": f" {t}", "logprob": -1.0, "tokens": []} for t in texts],
    }
    if draw(st.booleans()):
        result["request_datetime"] = draw(st.integers(1_700_000_000, 1_700_000_100))
    state["result"] = result
    return state


def draw_entry(
    draw: st.DrawFn,
    instance_id: str,
    description: dict[str, Any] | None,
    trial: int,
    split: str,
    sub_split: str | None,
    separate: bool,
    n_refs: int,
) -> dict[str, Any]:
    metrics = draw(st.dictionaries(st.sampled_from(CORE_METRICS + OTHER_METRICS), stat_values))
    # Most stats carry the instance's split, a few none (both are HELM shapes).
    stat_split = split if draw(st.integers(0, 4)) else None
    stats = [
        stat(metric_name(m, stat_split, sub_split, description), v) for m, v in metrics.items()
    ]
    if separate and draw(st.booleans()):
        predicted = float(draw(st.integers(0, n_refs)))  # n_refs: out of range -> reference 0
        stats.append(stat(metric_name("predicted_index", split, sub_split, description), predicted))
    entry: dict[str, Any] = {"instance_id": instance_id, "train_trial_index": trial, "stats": stats}
    if description is not None:
        entry["perturbation"] = description
    return entry


def draw_stats(draw: st.DrawFn, perturbations: list[int]) -> list[dict[str, Any]]:
    """stats.json: core and other stats, some sharing (metric, split, perturbation,
    computed_on) across sub-splits or as duplicates, same-named perturbation variants,
    in any order."""
    perturbation_descriptions = [None] + [
        {**PERTURBATIONS[p], "computed_on": on}
        for p in perturbations
        for on in ("perturbed", "original", "worst")
    ]
    specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from(CORE_METRICS + OTHER_METRICS),
                st.sampled_from([None, "test", "valid"]),
                st.sampled_from([None, None, "a", "b"]),
                st.sampled_from(perturbation_descriptions),
                st.integers(0, 3),
                stat_values,
            ),
            max_size=12,
        )
    )
    return [stat(metric_name(m, sp, sub, p), v, count) for m, sp, sub, p, count, v in specs]


# --- the expectation, from the JSON alone -----------------------------------------------------


def usable(s: dict[str, Any]) -> float | None:
    if not s["count"]:
        return None
    value = s.get("mean", s["sum"] / s["count"])
    return value if math.isfinite(value) else None


def chosen_states(files: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The request state HELM scored for each per-instance entry."""
    single: dict[tuple[Any, ...], dict[str, Any]] = {}
    by_ref: dict[tuple[Any, ...], dict[int, dict[str, Any]]] = {}
    for s in files["scenario_state.json"]["request_states"]:
        key = (s["instance"]["id"], pert_key(s["instance"]), s["train_trial_index"])
        if "reference_index" not in s:
            single.setdefault(key, s)
        elif s["request_mode"] == "original":
            by_ref.setdefault(key, {}).setdefault(s["reference_index"], s)
    chosen = {}
    for entry in files["per_instance_stats.json"]:
        key = (entry["instance_id"], pert_key(entry), entry["train_trial_index"])
        if key in single:
            chosen[key] = single[key]
            continue
        predicted = [usable(s) for s in entry["stats"] if s["name"]["name"] == "predicted_index"]
        index = int(predicted[0]) if predicted and predicted[0] is not None else 0
        chosen[key] = by_ref[key].get(index, by_ref[key][0])
    return chosen


def text(value: Any) -> str:
    return value if isinstance(value, str) else value["text"]


def expected_rows(
    files: dict[str, Any],
) -> dict[tuple[Any, ...], tuple[float | None, str | None, str]]:
    """Full key -> (score, split, input text) of every row."""
    states = chosen_states(files)
    rows = {}
    for entry in files["per_instance_stats.json"]:
        key = (entry["instance_id"], pert_key(entry), entry["train_trial_index"])
        state = states[key]
        prompt = state["request"]["prompt"]
        core = [
            s
            for s in entry["stats"]
            if s["name"]["name"].startswith(CORE_PREFIXES) and usable(s) is not None
        ]
        for s in core:
            rows.setdefault(
                (*key, result_id(s["name"])),
                (
                    usable(s),
                    s["name"].get("split", state["instance"]["split"]),
                    prompt,
                ),
            )
        if not core:  # HELM computed no score: a row for the texts, no score
            rows[(*key, None)] = (None, state["instance"]["split"], prompt)
    return rows


def write_run(root: Path, files: dict[str, Any]) -> Path:
    run_dir = root / "prop:model=dev_model-x"
    run_dir.mkdir()
    for name, value in files.items():
        (run_dir / name).write_text(json.dumps(value, indent=2))
    return run_dir


def parquet_round_trip(table: Any) -> Any:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return pq.read_table(io.BytesIO(sink.getvalue()))


def convert(run_dir: Path, stream: bool) -> ConvertedRun:
    ref = RunRef("prop", "suite", run_dir.name, None, run_dir.name)
    threshold = 0 if stream else None
    return convert_run(
        run_dir, ref, JOB_TIMESTAMP, stream_threshold_bytes=threshold, batch_bytes=600
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(helm_runs())
def test_tables_agree_with_helm_numbers(files: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = write_run(Path(tmp), files)
        run = convert(run_dir, stream=False)
        instances = parquet_round_trip(run.instances)
        evaluations = parquet_round_trip(run.evaluations)
        assert instances.equals(run.instances) and evaluations.equals(run.evaluations)

        rows = instances.to_pylist()
        keys = [
            (
                r["sample_id"],
                r["helm_perturbation_description"],
                r["helm_train_trial"],
                r["evaluation_result_id"],
            )
            for r in rows
        ]
        assert len(set(keys)) == len(keys)  # every stat exactly once
        got = {
            key: (r["evaluation"]["score"], r["helm_split"], r["input"]["raw"])
            for key, r in zip(keys, rows, strict=True)
        }
        assert got == expected_rows(files)

        scores = {r["evaluation_result_id"]: r["score"] for r in evaluations.to_pylist()}
        assert scores == expected_evaluations(run_dir)

        entries = files["per_instance_stats.json"]
        assert run.n_instances == len({(e["instance_id"], pert_key(e)) for e in entries})
        assert run.n_rows == len(rows)

        streamed = convert(run_dir, stream=True)
        assert streamed.instances.equals(run.instances)
        assert streamed.evaluations.equals(run.evaluations)
        assert (streamed.n_instances, streamed.n_rows) == (run.n_instances, run.n_rows)
