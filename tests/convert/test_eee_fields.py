"""Tests of the EEE rules (engine/convert/eee_fields.py), each against a value written out
here independently.
"""

from __future__ import annotations

import hashlib

import pytest

from helmproc.engine.convert import eee_fields as eee

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
