"""What the convert tests compare against, read from HELM's files themselves.

Expected values are read straight from a run's JSON with the stdlib ``json`` module and an
independent copy of the EEE rules (kept metrics, result ids), never through the code under
test. "Variants" are copies of real runs edited so that a wrong join would show (the real
fixture scores are all 0 or 0.5 and every separate-MC prediction is reference 0, so they
cannot tell a right key from a wrong one). The fixtures ``helm_run_dir`` and ``converted`` run
every check over every fixture run and every variant (``tests/convert/conftest.py``).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.facts import RunRef
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


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


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
