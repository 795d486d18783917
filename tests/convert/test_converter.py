"""Tests of ``convert_run`` against the HELM files themselves.

Expected values are read straight from the run's JSON with the stdlib ``json`` module and an
independent copy of the EEE rules (core metric prefixes, result ids), never through the code
under test. Every run dir in the fixtures is checked, plus "variants": copies of real runs
edited so that a wrong join would show (the real fixture scores are all 0 or 0.5 and every
separate-MC prediction is reference 0, so they cannot tell a right key from a wrong one).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helmproc.engine.convert import eee_fields as eee
from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.convert.schemas import (
    EVALUATIONS_SCHEMA,
    INSTANCES_SCHEMA,
    RUNS_SCHEMA,
    RunRow,
    runs_table,
)
from helmproc.engine.errors import RunConversionError
from helmproc.engine.facts import RunRef
from helmproc.engine.helm.file_names import REQUIRED_RUN_FILES
from helmproc.engine.helm.schema_file import parse_schema
from tests.fakes.eee_schemas import eee_schema

FIXTURE_ROOT = Path(__file__).resolve().parents[1] / "data" / "benchmark_output"
REAL_RUN_DIRS = sorted(p.parent for p in FIXTURE_ROOT.glob("runs/*/*/run_spec.json"))
JOB_TIMESTAMP = "1800000000"

# EEE's core metrics, written out again independently of eee_fields.
CORE_PREFIXES = (
    "exact_match", "quasi_exact_match", "prefix_exact_match", "quasi_prefix_exact_match",
    "classification_micro_f1", "classification_macro_f1", "f1_score", "rouge_l", "bleu_",
    "ifeval_strict_accuracy", "chain_of_thought_correctness", "math_equiv",
    "math_equiv_chain_of_thought",
    # helmproc's extension: HELM's set-match accuracy metrics
    "exact_set_match", "f1_set_match", "iou_set_match",
)  # fmt: skip

# Metric groups HELM's tables show that are bookkeeping (helmproc keeps them out).
BOOKKEEPING = ("general_information", "annotation_metrics")

RowKey = tuple[str, str | None, int, str | None]


def rel(run_dir: Path) -> str:
    return f"{run_dir.parent.name}/{run_dir.name}"


def ref_for(run_dir: Path) -> RunRef:
    return RunRef("testproj", run_dir.parent.name, run_dir.name, "v1.1.0", rel(run_dir))


def schema_path(run_dir: Path) -> Path:
    """The schema.json helm-summarize wrote for the run's suite: v0.1.0 was summarized as a
    suite (runs/v0.1.0/schema.json), v1.0.0 and v1.1.0 as release v1.1.0."""
    if run_dir.parent.name == "v0.1.0":
        return FIXTURE_ROOT / "runs" / "v0.1.0" / "schema.json"
    return FIXTURE_ROOT / "releases" / "v1.1.0" / "schema.json"


def convert(run_dir: Path, schema: Path | None = None) -> ConvertedRun:
    path = schema or schema_path(run_dir)
    parsed = parse_schema(path.read_bytes(), str(path))
    return convert_run(run_dir, ref_for(run_dir), JOB_TIMESTAMP, schema=parsed)


# --- the expectation, read from HELM's files ------------------------------------------------


def read(run_dir: Path, name: str) -> Any:
    return json.loads((run_dir / name).read_text())


def pert_name(obj: dict[str, Any]) -> str | None:
    return (obj.get("perturbation") or {}).get("name")


def pert_key(obj: dict[str, Any]) -> str | None:
    """The whole description but computed_on (and null fields), as sorted compact JSON."""
    perturbation = obj.get("perturbation")
    if perturbation is None:
        return None
    fields = {k: v for k, v in perturbation.items() if k != "computed_on" and v is not None}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def pert_label(key: str) -> str:
    fields = json.loads(key)
    name = fields.pop("name")
    if not fields:
        return name
    return name + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def result_id(metric_name: dict[str, Any], with_sub_split: bool = False) -> str:
    parts = [metric_name["name"], metric_name.get("split")]
    if with_sub_split and metric_name.get("sub_split") is not None:
        parts.append("sub_split=" + metric_name["sub_split"])
    key = pert_key(metric_name)
    if key is not None:
        parts.append(pert_label(key))
        parts.append((metric_name.get("perturbation") or {}).get("computed_on"))
    return ":".join(p for p in parts if p)


def usable(stat: dict[str, Any]) -> float | None:
    if stat["count"] == 0:
        return None
    value = stat["mean"] if "mean" in stat else stat["sum"] / stat["count"]
    return value if math.isfinite(value) else None


def is_core(stat: dict[str, Any]) -> bool:
    return str(stat["name"]["name"]).startswith(CORE_PREFIXES)


def kept_metrics(run_dir: Path, schema: Path | None = None) -> tuple[set[str], set[str]]:
    """(row metrics, result metrics) beyond the core list, from the schema.json the run is
    converted with: the headlines of the run's groups; plus, for results, the entries of
    their metric groups but bookkeeping ones (${main_name} = the headline)."""
    data = json.loads((schema or schema_path(run_dir)).read_text())
    groups = {g["name"]: g for g in data["run_groups"]}
    metric_groups = {g["name"]: g for g in data["metric_groups"]}
    rows: set[str] = set()
    results: set[str] = set()
    for name in read(run_dir, "run_spec.json").get("groups", []):
        if name not in groups:
            continue
        group = groups[name]
        headline = group.get("environment", {}).get("main_name")
        if headline in (None, "", "none"):
            headline = None
        else:
            rows.add(headline)
        for metric_group in group.get("metric_groups", []):
            if metric_group in BOOKKEEPING or "efficiency" in metric_group:
                continue
            for entry in metric_groups.get(metric_group, {}).get("metrics", []):
                metric = entry["name"]
                if metric == "${main_name}":
                    if headline is None:
                        continue
                    metric = headline
                results.add(metric)
    return rows, rows | results


def expected_rows(run_dir: Path, schema: Path | None = None) -> dict[RowKey, float | None]:
    """Every usable kept per-instance stat under its full key; an entry without any gets one
    row with no score under a null result id."""
    row_metrics = kept_metrics(run_dir, schema)[0]
    rows: dict[RowKey, float | None] = {}
    for entry in read(run_dir, "per_instance_stats.json"):
        entry_key = (entry["instance_id"], pert_key(entry), entry["train_trial_index"])

        def kept(stat: dict[str, Any]) -> bool:
            return is_core(stat) or stat["name"]["name"] in row_metrics

        if not any(kept(s) and usable(s) is not None for s in entry["stats"]):
            rows[(*entry_key, None)] = None
        for stat in entry["stats"]:
            score = usable(stat) if kept(stat) else None
            if score is not None:
                key = (*entry_key, result_id(stat["name"]))
                if key not in rows:  # the first stat of a result id wins
                    rows[key] = score
    return rows


def computed_on(stat: dict[str, Any]) -> Any:
    return (stat["name"].get("perturbation") or {}).get("computed_on")


def merge(stats: list[dict[str, Any]]) -> float | None:
    """HELM's Stat.merge then mean: sum of sums / sum of counts (a single stat: its mean)."""
    if len(stats) == 1:
        return usable(stats[0])
    count = sum(s["count"] for s in stats)
    if count == 0:
        return None
    total = sum(s["sum"] for s in stats)
    return total / count if math.isfinite(total / count) else None


