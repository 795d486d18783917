"""Every HELM version / shape the converter must read, built from real fixture runs.

The fixtures (crfm-helm 0.5.16 output) only hold the modern shape: ``{text}`` inputs,
``model_deployment``, successful results, no annotations, thinking, media, encryption or
sub-splits. Each test here copies a real run and edits it into one older or rarer shape
(HELM's output format), then checks the rows against the unedited run or against
the HELM JSON itself. Every test runs twice: with the files decoded whole, and streamed
element by element (threshold 0, small batches) - both paths must read every shape.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.errors import RunConversionError
from tests.convert.helm_runs import (
    JOB_TIMESTAMP,
    copy_run,
    edit_json,
    expected_evaluations,
    expected_rows,
    number,
    read,
    ref_for,
    row_key,
)

MCQA = "v1.0.0/simple_mcqa:model=simple_model1"  # joint multiple choice, 20 instances
CLASSIFICATION = "v1.0.0/simple_classification:model=simple_model1"
GENERATION = "v1.1.0/synthetic_reasoning_natural:difficulty=easy,model=simple_model1"
SEPARATE = "v1.1.0/simple_mcqa_method:method=multiple_choice_separate_original,model=simple_model1"
OLD_SUITE = "v0.1.0/simple_mcqa:model=simple_model1"
PERTURBED = "v1.1.0/simple_mcqa:model=simple_model1,data_augmentation=lower"


@pytest.fixture(params=[False, True], ids=["whole", "streamed"])
def stream(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def convert_as(run_dir: Path, stream: bool) -> ConvertedRun:
    if stream:  # every file streamed, several batches per run
        return convert_run(
            run_dir, ref_for(run_dir), JOB_TIMESTAMP, stream_threshold_bytes=0, batch_bytes=4096
        )
    return convert_run(run_dir, ref_for(run_dir), JOB_TIMESTAMP)


def states_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    return list(data["request_states"])


def edit_states(run_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to every request state of the run's scenario_state.json."""

    def apply(data: dict[str, Any]) -> dict[str, Any]:
        for state in states_of(data):
            edit(state)
        return data

    edit_json(run_dir / "scenario_state.json", apply)


def metadata(row: dict[str, Any]) -> dict[str, str]:
    return {kv["key"]: kv["value"] for kv in row["metadata"] or []}


# --- shapes that must give exactly the rows of the unedited run -----------------------------


def legacy_strings(run_dir: Path) -> None:
    """<= v0.1.0: instance.input and reference.output are plain strings."""

    def edit(state: dict[str, Any]) -> None:
        instance = state["instance"]
        instance["input"] = instance["input"]["text"]
        for reference in instance["references"]:
            reference["output"] = reference["output"]["text"]

    edit_states(run_dir, edit)


def top_logprobs(run_dir: Path) -> None:
    """< v0.5.0: every token carries a top_logprobs map (the bulk of old files)."""

    def edit(state: dict[str, Any]) -> None:
        for completion in state["result"]["completions"]:
            for token in completion["tokens"]:
                token["top_logprobs"] = {f" alt{k}": -0.5 * k for k in range(20)}

    edit_states(run_dir, edit)


def no_model_deployment(run_dir: Path) -> None:
    """< v0.4.0: no model_deployment in the adapter spec or the requests."""
    for name in ("run_spec.json", "scenario_state.json"):
        edit_json(run_dir / name, lambda d: {**d, "adapter_spec": _without(d["adapter_spec"])})
    edit_states(run_dir, lambda state: state["request"].pop("model_deployment"))


def _without(adapter_spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in adapter_spec.items() if k != "model_deployment"}


# Dynamic-key objects are data, not fields: adding a key to them would change the data.
# A perturbation description is one too: every field of it is part of the perturbation's
# identity, so a new field makes a different perturbation (test_perturbation_variants_*).
DATA_OBJECTS = {"output_mapping", "args", "annotations", "top_logprobs", "perturbation"}


def _add_unknown_fields(node: Any, parent_key: str | None = None) -> Any:
    if isinstance(node, dict):
        out = {k: _add_unknown_fields(v, k) for k, v in node.items()}
        if parent_key not in DATA_OBJECTS:
            out["zz_future_field"] = {"added_in": "v9.9.9", "values": [1, "x", None]}
        return out
    if isinstance(node, list):
        return [_add_unknown_fields(v, parent_key) for v in node]
    return node


