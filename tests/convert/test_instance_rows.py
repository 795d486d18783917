"""Tests of the instance rows (engine/convert/instance_rows.py): one row per kept per-instance
stat with its score, its own request state, the join to the aggregate results, and the
variants that pin the joins down; rows validate against EEE's instance-level schema.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helmproc.engine.convert.converter import ConvertedRun
from tests.convert.helm_runs import (
    FIXTURE_ROOT,
    VARIANTS,
    RowKey,
    convert,
    expected_request_states,
    expected_rows,
    instance_record,
    number,
    pert_key,
    read,
    row_key,
    text,
    variant_dir,
)
from tests.fakes.eee_schemas import eee_schema


def test_each_core_per_instance_stat_is_one_row_with_its_score(
    helm_run_dir: Path, converted: ConvertedRun
) -> None:
    expected = expected_rows(helm_run_dir)
    rows = converted.instances.to_pylist()
    got: dict[RowKey, list[float]] = {}
    for row in rows:
        got.setdefault(row_key(row), []).append(row["evaluation"]["score"])
    assert got == {key: [score] for key, score in expected.items()}
    assert converted.n_rows == len(rows) == len(expected)


def test_row_keys_are_unique_and_sorted(converted: ConvertedRun) -> None:
    rows = converted.instances.to_pylist()
    keys = [row_key(r) for r in rows]
    assert len(set(keys)) == len(keys)
    sort_key = [
        (k[0], k[1] is not None, r["helm_perturbation"] or "", k[1] or "", k[2], k[3] or "")
        for k, r in zip(keys, rows, strict=True)
    ]
    assert sort_key == sorted(sort_key)
    for row in rows:  # the name column is the description's name
        description = row["helm_perturbation_description"]
        name = json.loads(description)["name"] if description else None
        assert row["helm_perturbation"] == name


def test_rows_carry_their_own_request_state(helm_run_dir: Path, converted: ConvertedRun) -> None:
    states = expected_request_states(helm_run_dir)
    entries = {
        (e["instance_id"], pert_key(e), e["train_trial_index"]): e
        for e in read(helm_run_dir, "per_instance_stats.json")
    }
    for row in converted.instances.to_pylist():
        key = row_key(row)[:3]
        state, entry = states[key], entries[key]
        references = state["instance"]["references"]
        correct = [text(r["output"]) for r in references if "correct" in r["tags"]]
        completions = [c["text"] for c in state["result"]["completions"]]
        assert row["input"]["raw"] == state["request"]["prompt"]
        assert row["input"]["reference"] == correct
        if "output_mapping" in state:
            assert row["input"]["choices"] == list(state["output_mapping"].values())
        else:
            assert row["input"]["choices"] == [text(r["output"]) for r in references]
        assert row["output"]["raw"] == completions
        assert row["answer_attribution"][0]["extracted_value"] == completions[0].strip()
        prompt_plus_reference = state["request"]["prompt"] + (correct[0] if correct else "")
        assert row["sample_hash"] == hashlib.sha256(prompt_plus_reference.encode()).hexdigest()
        sums = {s["name"]["name"]: s["sum"] for s in entry["stats"]}
        assert row["token_usage"]["input_tokens"] == sums["num_prompt_tokens"]
        assert row["token_usage"]["output_tokens"] == sums["num_output_tokens"]
        assert row["helm_split"] == state["instance"]["split"]
        score = row["evaluation"]["score"]
        if row["evaluation_result_id"] is None:  # no HELM score: nothing is judged
            assert score is None and row["evaluation"]["is_correct"] is None
            continue
        metric = row["evaluation_result_id"].split(":")[0]
        assert row["metric_name"] == metric
        indicator = metric.split("@")[0].startswith(
            ("exact_match", "quasi_", "prefix_exact_match", "exact_set_match")
        )
        # correct only at the indicator's maximum (a 0.5 tie is not); unknown for graded
        assert row["evaluation"]["is_correct"] == (score == 1.0 if indicator else None)


def test_instance_rows_join_aggregate_results(helm_run_dir: Path, converted: ConvertedRun) -> None:
    result_ids = set(converted.evaluations.column("evaluation_result_id").to_pylist())
    row_ids = set(converted.instances.column("evaluation_result_id").to_pylist()) - {None}
    if "nan_stats" in helm_run_dir.parts:  # NaN aggregates of exact_match@5 are dropped
        assert {r.split(":")[0] for r in row_ids - result_ids} == {"exact_match@5"}
    else:
        assert row_ids <= result_ids


# --- what the variants pin down -------------------------------------------------------------


def test_train_trials_keep_their_own_scores(helm_variant_root: Path) -> None:
    rows = convert(variant_dir(helm_variant_root, "trials_with_scores")).instances.to_pylist()
    quasi = {
        (r["sample_id"], r["helm_train_trial"]): r["evaluation"]["score"]
        for r in rows
        if r["evaluation_result_id"] == "quasi_exact_match:test"
    }
    assert len(quasi) == 30
    assert all(score == trial / 2 for (_, trial), score in quasi.items())
    f1_ids = {r["sample_id"] for r in rows if r["evaluation_result_id"] == "f1_score:test"}
    assert not any(number(i) % 4 == 0 for i in f1_ids)  # count == 0 stats give no row
    outputs = {len(r["output"]["raw"]) for r in rows}
    assert outputs == {3}  # num_outputs = 3 completions per request


def test_perturbed_copies_keep_their_own_scores(helm_variant_root: Path) -> None:
    rows = convert(variant_dir(helm_variant_root, "perturbed_scores")).instances.to_pylist()
    by_perturbation = {(r["helm_perturbation"], r["evaluation"]["score"]) for r in rows}
    assert by_perturbation == {(None, 0.0), ("lowercase", 1.0)}
    lowered = [r for r in rows if r["helm_perturbation"] == "lowercase"]
    assert len(lowered) == len(rows) // 2 == 50 * 8
    entry = next(
        e
        for e in read(variant_dir(helm_variant_root, "perturbed_scores"), "per_instance_stats.json")
        if e.get("perturbation")
    )
    description = entry["perturbation"]
    label = description["name"] + json.dumps(
        {k: v for k, v in description.items() if k not in ("name", "computed_on")},
        sort_keys=True,
        separators=(",", ":"),
    )
    suffix = f":{label}:{description['computed_on']}"
    assert all(r["evaluation_result_id"].endswith(suffix) for r in lowered)


@pytest.mark.parametrize("variant", ["separate_predicts_1", "calibration_first"])
def test_separate_mc_rows_use_the_predicted_original_request(
    helm_variant_root: Path, variant: str
) -> None:
    run_dir = variant_dir(helm_variant_root, variant)
    rows = convert(run_dir).instances.to_pylist()
    states = read(run_dir, "scenario_state.json")["request_states"]
    for row in rows:
        prompts = {
            s["reference_index"]: s["request"]["prompt"]
            for s in states
            if s["instance"]["id"] == row["sample_id"] and s["request_mode"] == "original"
        }
        assert row["input"]["raw"] == prompts[number(row["sample_id"]) % 2]
    assert len(rows) == 50


def test_legacy_string_inputs_give_the_same_rows(helm_variant_root: Path) -> None:
    legacy = convert(variant_dir(helm_variant_root, "legacy_string_inputs")).instances
    modern = convert(FIXTURE_ROOT / "runs" / VARIANTS["legacy_string_inputs"][0]).instances
    assert legacy.num_rows == 160
    assert legacy.equals(modern)


def test_nan_stats_are_dropped_not_fatal(helm_variant_root: Path) -> None:
    run_dir = variant_dir(helm_variant_root, "nan_stats")
    assert "NaN" in (run_dir / "stats.json").read_text()
    run = convert(run_dir)
    evaluations = run.evaluations.column("evaluation_result_id").to_pylist()
    assert "exact_match@5:test" not in evaluations and "exact_match:test" in evaluations
    assert run.n_rows == 10 * 8 - 1


@pytest.mark.eee_schemas
def test_instance_rows_validate_against_eee_schema(converted: ConvertedRun) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(eee_schema("instance_level_eval.schema.json"))
    rows = [r for r in converted.instances.to_pylist() if r["evaluation"]["score"] is not None]
    for row in rows[:: max(1, len(rows) // 25)]:
        validator.validate(instance_record(row))
