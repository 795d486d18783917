"""Tests of the evaluation rows (engine/convert/evaluation_rows.py): equal to stats.json,
describing the run, and rebuilding a valid EEE aggregate record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helmproc.engine.convert.converter import ConvertedRun
from tests.convert.helm_runs import (
    JOB_TIMESTAMP,
    expected_evaluations,
    read,
)
from tests.fakes.eee_schemas import eee_schema


def test_evaluations_equal_stats_json(helm_run_dir: Path, converted: ConvertedRun) -> None:
    got = {r["evaluation_result_id"]: r["score"] for r in converted.evaluations.to_pylist()}
    assert got == expected_evaluations(helm_run_dir)
    ids = converted.evaluations.column("evaluation_result_id").to_pylist()
    assert ids == sorted(ids)


def test_evaluations_describe_the_run(helm_run_dir: Path, converted: ConvertedRun) -> None:
    run_spec = read(helm_run_dir, "run_spec.json")
    scenario = read(helm_run_dir, "scenario.json")
    states = read(helm_run_dir, "scenario_state.json")["request_states"]
    first_request = min(s["result"]["request_datetime"] for s in states)
    evaluation_id = (
        f"{scenario['name']}/{run_spec['adapter_spec']['model'].replace('/', '_')}/{first_request}"
    )
    for row in converted.evaluations.to_pylist():
        assert row["retrieved_timestamp"] == JOB_TIMESTAMP
        assert row["evaluation_timestamp"] == str(first_request)
        assert row["evaluation_id"] == evaluation_id
        assert row["model_id"] == run_spec["adapter_spec"]["model"]
        assert row["model_developer"] == run_spec["adapter_spec"]["model"].split("/")[0]
        assert row["evaluation_name"] == scenario["name"]
        assert row["source_data"]["samples_number"] == len({s["instance"]["id"] for s in states})
        gen = row["generation_config"]["generation_args"]
        assert gen["temperature"] == states[0]["request"]["temperature"]
    assert set(converted.instances.column("evaluation_id").to_pylist()) <= {evaluation_id}
    assert converted.model == run_spec["adapter_spec"]["model"]
    assert converted.method == run_spec["adapter_spec"]["method"]
    assert converted.scenario == scenario["name"]


def aggregate_from_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The EEE EvaluationLog an exporter can rebuild from one run's evaluation rows."""

    def strings(pairs: list[dict[str, Any]]) -> dict[str, Any]:
        return {kv["key"]: kv["value"] for kv in pairs}

    def without_none(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if v is not None}

    first = rows[0]
    results = []
    for r in rows:
        source = without_none(dict(r["source_data"]))
        source["additional_details"] = dict(source["additional_details"])
        generation = r["generation_config"]
        results.append(
            {
                "evaluation_result_id": r["evaluation_result_id"],
                "evaluation_name": r["evaluation_name"],
                "source_data": source,
                "evaluation_timestamp": r["evaluation_timestamp"] or r["retrieved_timestamp"],
                "metric_config": without_none(
                    {
                        "evaluation_description": r["metric_name"],
                        "metric_id": r["metric_id"],
                        "metric_name": r["metric_name"],
                        "metric_kind": r["metric_kind"],
                        "metric_unit": r["metric_unit"],
                        "metric_parameters": strings(r["metric_parameters"]) or None,
                        "lower_is_better": bool(r["lower_is_better"]),
                        "score_type": r["score_type"],
                        "min_score": r["min_score"],
                        "max_score": r["max_score"],
                        "additional_details": strings(r["metric_additional_details"]),
                    }
                ),
                "score_details": {
                    "score": r["score"],
                    "details": {
                        "num_train_trials": str(r["count"]),
                        "stddev_across_train_trials": str(r["stddev"]),
                        "split": r["split"] or "",
                        "perturbation": r["perturbation"] or "",
                    },
                    "uncertainty": without_none({"num_samples": r["num_samples"]}),
                },
                "generation_config": {
                    "generation_args": without_none(generation["generation_args"]),
                    "additional_details": strings(generation["additional_details"]),
                },
            }
        )
    return {
        "schema_version": first["schema_version"],
        "evaluation_id": first["evaluation_id"],
        "evaluation_timestamp": first["evaluation_timestamp"],
        "retrieved_timestamp": first["retrieved_timestamp"],
        "source_metadata": {
            "source_name": "HELM",
            "source_type": "evaluation_run",
            "source_organization_name": "unknown",
            "evaluator_relationship": "third_party",
        },
        "eval_library": {"name": "helm", "version": "unknown"},
        "model_info": {
            "name": first["model_name"],
            "id": first["model_id"],
            "developer": first["model_developer"],
            "additional_details": {"deployment_type": "unknown", "model_availability": "unknown"},
        },
        "evaluation_results": results,
    }


@pytest.mark.eee_schemas
def test_evaluation_rows_rebuild_a_valid_eee_aggregate(converted: ConvertedRun) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(eee_schema("eval.schema.json"))
    rows = converted.evaluations.to_pylist()
    if not rows:  # perplexity-only runs have no aggregate to rebuild
        assert converted.instances.column("evaluation_result_id").null_count == converted.n_rows
        return
    validator.validate(aggregate_from_rows(rows))
