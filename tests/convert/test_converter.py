"""Tests of ``convert_run`` (engine/convert/converter.py) against the HELM files themselves:
every fixture run and variant converts, deterministically; bad input fails only with a
``RunConversionError`` naming the file; synthetic runs keep every score under its key.
Expected values come from ``helm_runs`` (read from HELM's JSON, never through the code).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.convert.schemas import (
    INSTANCES_SCHEMA,
)
from helmproc.engine.errors import RunConversionError
from helmproc.engine.helm.file_names import REQUIRED_RUN_FILES
from tests.convert.helm_runs import (
    FIXTURE_ROOT,
    JOB_TIMESTAMP,
    NO_CORE_METRIC_RUNS,
    REAL_RUN_DIRS,
    VARIANTS,
    convert,
    copy_run,
    core_stat,
    edit_json,
    expected_rows,
    instance_record,
    parquet_bytes,
    pert_key,
    read,
    ref_for,
    rel,
    row_key,
)
from tests.fakes.eee_schemas import eee_schema

# --- per-run checks -------------------------------------------------------------------------


def test_fixture_covers_the_cases() -> None:
    methods = {read(d, "run_spec.json")["adapter_spec"]["method"] for d in REAL_RUN_DIRS}
    assert {
        "generation",
        "multiple_choice_joint",
        "multiple_choice_separate_original",
        "multiple_choice_separate_calibrated",
    } <= methods
    assert {d.parent.name for d in REAL_RUN_DIRS} == {"v0.1.0", "v1.0.0", "v1.1.0"}
    assert len(REAL_RUN_DIRS) == 15
    assert [rel(d) for d in NO_CORE_METRIC_RUNS] == [
        "v0.1.0/simple1:model=simple_model1",
        "v1.0.0/simple1:model=simple_model1",
    ]


@pytest.mark.parametrize("run_dir", NO_CORE_METRIC_RUNS, ids=rel)
def test_runs_without_kept_metric_get_unscored_rows_and_no_aggregates(run_dir: Path) -> None:
    # simple1 (generation, 3 outputs x 3 trials) only has perplexity-type metrics: one row
    # per (instance, perturbation, trial) for its texts, with no score (HELM computed none).
    run = convert(run_dir)
    assert run.evaluations.num_rows == 0
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    assert len(rows) == len(read(run_dir, "per_instance_stats.json"))
    for row in rows:
        assert row["evaluation_result_id"] is None and row["metric_name"] is None
        assert row["evaluation"]["score"] is None and row["evaluation"]["is_correct"] is None
        reasons = [kv["value"] for kv in row["metadata"] if kv["key"] == "score_missing"]
        assert reasons and "no per-instance stat" in reasons[0]


def test_n_instances_counts_instance_perturbation_pairs(
    helm_run_dir: Path, converted: ConvertedRun
) -> None:
    pairs = {(e["instance_id"], pert_key(e)) for e in read(helm_run_dir, "per_instance_stats.json")}
    assert converted.n_instances == len(pairs)


def test_conversion_is_deterministic(helm_run_dir: Path, converted: ConvertedRun) -> None:
    again = convert(helm_run_dir)
    assert again.instances.equals(converted.instances)
    assert again.evaluations.equals(converted.evaluations)
    assert parquet_bytes(again.instances) == parquet_bytes(converted.instances)


# --- bad input ------------------------------------------------------------------------------

MCQA_RUN = "v1.0.0/simple_mcqa:model=simple_model1"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def first_request_state_gets(**fields: Any) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        def apply(data: dict[str, Any]) -> dict[str, Any]:
            data["request_states"][0]["instance"].update(fields)
            return data

        edit_json(path, apply)

    return edit


def add_unknown_instance(path: Path) -> None:
    edit_json(path, lambda e: e + [{**e[0], "instance_id": "id999999"}])


def duplicate_first_entry(path: Path) -> None:
    edit_json(path, lambda e: e + [e[0]])


BAD_INPUTS: list[Any] = [
    # (file to break, how, expected reason prefix)
    pytest.param("stats.json", Path.unlink, "missing", id="missing stats.json"),
    pytest.param("scenario_state.json", Path.unlink, "missing", id="missing scenario_state"),
    pytest.param("run_spec.json", Path.unlink, "missing", id="missing run_spec.json"),
    pytest.param(
        "per_instance_stats.json", truncate, "malformed JSON", id="truncated per_instance_stats"
    ),
    pytest.param(
        "per_instance_stats.json",
        lambda p: p.write_text('[{"instance_id": "id1", "stats": [}]'),
        "malformed JSON",
        id="syntax error in per_instance_stats",
    ),
    pytest.param("stats.json", lambda p: p.write_text(""), "malformed JSON", id="empty stats"),
    pytest.param(
        "scenario.json",
        lambda p: p.write_bytes(b'{"name": "\xff"}'),
        "malformed JSON",
        id="bad utf-8",
    ),
    pytest.param("stats.json", lambda p: p.write_text("{}"), "unexpected shape", id="stats object"),
    pytest.param(
        "per_instance_stats.json",
        lambda p: edit_json(p, lambda e: [{"stats": e[0]["stats"]}]),
        "unexpected shape: Object missing required field `instance_id` - at `$[0]`",
        id="entry without instance_id",
    ),
    pytest.param(
        "scenario_state.json",
        lambda p: edit_json(p, lambda d: {"request_states": {"a": 1}}),
        "unexpected shape: Expected `array`, got `object` - at `$.request_states`",
        id="request_states not a list",
    ),
    pytest.param(
        "scenario_state.json",
        first_request_state_gets(references="none"),
        "unexpected shape: Expected `array`, got `str` - at `$.request_states[0].instance.ref",
        id="references not a list",
    ),
    pytest.param(
        "run_spec.json",
        lambda p: edit_json(
            p, lambda d: {**d, "name": "simple_mcqa", "adapter_spec": {"method": "generation"}}
        ),
        "no model",
        id="no model anywhere",
    ),
    pytest.param(
        "per_instance_stats.json", duplicate_first_entry, "two entries for", id="duplicate entry"
    ),
]


@pytest.mark.parametrize(("file", "damage", "reason"), BAD_INPUTS)
def test_bad_input_raises_run_conversion_error_naming_the_file(
    tmp_path: Path, file: str, damage: Callable[[Path], None], reason: str
) -> None:
    run_dir = copy_run(MCQA_RUN, tmp_path)
    damage(run_dir / file)
    with pytest.raises(RunConversionError) as info:
        convert_run(run_dir, ref_for(run_dir), JOB_TIMESTAMP)
    assert info.value.file == file
    assert info.value.reason.startswith(reason), info.value.reason


def test_stats_for_an_unknown_instance_name_scenario_state(tmp_path: Path) -> None:
    run_dir = copy_run(MCQA_RUN, tmp_path)
    add_unknown_instance(run_dir / "per_instance_stats.json")
    with pytest.raises(RunConversionError) as info:
        convert(run_dir)
    assert info.value.file == "scenario_state.json"
    assert "'id999999'" in info.value.reason


def test_lone_surrogate_escapes_become_replacement_characters(tmp_path: Path) -> None:
    run_dir = copy_run(MCQA_RUN, tmp_path)
    path = run_dir / "scenario_state.json"
    text_before = path.read_text()
    path.write_text(text_before.replace('"text": "Answer:"', '"text": "Answer:\\ud83d"', 1))
    rows = convert(run_dir).instances.to_pylist()
    assert "Answer:\ufffd" in {r["output"]["raw"][0] for r in rows}


@pytest.mark.eee_schemas
def test_failed_and_missing_results_still_give_valid_rows(tmp_path: Path) -> None:
    run_dir = copy_run(MCQA_RUN, tmp_path)

    def break_results(data: dict[str, Any]) -> dict[str, Any]:
        states = data["request_states"]
        states[0]["result"] = {"success": False, "error": "timeout", "completions": []}
        del states[1]["result"]
        return data

    edit_json(run_dir / "scenario_state.json", break_results)
    states = read(run_dir, "scenario_state.json")["request_states"]
    rows = {r["sample_id"]: r for r in convert(run_dir).instances.to_pylist()}
    failed, unexecuted = rows[states[0]["instance"]["id"]], rows[states[1]["instance"]["id"]]
    assert failed["error"] == "timeout" and failed["output"]["raw"] == []
    assert unexecuted["error"] is None and unexecuted["answer_attribution"] == []
    import jsonschema

    validator = jsonschema.Draft7Validator(eee_schema("instance_level_eval.schema.json"))
    for row in (failed, unexecuted):
        validator.validate(instance_record(row))


def test_a_dry_run_gives_rows_without_scores(tmp_path: Path) -> None:
    # helm-run --dry-run: no request executed, so HELM wrote no result and no score: every
    # entry keeps one row for its texts, with null score and is_correct and the reason.
    run_dir = copy_run(MCQA_RUN, tmp_path)

    def no_results(data: dict[str, Any]) -> dict[str, Any]:
        for state in data["request_states"]:
            del state["result"]
        return data

    def no_scores(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:  # what HELM computes without results: bookkeeping only
            entry["stats"] = [s for s in entry["stats"] if s["name"]["name"].startswith("num_")]
        return entries

    edit_json(run_dir / "scenario_state.json", no_results)
    edit_json(run_dir / "per_instance_stats.json", no_scores)
    rows = convert(run_dir).instances.to_pylist()
    assert len(rows) == len(read(run_dir, "per_instance_stats.json"))
    for row in rows:
        assert row["evaluation"]["score"] is None and row["evaluation"]["is_correct"] is None
        assert row["output"]["raw"] == [] and row["evaluation_result_id"] is None
        reasons = {kv["key"]: kv["value"] for kv in row["metadata"]}
        assert reasons["score_missing"].startswith("request not executed")


def test_empty_per_instance_stats_give_an_empty_instances_table(tmp_path: Path) -> None:
    run_dir = copy_run(MCQA_RUN, tmp_path)
    (run_dir / "per_instance_stats.json").write_text("[]")
    run = convert(run_dir)
    assert run.instances.num_rows == run.n_rows == run.n_instances == 0
    assert run.instances.schema.equals(INSTANCES_SCHEMA)
    assert run.evaluations.num_rows > 0


# --- property: synthetic runs with any mix of instances, perturbations, trials, scores ------

METRICS = ("exact_match", "f1_score", "exact_match@5", "num_output_tokens")
# per metric: a score, or None for a count == 0 stat
entry_stats = st.dictionaries(
    st.sampled_from(METRICS), st.one_of(st.none(), st.floats(0, 1, allow_nan=False))
)
# Perturbations as HELM writes them, with same-named variants that differ in other fields
# (a style perturbation with several suffixes, one with several mode/prob values).
PERTURBATIONS: list[dict[str, Any] | None] = [
    None,
    {"name": "typos", "robustness": True, "fairness": False, "prob": 0.1},
    {"name": "typos", "robustness": True, "fairness": False, "prob": 0.05},
    {"name": "style", "robustness": True, "fairness": False, "suffix": "!", "mode": "add"},
    {"name": "style", "robustness": True, "fairness": False, "suffix": "?", "mode": "add"},
    {"name": "lowercase", "robustness": True, "fairness": False},
]
entry_keys = st.tuples(
    st.sampled_from(["id1", "id2", "id10"]),
    st.sampled_from(range(len(PERTURBATIONS))),
    st.integers(0, 2),
)


def write_synthetic_run(run_dir: Path, entries: dict[Any, dict[str, float | None]]) -> None:
    run_dir.mkdir(parents=True)
    spec = {
        "name": run_dir.name,
        "scenario_spec": {"class_name": "x.Synthetic", "args": {"k": 1}},
        "adapter_spec": {"method": "generation", "model": "dev/model"},
    }
    states, per_instance = [], []
    for (instance_id, perturbation, trial), metrics in entries.items():
        description = PERTURBATIONS[perturbation]
        pert = {**description, "computed_on": "perturbed"} if description else None
        instance: dict[str, Any] = {
            "id": instance_id,
            "input": {"text": f"q{instance_id}"},
            "references": [{"output": {"text": "a"}, "tags": ["correct"]}],
            "split": "test",
        }
        if pert:
            instance["perturbation"] = pert
        states.append(
            {
                "instance": instance,
                "train_trial_index": trial,
                "request": {"prompt": f"{instance_id}/{perturbation}/{trial}"},
                "result": {"completions": [{"text": f" {trial}"}], "request_datetime": 5 + trial},
            }
        )
        in_name: dict[str, Any] = {"perturbation": pert} if pert else {}
        entry: dict[str, Any] = {"instance_id": instance_id, "train_trial_index": trial}
        if pert:
            entry["perturbation"] = pert
        entry["stats"] = [core_stat(m, v, **in_name) for m, v in metrics.items()]
        per_instance.append(entry)
    files = {
        "run_spec.json": spec,
        "scenario.json": {"name": "synthetic"},
        "scenario_state.json": {"request_states": states[::-1]},
        "stats.json": [core_stat("exact_match", 0.5)],
        "per_instance_stats.json": per_instance,
    }
    for name, content in files.items():
        (run_dir / name).write_text(json.dumps(content))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(entry_keys, entry_stats, max_size=12))
def test_synthetic_runs_keep_every_score_under_its_key(
    entries: dict[Any, dict[str, float | None]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "synthetic:model=dev_model"
        write_synthetic_run(run_dir, entries)
        run = convert(run_dir)
        rows = run.instances.to_pylist()
        scores = {row_key(r): r["evaluation"]["score"] for r in rows}
        assert len(scores) == len(rows)
        assert scores == expected_rows(run_dir)
        assert run.n_instances == len({(k[0], k[1]) for k in entries})
        for row in rows:
            index = next(
                i
                for i, p in enumerate(PERTURBATIONS)
                if (p is None and row["helm_perturbation_description"] is None)
                or (
                    p is not None
                    and row["helm_perturbation_description"] == pert_key({"perturbation": p})
                )
            )
            instance_id, _, trial, _ = row_key(row)
            assert row["input"]["raw"] == f"{instance_id}/{index}/{trial}"
        assert pq.read_table(io.BytesIO(parquet_bytes(run.instances))).equals(run.instances)


# --- property: damaged input fails only with RunConversionError ----------------------------

RUN_FILES = REQUIRED_RUN_FILES
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            paths += json_paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node[:3]):  # the first few items are representative
            paths += json_paths(child, (*prefix, index))
    return paths


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(RUN_FILES), st.integers(min_value=0), json_values)
def test_damaged_input_fails_only_with_run_conversion_error(
    file: str, where: int, value: Any
) -> None:
    source = FIXTURE_ROOT / "runs" / VARIANTS["perturbed_scores"][0]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(shutil.copytree(source, Path(tmp) / source.name))
        data = read(run_dir, file)
        paths = json_paths(data)
        path = paths[where % len(paths)]
        if not path:
            data = value
        else:
            parent = data
            for step in path[:-1]:
                parent = parent[step]
            parent[path[-1]] = value
        (run_dir / file).write_text(json.dumps(data))
        try:
            run = convert(run_dir)
        except RunConversionError as exc:
            assert exc.file in RUN_FILES
        else:
            run.instances.validate(full=True)
            run.evaluations.validate(full=True)