def unknown_fields(run_dir: Path) -> None:
    """A future HELM: unknown keys in every object of all five files."""
    for name in ("run_spec.json", "scenario.json", "stats.json", "per_instance_stats.json"):
        edit_json(run_dir / name, _add_unknown_fields)
    edit_json(run_dir / "scenario_state.json", _add_unknown_fields)


SAME_ROWS: list[Any] = [
    # (fixture run, edit) -> the edited run converts to the rows of the unedited run
    pytest.param(MCQA, legacy_strings, id="plain-string-input-output"),
    pytest.param(GENERATION, legacy_strings, id="plain-strings-generation"),
    pytest.param(MCQA, top_logprobs, id="top-logprobs-in-tokens"),
    pytest.param(OLD_SUITE, no_model_deployment, id="no-model-deployment"),
    pytest.param(MCQA, unknown_fields, id="unknown-future-fields"),
    pytest.param(SEPARATE, unknown_fields, id="unknown-fields-separate-mc"),
]


@pytest.mark.parametrize(("relative", "edit"), SAME_ROWS)
def test_shape_gives_the_rows_of_the_modern_run(
    tmp_path: Path, stream: bool, relative: str, edit: Callable[[Path], None]
) -> None:
    original = copy_run(relative, tmp_path / "original")
    edited = copy_run(relative, tmp_path / "edited")
    edit(edited)
    assert (edited / "scenario_state.json").read_bytes() != (
        original / "scenario_state.json"
    ).read_bytes() or (edited / "run_spec.json").read_bytes() != (
        original / "run_spec.json"
    ).read_bytes()
    want, got = convert_as(original, stream), convert_as(edited, stream)
    assert got.instances.num_rows > 0
    assert got.instances.equals(want.instances)
    if edit is no_model_deployment:
        assert set(got.evaluations.column("model_deployment").to_pylist()) == {None}
        assert set(want.evaluations.column("model_deployment").to_pylist()) == {"simple/model1"}
        got_evaluations = got.evaluations.drop_columns(["model_deployment"])
        assert got_evaluations.equals(want.evaluations.drop_columns(["model_deployment"]))
    else:
        assert got.evaluations.equals(want.evaluations)
    assert (got.n_instances, got.n_rows) == (want.n_instances, want.n_rows)


# --- NaN, failed and missing results ---------------------------------------------------------


