"""The release's own schema decides which metrics a run keeps (whole-file and streamed).

Fixtures are real runs and the real release ``schema.json`` of ``tests/data``, edited: the
schema gets a run group for ``simple_mcqa`` whose headline is a metric nobody lists in
advance (``fixture_novel_loss``, declared lower-is-better in ``metrics[]``), and the run's
``logprob`` stat (a real, negative, unbounded HELM value) is renamed to it. Expected values
are read from the edited HELM JSON with ``json`` (``test_converter``'s independent rules).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.convert.metric_selection import select_metrics
from helmproc.engine.helm.schema_file import parse_schema
from tests.convert.helm_runs import (
    FIXTURE_ROOT,
    JOB_TIMESTAMP,
    copy_run,
    edit_json,
    expected_evaluations,
    expected_rows,
    read,
    ref_for,
    row_key,
)

MCQA = "v1.1.0/simple_mcqa:model=simple_model1"
NOVEL = "fixture_novel_loss"
RELEASE_SCHEMA = FIXTURE_ROOT / "releases" / "v1.1.0" / "schema.json"
SHOWN_GROUP = "calibration_detailed"  # max_prob, ece_*, ... (the run has max_prob)


@pytest.fixture(params=[False, True], ids=["whole", "streamed"])
def stream(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def convert_with(run_dir: Path, schema: Path | None, stream: bool) -> ConvertedRun:
    parsed = None if schema is None else parse_schema(schema.read_bytes(), "releases/x/schema.json")
    return convert_run(
        run_dir,
        ref_for(run_dir),
        JOB_TIMESTAMP,
        schema=parsed,
        stream_threshold_bytes=0 if stream else None,
        batch_bytes=4096 if stream else None,
    )


def rename_stat(run_dir: Path, old: str, new: str) -> None:
    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("name") == old and ("split" in node or "sub_split" in node):
                node = {**node, "name": new}
            return {k: rename(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    edit_json(run_dir / "stats.json", rename)
    edit_json(run_dir / "per_instance_stats.json", rename)


def schema_with_group(tmp_path: Path, group: dict[str, Any], metric: dict[str, Any]) -> Path:
    data = json.loads(RELEASE_SCHEMA.read_text())
    data["run_groups"].append(group)
    data["metrics"].append(metric)
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def novel_run(tmp_path: Path) -> tuple[Path, Path]:
    run_dir = copy_run(MCQA, tmp_path / "runs")
    rename_stat(run_dir, "logprob", NOVEL)
    schema = schema_with_group(
        tmp_path,
        {
            "name": "simple_mcqa",
            "environment": {"main_name": NOVEL, "main_split": "test"},
            "metric_groups": ["accuracy", SHOWN_GROUP, "efficiency", "general_information"],
        },
        {"name": NOVEL, "display_name": "Novel loss", "lower_is_better": True},
    )
    return run_dir, schema


def test_a_headline_only_the_schema_names_becomes_rows_and_results(
    novel_run: tuple[Path, Path], stream: bool
) -> None:
    run_dir, schema = novel_run
    run = convert_with(run_dir, schema, stream)
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir, schema)
    novel_rows = [r for r in rows if r["metric_name"] == NOVEL]
    helm_values = [
        s["mean"]
        for e in read(run_dir, "per_instance_stats.json")
        for s in e["stats"]
        if s["name"]["name"] == NOVEL and s["count"]
    ]
    assert sorted(r["evaluation"]["score"] for r in novel_rows) == sorted(helm_values)
    assert len(novel_rows) == len(helm_values) > 0  # each stat exactly once
    assert all(r["evaluation"]["is_correct"] is None for r in novel_rows)  # continuous
    evaluations = {r["evaluation_result_id"]: r for r in run.evaluations.to_pylist()}
    assert {k: r["score"] for k, r in evaluations.items()} == expected_evaluations(run_dir, schema)
    headline = evaluations[f"{NOVEL}:test"]
    assert headline["lower_is_better"] is True  # from the schema's metrics[]
    assert (headline["min_score"], headline["max_score"]) == (None, None)  # unbounded
    assert headline["metric_kind"] is None and headline["metric_unit"] is None
    assert run.metric_source == "schema:releases/x/schema.json"


def test_metric_groups_add_results_not_rows_and_bookkeeping_stays_out(
    novel_run: tuple[Path, Path], stream: bool
) -> None:
    run_dir, schema = novel_run
    run = convert_with(run_dir, schema, stream)
    metrics = set(run.evaluations.column("metric_name").to_pylist())
    row_metrics = set(run.instances.column("metric_name").to_pylist())
    assert "max_prob" in metrics and "max_prob" not in row_metrics  # shown by calibration
    stats = {s["name"]["name"] for s in read(run_dir, "stats.json")}
    bookkeeping = {"inference_runtime", "num_instances", "num_prompt_tokens"} & stats
    assert bookkeeping and not bookkeeping & metrics  # efficiency, general_information


def test_without_a_schema_the_built_in_table_decides(tmp_path: Path, stream: bool) -> None:
    # GSM8K's headline final_number_exact_match is not a core metric: the built-in table
    # of HELM's published schemas keeps it for a run in group gsm with no schema.json.
    run_dir = copy_run(MCQA, tmp_path)
    rename_stat(run_dir, "logprob", "final_number_exact_match")
    edit_json(run_dir / "run_spec.json", lambda spec: {**spec, "groups": ["gsm"]})
    run = convert_with(run_dir, None, stream)
    assert run.metric_source == "builtin"
    rows = run.instances.to_pylist()
    kept = [r for r in rows if r["metric_name"] == "final_number_exact_match"]
    assert len(kept) == len(read(run_dir, "per_instance_stats.json"))
    assert all(r["evaluation"]["is_correct"] is False for r in kept)  # below the maximum
    assert (
        "final_number_exact_match:test"
        in run.evaluations.column("evaluation_result_id").to_pylist()
    )


def test_groups_nobody_knows_keep_the_core_list(tmp_path: Path) -> None:
    run_dir = copy_run(MCQA, tmp_path)
    edit_json(run_dir / "run_spec.json", lambda spec: {**spec, "groups": ["no_such_group"]})
    run = convert_with(run_dir, RELEASE_SCHEMA, False)
    assert run.metric_source == "core"
    assert "logprob" not in set(run.evaluations.column("metric_name").to_pylist())


def test_selection_of_the_release_schema_for_a_declared_group() -> None:
    schema = parse_schema(RELEASE_SCHEMA.read_bytes(), "releases/v1.1.0/schema.json")
    data = json.loads(RELEASE_SCHEMA.read_text())
    group = next(g for g in data["run_groups"] if g["name"] == "msmarco_regular")
    selection = select_metrics(["msmarco_regular"], schema)
    assert selection.headlines == {group["environment"]["main_name"]}  # RR@10: not core
    assert selection.is_row_metric("RR@10") and not selection.is_row_metric("RR@20")
    directions = {m["name"]: m.get("lower_is_better") for m in data["metrics"]}
    assert selection.lower_is_better("RR@10") is directions["RR@10"]
    assert selection.source == "schema"