def expected_evaluations(run_dir: Path, schema: Path | None = None) -> dict[str, float]:
    """One value per evaluation_result_id: the kept stats.json entries grouped by (metric,
    split, whole perturbation, computed_on) and merged over all their sub-splits the way
    helm-summarize does; plus one value per sub-split (its own stats merged)."""
    result_metrics = kept_metrics(run_dir, schema)[1]
    groups: dict[str, list[dict[str, Any]]] = {}
    sub_splits: dict[str, list[dict[str, Any]]] = {}
    for stat in read(run_dir, "stats.json"):
        if not (is_core(stat) or stat["name"]["name"] in result_metrics):
            continue
        groups.setdefault(result_id(stat["name"]), []).append(stat)
        if stat["name"].get("sub_split") is not None:
            sub_splits.setdefault(result_id(stat["name"], True), []).append(stat)
    evaluations: dict[str, float] = {}
    for rid, stats in [*groups.items(), *sub_splits.items()]:
        value = merge(stats)
        if value is not None:
            evaluations[rid] = value
    return evaluations


def has_core_metric(run_dir: Path) -> bool:
    return bool(expected_evaluations(run_dir))


def expected_request_states(run_dir: Path) -> dict[tuple[str, str | None, int], dict[str, Any]]:
    """The request state each per-instance entry should be joined to."""
    single: dict[tuple[str, str | None, int], dict[str, Any]] = {}
    separate: dict[tuple[str, str | None, int], dict[int, dict[str, Any]]] = {}
    for state in read(run_dir, "scenario_state.json")["request_states"]:
        key = (state["instance"]["id"], pert_key(state["instance"]), state["train_trial_index"])
        if "reference_index" not in state:
            single.setdefault(key, state)
        elif state.get("request_mode", "original") == "original":
            separate.setdefault(key, {}).setdefault(state["reference_index"], state)
    chosen = dict(single)
    for entry in read(run_dir, "per_instance_stats.json"):
        key = (entry["instance_id"], pert_key(entry), entry["train_trial_index"])
        if key in separate:
            predicted = [
                s["mean"] for s in entry["stats"] if s["name"]["name"] == "predicted_index"
            ]
            chosen[key] = separate[key][int(predicted[0]) if predicted else 0]
    return chosen