def test_bare_nan_in_both_stats_files(tmp_path: Path, stream: bool) -> None:
    """< v0.2.4: bare NaN (not valid JSON) in stats.json and per_instance_stats.json."""
    run_dir = copy_run(OLD_SUITE, tmp_path)

    def nan_stats(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for stat in stats:
            if stat["name"]["name"] in ("inference_runtime", "exact_match@5"):
                stat.update(mean=float("nan"), stddev=float("nan"))
        return stats

    edit_json(run_dir / "stats.json", nan_stats)
    edit_json(
        run_dir / "per_instance_stats.json", lambda e: [*e[:3], *map(_nan_entry, e[3:6]), *e[6:]]
    )
    assert "NaN" in (run_dir / "per_instance_stats.json").read_text()
    run = convert_as(run_dir, stream)
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    evaluations = {r["evaluation_result_id"]: r["score"] for r in run.evaluations.to_pylist()}
    assert evaluations == expected_evaluations(run_dir)
    assert "exact_match@5:test" not in evaluations and "exact_match:test" in evaluations
    assert run.n_rows == 10 * 8 - 3


def _nan_entry(entry: dict[str, Any]) -> dict[str, Any]:
    for stat in entry["stats"]:
        if stat["name"]["name"] in ("exact_match@5", "num_prompt_tokens"):
            stat.update(mean=float("nan"), sum=float("nan"))
    return entry


def test_failed_and_unexecuted_requests(tmp_path: Path, stream: bool) -> None:
    """result.success false (with error) and result missing (never executed)."""
    run_dir = copy_run(GENERATION, tmp_path)

    def break_results(data: dict[str, Any]) -> dict[str, Any]:
        states = states_of(data)
        for state in states[::3]:
            state["result"] = {"success": False, "error": "rate limited", "completions": []}
        for state in states[1::3]:
            del state["result"]
        return data

    edit_json(run_dir / "scenario_state.json", break_results)
    states = {s["instance"]["id"]: s for s in states_of(read(run_dir, "scenario_state.json"))}
    run = convert_as(run_dir, stream)
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    for row in rows:
        state = states[row["sample_id"]]
        result = state.get("result")
        if result is None:
            assert row["error"] is None and row["output"]["raw"] == []
            assert (
                row["answer_attribution"] == [] and row["performance"]["generation_time_ms"] is None
            )
        elif not result["success"]:
            assert row["error"] == "rate limited" and row["output"]["raw"] == []
        else:
            assert row["error"] is None and row["output"]["raw"] == [
                c["text"] for c in result["completions"]
            ]


# --- shapes that add information --------------------------------------------------------------


def test_sub_split_in_stats_and_instances(tmp_path: Path, stream: bool) -> None:
    """civil_comments-like runs: instances carry sub_split, stats.json aggregates per
    sub_split only; the id's value is the helm-summarize merge of the sub-splits."""
    run_dir = copy_run(CLASSIFICATION, tmp_path)

    def sub_split_of(instance_id: str) -> str:
        return "even" if number(instance_id) % 2 == 0 else "odd"

    edit_states(
        run_dir, lambda s: s["instance"].update(sub_split=sub_split_of(s["instance"]["id"]))
    )

    def per_instance(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            sub_split = sub_split_of(entry["instance_id"])
            for stat in entry["stats"]:
                stat["name"]["sub_split"] = sub_split
                if stat["name"]["name"] == "exact_match" and sub_split == "even":
                    stat.update(sum=1.0, mean=1.0, min=1.0, max=1.0)
        return entries

    def stats(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for stat in entries:
            if "split" not in stat["name"]:
                out.append(stat)
                continue
            for sub_split, value in (("even", 1.0), ("odd", 0.0)):
                copy = json.loads(json.dumps(stat))
                copy["name"]["sub_split"] = sub_split
                if stat["count"] and stat["name"]["name"] == "exact_match":
                    copy.update(
                        sum=value, sum_squared=value, mean=value, min=value, max=value, stddev=0.0
                    )
                out.append(copy)
        return out

    edit_json(run_dir / "per_instance_stats.json", per_instance)
    edit_json(run_dir / "stats.json", stats)
    run = convert_as(run_dir, stream)
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    assert {metadata(r)["sub_split"] for r in rows} == {"even", "odd"}
    assert all(metadata(r)["sub_split"] == sub_split_of(r["sample_id"]) for r in rows)
    evaluations = {r["evaluation_result_id"]: r for r in run.evaluations.to_pylist()}
    assert {k: r["score"] for k, r in evaluations.items()} == expected_evaluations(run_dir)
    # The split's result is HELM's Stat.merge of the sub-split stats (sums and counts
    # added, population stddev from the summed squares), as helm-summarize shows it.
    parts = [
        s
        for s in read(run_dir, "stats.json")
        if s["name"]["name"] == "exact_match"
        and s["name"].get("sub_split")
        and s["count"]
        and "perturbation" not in s["name"]
        and s["name"].get("split") == "test"
    ]
    count = sum(s["count"] for s in parts)
    mean = sum(s["sum"] for s in parts) / count
    variance = sum(s["sum_squared"] for s in parts) / count - mean**2
    merged = evaluations["exact_match:test"]
    assert (merged["score"], merged["sub_split"], merged["count"]) == (mean, None, count)
    assert merged["stddev"] == pytest.approx(variance**0.5)
    for sub_split in ("even", "odd"):  # each sub-split is a result of its own
        own = evaluations[f"exact_match:test:sub_split={sub_split}"]
        assert own["sub_split"] == sub_split
        assert own["score"] == next(s["mean"] for s in parts if s["name"]["sub_split"] == sub_split)


def test_sub_splits_merge_with_the_stat_without_sub_split(tmp_path: Path, stream: bool) -> None:
    """Some instances with a sub_split, some without: stats.json has a stat per sub_split
    plus one without, which covers only the instances without a sub_split. The split's
    result merges all of them (sum of sums / sum of counts), not the no-sub_split stat."""
    run_dir = copy_run(CLASSIFICATION, tmp_path)

    def sub_split_of(instance_id: str) -> str | None:
        return "rare" if number(instance_id) % 3 == 0 else None

    def set_sub_split(state: dict[str, Any]) -> None:
        sub_split = sub_split_of(state["instance"]["id"])
        if sub_split is not None:
            state["instance"]["sub_split"] = sub_split

    edit_states(run_dir, set_sub_split)

    def stats(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for stat in entries:
            out.append(stat)
            if stat["name"]["name"] == "exact_match" and stat["count"]:
                # the no-sub_split stat scores 0.25 over 3 trials-worth, the sub-split 1.0
                stat.update(count=3, sum=0.75, sum_squared=0.75, mean=0.25)
                copy = json.loads(json.dumps(stat))
                copy["name"]["sub_split"] = "rare"
                copy.update(count=1, sum=1.0, sum_squared=1.0, mean=1.0, stddev=0.0)
                out.append(copy)
        return out

    edit_json(run_dir / "stats.json", stats)
    run = convert_as(run_dir, stream)
    evaluations = {r["evaluation_result_id"]: r for r in run.evaluations.to_pylist()}
    assert {k: r["score"] for k, r in evaluations.items()} == expected_evaluations(run_dir)
    whole = [
        s
        for s in read(run_dir, "stats.json")
        if s["name"]["name"] == "exact_match"
        and s["name"].get("split") == "test"
        and "perturbation" not in s["name"]
    ]
    assert len(whole) == 2
    merged = evaluations["exact_match:test"]
    assert merged["score"] == sum(s["sum"] for s in whole) / sum(s["count"] for s in whole)
    assert merged["score"] != next(s["mean"] for s in whole if "sub_split" not in s["name"])
    assert evaluations["exact_match:test:sub_split=rare"]["score"] == 1.0
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)


def test_perturbation_variants_sharing_a_name_are_rows_of_their_own(
    tmp_path: Path, stream: bool
) -> None:
    """HELM's style perturbation applied with several suffixes: per-instance entries for
    one instance and trial whose perturbations share the name and differ in other fields.
    Each converts under its own key (it failed the whole run as a duplicate before)."""
    run_dir = copy_run(PERTURBED, tmp_path)
    suffixes = ("!", "?")

    def variants(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for entry in entries:
            if "perturbation" not in entry:
                out.append(entry)
                continue
            for index, suffix in enumerate(suffixes):
                copy = json.loads(json.dumps(entry))
                for holder in [copy, *(s["name"] for s in copy["stats"])]:
                    if "perturbation" in holder:
                        holder["perturbation"] = {**holder["perturbation"], "suffix": suffix}
                for stat in copy["stats"]:  # each variant scores differently
                    if stat["name"]["name"] == "exact_match" and stat["count"]:
                        stat.update(sum=float(index), mean=float(index))
                out.append(copy)
        return out

    def variant_states(data: dict[str, Any]) -> dict[str, Any]:
        out = []
        for state in states_of(data):
            if "perturbation" not in state["instance"]:
                out.append(state)
                continue
            for suffix in suffixes:
                copy = json.loads(json.dumps(state))
                copy["instance"]["perturbation"]["suffix"] = suffix
                copy["request"]["prompt"] += suffix
                out.append(copy)
        return {**data, "request_states": out}

    def variant_stats(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for stat in entries:
            if "perturbation" not in stat["name"]:
                out.append(stat)
                continue
            for index, suffix in enumerate(suffixes):
                copy = json.loads(json.dumps(stat))
                copy["name"]["perturbation"]["suffix"] = suffix
                if copy["count"]:
                    copy.update(sum=index * copy["count"], mean=float(index))
                out.append(copy)
        return out

    edit_json(run_dir / "per_instance_stats.json", variants)
    edit_json(run_dir / "scenario_state.json", variant_states)
    edit_json(run_dir / "stats.json", variant_stats)
    run = convert_as(run_dir, stream)
    rows = run.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    perturbed = [r for r in rows if r["helm_perturbation"] is not None]
    assert {json.loads(r["helm_perturbation_description"])["suffix"] for r in perturbed} == {
        "!",
        "?",
    }
    for row in perturbed:  # each variant joined to its own request state
        suffix = json.loads(row["helm_perturbation_description"])["suffix"]
        assert row["input"]["raw"].endswith(suffix)
    ids = [r["evaluation_result_id"] for r in run.evaluations.to_pylist()]
    assert len(ids) == len(set(ids))
    evaluations = {r["evaluation_result_id"]: r["score"] for r in run.evaluations.to_pylist()}
    assert evaluations == expected_evaluations(run_dir)


def test_annotations_go_to_metadata_as_json(tmp_path: Path, stream: bool) -> None:
    """>= v0.5.0: LLM-judge annotations on request states."""
    run_dir = copy_run(GENERATION, tmp_path)

    def annotate(state: dict[str, Any]) -> None:
        n = number(state["instance"]["id"])
        state["annotations"] = {
            "judge": {"score": n % 3, "verdict": f"ok {n}", "extra": [1.5, None, "é"]}
        }

    edit_states(run_dir, annotate)
    rows = convert_as(run_dir, stream).instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    for row in rows:
        n = number(row["sample_id"])
        assert json.loads(metadata(row)["annotations"]) == {
            "judge": {"score": n % 3, "verdict": f"ok {n}", "extra": [1.5, None, "é"]}
        }


def test_thinking_becomes_the_reasoning_trace(tmp_path: Path, stream: bool) -> None:
    """>= v0.5.6: completions carry thinking.text."""
    run_dir = copy_run(GENERATION, tmp_path)

    def think(state: dict[str, Any]) -> None:
        for i, completion in enumerate(state["result"]["completions"]):
            completion["thinking"] = {"text": f"because {state['instance']['id']}/{i}"}

    edit_states(run_dir, think)
    run = convert_as(run_dir, stream)
    for row in run.instances.to_pylist():
        assert row["output"]["reasoning_trace"] == [f"because {row['sample_id']}/0"]
    generation = run.evaluations.column("generation_config").to_pylist()
    assert {g["generation_args"]["reasoning"] for g in generation} == {True}


def test_multimodal_input_records_its_text_and_notes_the_media(
    tmp_path: Path, stream: bool
) -> None:
    """>= v0.3.0 (VHELM): the request has a multimodal_prompt of text and image parts."""
    original = copy_run(MCQA, tmp_path / "original")
    run_dir = copy_run(MCQA, tmp_path / "edited")

    def multimodal(state: dict[str, Any]) -> None:
        prompt = state["request"]["prompt"]
        half = len(prompt) // 2
        parts = [
            {"content_type": "image/png", "location": "images/a.png"},
            {"content_type": "text/plain", "text": prompt[:half]},
            {"content_type": "image/png", "location": "images/b.png"},
            {"content_type": "text/plain", "text": prompt[half:]},
            {"content_type": "audio/wav", "location": "clips/c.wav"},
        ]
        state["request"]["prompt"] = ""
        state["request"]["multimodal_prompt"] = {"media_objects": parts}
        state["instance"]["input"] = {"text": "", "multimedia_content": {"media_objects": parts}}

    edit_states(run_dir, multimodal)
    got = convert_as(run_dir, stream).instances
    want = convert_as(original, stream).instances
    assert got.drop_columns(["metadata"]).equals(want.drop_columns(["metadata"]))
    assert {metadata(r)["media"] for r in got.to_pylist()} == {"audio/wav x1, image/png x2"}


# --- encrypted runs ---------------------------------------------------------------------------


def encrypt_run(run_dir: Path, *, write_keys: bool = True, forget: int = 0) -> dict[str, Any]:
    """Encrypt the run's texts the way HELM's encryption script does: each prompt, input,
    reference, output-mapping value and completion text becomes [encrypted_text_N], with
    AES-GCM data per placeholder in encryption_data.json (the first ``forget`` left out)."""
    counter = itertools.count()
    keys: dict[str, Any] = {}

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def seal(text: str) -> str:
        placeholder = f"[encrypted_text_{next(counter)}]"
        key = hashlib.sha256(placeholder.encode()).digest()
        iv = hashlib.sha256(b"iv" + placeholder.encode()).digest()[:12]
        sealed = AESGCM(key).encrypt(iv, text.encode(), None)
        keys[placeholder] = {
            "ciphertext": b64(sealed[:-16]),
            "key": b64(key),
            "iv": b64(iv),
            "tag": b64(sealed[-16:]),
        }
        return placeholder

    def edit(state: dict[str, Any]) -> None:
        instance = state["instance"]
        instance["input"]["text"] = seal(instance["input"]["text"])
        for reference in instance["references"]:
            reference["output"]["text"] = seal(reference["output"]["text"])
        state["request"]["prompt"] = seal(state["request"]["prompt"])
        mapping = state.get("output_mapping")
        if mapping:
            state["output_mapping"] = {k: seal(v) for k, v in mapping.items()}
        for completion in state["result"]["completions"]:
            completion["text"] = seal(completion["text"])

    edit_states(run_dir, edit)
    for placeholder in list(keys)[:forget]:
        del keys[placeholder]
    if write_keys:
        (run_dir / "encryption_data.json").write_text(json.dumps(keys, indent=2))
    return keys


@pytest.mark.parametrize("relative", [MCQA, SEPARATE])
def test_encrypted_run_with_its_keys_decrypts_to_the_original_rows(
    tmp_path: Path, stream: bool, relative: str
) -> None:
    original = copy_run(relative, tmp_path / "original")
    run_dir = copy_run(relative, tmp_path / "edited")
    encrypt_run(run_dir)
    assert "[encrypted_text_" in (run_dir / "scenario_state.json").read_text()
    got, want = convert_as(run_dir, stream), convert_as(original, stream)
    assert got.instances.equals(want.instances)  # texts, sample hashes, no "encrypted" mark
    assert got.evaluations.equals(want.evaluations)


def test_encrypted_run_without_keys_keeps_placeholders_and_marks_rows(
    tmp_path: Path, stream: bool
) -> None:
    original = copy_run(MCQA, tmp_path / "original")
    run_dir = copy_run(MCQA, tmp_path / "edited")
    encrypt_run(run_dir, write_keys=False)
    got, want = convert_as(run_dir, stream), convert_as(original, stream)
    rows = got.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(original)
    assert all(metadata(r) == {"encrypted": "true"} for r in rows)
    assert all(r["input"]["raw"].startswith("[encrypted_text_") for r in rows)
    assert all(metadata(r) == {} for r in want.instances.to_pylist())


def test_placeholders_missing_from_the_keys_are_kept_and_marked(
    tmp_path: Path, stream: bool
) -> None:
    run_dir = copy_run(MCQA, tmp_path)
    encrypt_run(run_dir, forget=1)  # the first state's input text only: not in any row
    state = states_of(read(run_dir, "scenario_state.json"))[0]
    assert state["instance"]["input"]["text"] == "[encrypted_text_0]"
    rows = convert_as(run_dir, stream).instances.to_pylist()
    assert not any(metadata(r) for r in rows)
    encrypt_run(copy_run(MCQA, tmp_path / "again"), forget=2)  # + first reference text
    marked = convert_as(tmp_path / "again" / MCQA, stream).instances.to_pylist()
    first_id = state["instance"]["id"]
    assert {r["sample_id"] for r in marked if metadata(r)} == {first_id}


def test_keys_that_do_not_decrypt_fail_the_run(tmp_path: Path, stream: bool) -> None:
    run_dir = copy_run(MCQA, tmp_path)
    keys = encrypt_run(run_dir)
    last = list(keys)[-1]
    keys[last]["tag"] = base64.b64encode(b"\0" * 16).decode()
    (run_dir / "encryption_data.json").write_text(json.dumps(keys))
    with pytest.raises(RunConversionError) as info:
        convert_as(run_dir, stream).instances  # noqa: B018 - rows are built lazily
    assert info.value.file == "encryption_data.json"
    assert info.value.reason == f"cannot decrypt {last}: authentication failed " + (
        "(wrong key, iv, tag or ciphertext)"
    )


def test_malformed_encryption_data_names_the_file(tmp_path: Path) -> None:
    run_dir = copy_run(MCQA, tmp_path)
    encrypt_run(run_dir)
    (run_dir / "encryption_data.json").write_text('{"[encrypted_text_0]": {"key": 1}}')
    with pytest.raises(RunConversionError) as info:
        convert_as(run_dir, False)
    assert info.value.file == "encryption_data.json"
    assert info.value.reason.startswith("unexpected shape")


@pytest.mark.parametrize("block", [1, 7, 15, 16, 17, 1 << 20])
def test_placeholder_scan_finds_a_prefix_across_read_blocks(
    tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP source asks for encryption_data.json only when this scan finds a placeholder,
    so a match split between two reads must still count."""
    from helmproc.engine.helm import decrypt

    monkeypatch.setattr(decrypt, "SCAN_BLOCK_BYTES", block)
    path = tmp_path / "scenario_state.json"
    for offset in range(0, 40):
        path.write_bytes(b"x" * offset + b'"[encrypted_text_3]"' + b"y" * 5)
        assert decrypt.holds_placeholder(path), offset
    for clean in (b"", b"x" * 100, b"[encrypted_text", b'"[encrypted_tex"t_1]'):
        path.write_bytes(clean)
        assert not decrypt.holds_placeholder(path), clean
    assert not decrypt.holds_placeholder(tmp_path / "missing.json")