def text(value: Any) -> str:
    return value if isinstance(value, str) else value["text"]


def row_key(row: dict[str, Any]) -> RowKey:
    return (
        row["sample_id"],
        row["helm_perturbation_description"],
        row["helm_train_trial"],
        row["evaluation_result_id"],
    )


# --- variants: real runs edited so that wrong joins change values ----------------------------


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text())), indent=2))


def core_stat(name: str, value: float | None, split: str = "test", **extra: Any) -> dict[str, Any]:
    stat: dict[str, Any] = {"name": {"name": name, "split": split, **extra}}
    if value is None:
        return {**stat, "count": 0, "sum": 0, "sum_squared": 0}
    return {**stat, "count": 1, "sum": value, "sum_squared": value**2, "mean": value}


def number(instance_id: str) -> int:
    return int(instance_id.removeprefix("id"))


def variant_trials(run_dir: Path) -> None:
    """simple1 (3 outputs x 3 train trials, no core metric): scores that differ per trial, and
    one count == 0 stat."""

    def per_instance(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            n, trial = number(entry["instance_id"]), entry["train_trial_index"]
            entry["stats"].append(core_stat("exact_match", float((n + trial) % 3 == 0)))
            entry["stats"].append(core_stat("quasi_exact_match", trial / 2))
            entry["stats"].append(core_stat("f1_score", None if n % 4 == 0 else 0.25 * trial))
        return entries

    edit_json(run_dir / "per_instance_stats.json", per_instance)
    edit_json(
        run_dir / "stats.json",
        lambda stats: (
            stats + [core_stat(m, 0.3) for m in ("exact_match", "quasi_exact_match", "f1_score")]
        ),
    )


def variant_perturbed(run_dir: Path) -> None:
    """data_augmentation=lower: the perturbed copies score 1, the originals 0 (the peer's bug
    gives every copy the original's score)."""

    def per_instance(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if pert_name(entry) is not None:
                for stat in entry["stats"]:
                    if is_core(stat) and stat["count"]:
                        stat.update(sum=stat["count"], mean=1.0, min=1, max=1)
        return entries

    def stats(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # perturbed, original and worst share one result id; the first (perturbed) must win
        for stat in entries:
            perturbation = stat["name"].get("perturbation") or {}
            if is_core(stat) and perturbation.get("computed_on") == "perturbed":
                stat.update(sum=stat["count"], mean=1.0)
        return entries

    edit_json(run_dir / "per_instance_stats.json", per_instance)
    edit_json(run_dir / "stats.json", stats)


def variant_separate(run_dir: Path) -> None:
    """multiple_choice_separate_original: odd instances predict reference 1 and score 1."""

    def per_instance(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if number(entry["instance_id"]) % 2:
                for stat in entry["stats"]:
                    if stat["name"]["name"] in ("predicted_index", "exact_match"):
                        stat.update(sum=1, mean=1.0, min=1, max=1)
        return entries

    edit_json(run_dir / "per_instance_stats.json", per_instance)


def variant_calibrated(run_dir: Path) -> None:
    """multiple_choice_separate_calibrated with calibration requests listed first and odd
    instances predicting reference 1."""
    variant_separate(run_dir)
    edit_json(
        run_dir / "scenario_state.json",
        lambda d: {"request_states": sorted(d["request_states"], key=lambda s: s["request_mode"])},
    )


def variant_legacy_strings(run_dir: Path) -> None:
    """pre-v0.2 HELM: instance.input and reference.output are plain strings."""

    def state(data: dict[str, Any]) -> dict[str, Any]:
        for request_state in data["request_states"]:
            instance = request_state["instance"]
            instance["input"] = instance["input"]["text"]
            for reference in instance["references"]:
                reference["output"] = reference["output"]["text"]
        return data

    edit_json(run_dir / "scenario_state.json", state)


def variant_nan(run_dir: Path) -> None:
    """old HELM (< v0.2.4): bare NaN in both stats files, in bookkeeping and core stats."""

    def stats(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for stat in entries:
            if stat["name"]["name"] in ("inference_runtime", "exact_match@5"):
                stat.update(mean=math.nan, stddev=math.nan)
        return entries

    def per_instance(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stats(entries[0]["stats"])
        return entries

    edit_json(run_dir / "stats.json", stats)
    edit_json(run_dir / "per_instance_stats.json", per_instance)


VARIANTS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "trials_with_scores": ("v1.0.0/simple1:model=simple_model1", variant_trials),
    "perturbed_scores": (
        "v1.1.0/simple_mcqa:model=simple_model1,data_augmentation=lower",
        variant_perturbed,
    ),
    "separate_predicts_1": (
        "v1.1.0/simple_mcqa_method:method=multiple_choice_separate_original,model=simple_model1",
        variant_separate,
    ),
    "calibration_first": (
        "v1.1.0/simple_mcqa_method:method=multiple_choice_separate_calibrated,model=simple_model1",
        variant_calibrated,
    ),
    "legacy_string_inputs": ("v1.0.0/simple_mcqa:model=simple_model1", variant_legacy_strings),
    "nan_stats": ("v0.1.0/simple_mcqa:model=simple_model1", variant_nan),
}


def copy_run(relative: str, into: Path) -> Path:
    target = into / relative
    shutil.copytree(FIXTURE_ROOT / "runs" / relative, target)
    return target


@pytest.fixture(scope="session")
def helm_variant_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("helm_variants")
    for name, (relative, edit) in VARIANTS.items():
        run_dir = copy_run(relative, root / name)
        edit(run_dir)
    return root


def variant_dir(root: Path, name: str) -> Path:
    return root / name / VARIANTS[name][0]


NO_CORE_METRIC_RUNS = [d for d in REAL_RUN_DIRS if not has_core_metric(d)]
CONVERTIBLE_CASES = [pytest.param(("real", rel(d)), id=rel(d)) for d in REAL_RUN_DIRS] + [
    pytest.param(("variant", name), id=f"variant:{name}") for name in VARIANTS
]


@pytest.fixture(params=CONVERTIBLE_CASES)
def helm_run_dir(request: pytest.FixtureRequest, helm_variant_root: Path) -> Path:
    kind, name = request.param
    return FIXTURE_ROOT / "runs" / name if kind == "real" else variant_dir(helm_variant_root, name)


@pytest.fixture
def converted(helm_run_dir: Path) -> ConvertedRun:
    return convert(helm_run_dir)


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


def test_instance_rows_join_aggregate_results(helm_run_dir: Path, converted: ConvertedRun) -> None:
    result_ids = set(converted.evaluations.column("evaluation_result_id").to_pylist())
    row_ids = set(converted.instances.column("evaluation_result_id").to_pylist()) - {None}
    if "nan_stats" in helm_run_dir.parts:  # NaN aggregates of exact_match@5 are dropped
        assert {r.split(":")[0] for r in row_ids - result_ids} == {"exact_match@5"}
    else:
        assert row_ids <= result_ids


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


def test_tables_have_the_contract_schemas(converted: ConvertedRun) -> None:
    assert converted.instances.schema.equals(INSTANCES_SCHEMA)
    assert converted.evaluations.schema.equals(EVALUATIONS_SCHEMA)
    for table in (converted.instances, converted.evaluations):
        table.validate(full=True)
        assert table.column("helm_project").to_pylist() == ["testproj"] * table.num_rows


def test_parquet_round_trip(converted: ConvertedRun) -> None:
    for table in (converted.instances, converted.evaluations):
        assert pq.read_table(io.BytesIO(parquet_bytes(table))).equals(table)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


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


# --- EEE JSON Schemas -----------------------------------------------------------------------


def instance_record(row: dict[str, Any]) -> dict[str, Any]:
    """The EEE sample export-eee writes for a scored row: the EEE fields only, metadata as
    an object, and is_correct false (with a note) where it is unknown, EEE requiring it."""
    allowed = set(eee_schema("instance_level_eval.schema.json")["properties"])
    record = {k: v for k, v in row.items() if k in allowed}
    if record["metadata"] is not None:
        record["metadata"] = {kv["key"]: kv["value"] for kv in record["metadata"]}
    if record["evaluation"]["is_correct"] is None:
        record["evaluation"] = {**record["evaluation"], "is_correct": False}
        record["metadata"] = {**(record["metadata"] or {}), "is_correct": "not applicable"}
    return record


@pytest.mark.eee_schemas
def test_instance_rows_validate_against_eee_schema(converted: ConvertedRun) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(eee_schema("instance_level_eval.schema.json"))
    rows = [r for r in converted.instances.to_pylist() if r["evaluation"]["score"] is not None]
    for row in rows[:: max(1, len(rows) // 25)]:
        validator.validate(instance_record(row))


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


# --- eee_fields rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "split", "perturbation", "computed_on", "sub_split", "expected"),
    [
        ("exact_match", "test", None, None, None, "exact_match:test"),
        (
            "exact_match@5",
            "valid",
            "robustness",
            "worst",
            None,
            "exact_match@5:valid:robustness:worst",
        ),
        ("f1_score", None, None, None, None, "f1_score"),
        ("rouge_l", "test", "typos", None, "easy", "rouge_l:test:sub_split=easy:typos"),
    ],
)
def test_evaluation_result_id(
    name: str,
    split: str | None,
    perturbation: str | None,
    computed_on: str | None,
    sub_split: str | None,
    expected: str,
) -> None:
    assert eee.evaluation_result_id(name, split, perturbation, computed_on, sub_split) == expected


@pytest.mark.parametrize(
    ("name", "metric_id", "parameters", "unregistered"),
    [
        ("exact_match", "exact-match", {}, False),
        ("f1_score", "f1", {}, False),
        ("rouge_l", "rouge-l", {}, False),
        ("bleu_4", "bleu-4", {}, False),
        ("exact_match@5", "helm.exact_match@5", {"k": 5.0}, True),  # @k: parameter, own id
        ("quasi_exact_match", "helm.quasi_exact_match", {}, True),
    ],
)
def test_metric_config(
    name: str, metric_id: str, parameters: dict[str, float], unregistered: bool
) -> None:
    config = eee.metric_config(name)
    assert (config.metric_id, config.metric_parameters) == (metric_id, parameters)
    assert ("metric_id_status" in config.additional_details) == unregistered
    assert (config.min_score, config.max_score, config.lower_is_better) == (0.0, 1.0, False)
    assert (config.metric_kind, config.metric_unit) == ("accuracy" if "match" in name else
        ("f1" if name == "f1_score" else "text_overlap"), "proportion")  # fmt: skip


@pytest.mark.parametrize(
    ("name", "direction", "kind", "bounded"),
    [
        ("bits_per_byte", True, "compression_rate", False),  # a loss: unbounded, lower better
        ("logprob", None, None, False),  # unknown family and direction: nothing invented
        ("ece_10_bin", True, "calibration_error", True),
        ("final_number_exact_match", None, "accuracy", True),
        ("wildbench_score_rescaled", False, None, False),
    ],
)
def test_metric_config_of_metrics_beyond_the_core(
    name: str, direction: bool | None, kind: str | None, bounded: bool
) -> None:
    config = eee.metric_config(name, direction)
    assert config.metric_kind == kind
    assert (config.min_score, config.max_score) == ((0.0, 1.0) if bounded else (None, None))
    if direction is not None:
        assert config.lower_is_better is direction


@pytest.mark.parametrize(
    ("name", "core", "indicator"),
    [
        ("exact_match", True, True),
        ("exact_match@5", True, True),
        ("exact_match_indicator", True, True),  # a prefix rule, as in EEE
        ("quasi_prefix_exact_match", True, True),
        ("math_equiv_chain_of_thought", True, True),
        ("final_number_exact_match", False, True),  # GSM8K's headline (not core)
        ("f1_score", True, False),  # graded metrics are never judged
        ("bleu_4", True, False),
        ("classification_macro_f1", True, False),
        ("f1_set_match", True, False),  # helmproc's set-match extension
        ("exact_set_match", True, True),
        ("num_prompt_tokens", False, False),
    ],
)
def test_core_metrics_and_correctness(name: str, core: bool, indicator: bool) -> None:
    assert eee.is_core_metric(name) == core
    assert eee.is_correct(name, 1.0) is (True if indicator else None)
    assert eee.is_correct(name, 0.5) is (False if indicator else None)  # a tie is not correct
    assert eee.is_correct(name, 0.0) is (False if indicator else None)
    assert eee.is_correct(name, None) is None


@pytest.mark.parametrize(
    ("model", "deployment", "run_name", "model_id", "developer"),
    [
        ("openai/gpt2", "huggingface/gpt2", "mmlu:model=openai_gpt2", "openai/gpt2", "openai"),
        (None, "huggingface/gpt2", "mmlu:model=openai_gpt2", "huggingface/gpt2", "huggingface"),
        (None, None, "mmlu:subject=a,model=openai_gpt2", "openai_gpt2", None),  # lossy name
        (None, None, "dyck_language_np=3:model=m", "m", None),
        (None, None, "mmlu:subject=a", None, None),
    ],
)
def test_model_rule(
    model: str | None,
    deployment: str | None,
    run_name: str,
    model_id: str | None,
    developer: str | None,
) -> None:
    assert eee.model_id(model, deployment, run_name) == model_id
    if model_id is not None:
        assert eee.model_developer(model_id) == developer


def test_evaluation_id_and_sample_hash() -> None:
    assert eee.evaluation_id("mmlu", "openai/gpt2", "1762354922") == "mmlu/openai_gpt2/1762354922"
    assert eee.sample_hash("p", "r") == hashlib.sha256(b"pr").hexdigest()
    assert eee.dataset_name(None, "civil_comments:dataset=x,model=m") == "x"
    assert eee.dataset_name(None, "mmlu:subject=a") == "mmlu"


# --- runs table -----------------------------------------------------------------------------


def test_runs_table() -> None:
    ok = RunRow(
        ref_for(REAL_RUN_DIRS[0]), "simple/model1", "simple1", "generation", 10, 30, "ok", None
    )
    failed = RunRow(RunRef("p", "s", "r", None, "x"), None, None, None, 0, 0, "failed", "boom")
    table = runs_table([ok, failed])
    assert table.schema.equals(RUNS_SCHEMA)
    assert table.to_pylist()[1] == {
        "helm_project": "p",
        "helm_release": None,
        "helm_suite": "s",
        "helm_run": "r",
        "model": None,
        "scenario": None,
        "method": None,
        "n_instances": 0,
        "n_rows": 0,
        "outcome": "failed",
        "error": "boom",
        "metric_source": None,
    }
    assert runs_table([]).num_rows == 0


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


# --- datasets can load what we write ---------------------------------------------------------


def test_datasets_loads_the_tables(tmp_path: Path) -> None:
    import datasets

    run = convert(FIXTURE_ROOT / "runs" / VARIANTS["perturbed_scores"][0])
    for name, table in (("instances", run.instances), ("evaluations", run.evaluations)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
        loaded = datasets.load_dataset(
            "parquet",
            data_files=str(tmp_path / f"{name}.parquet"),
            split="train",
            cache_dir=str(tmp_path / "cache"),
        )
        assert loaded.num_rows == table.num_rows
