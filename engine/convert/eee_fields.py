"""The pure rules that turn HELM names and values into EEE 0.3.0 field values.

No I/O, no state: every function maps HELM facts (metric names, run_spec fields, prompts) to
the EEE value, so the converter and a later ``export-eee`` agree by calling the same rule.

Rules (EEE 0.3.0's record shapes applied to HELM's stats):

- **Core metrics.** Stats whose name starts with one of :data:`CORE_METRIC_PREFIXES` always
  become EEE results and instance rows (a prefix test: ``exact_match@5`` and
  ``exact_match_indicator`` are core); which other metrics a run keeps is decided per run
  by ``metric_selection`` (HELM's own schema).
- **evaluation_result_id** = ``name[:split][:sub_split=S][:perturbation[:computed_on]]``,
  e.g. ``exact_match:test``, ``exact_match:test:sub_split=easy`` or
  ``exact_match:test:lowercase{"fairness":false,"robustness":true}:worst``; the perturbation
  part is its whole description (``helm.perturbations.label``), so the id is unique per
  (metric, split, sub-split, perturbation, computed_on) within a run.
- **metric_config.** ``metric_id`` is canonical for ``exact_match`` (``exact-match``),
  ``f1_score`` (``f1``), ``rouge_l`` (``rouge-l``), ``bleu_1``/``bleu_4``
  (``bleu-1``/``bleu-4``); every other metric gets ``helm.<name>`` plus
  ``metric_id_status: unregistered``. All get ``metric_id_registry_revision``. A trailing
  ``@k`` becomes ``metric_parameters {"k": k}``. ``metric_kind`` is the metric's family
  (:func:`metric_family`: accuracy, f1, iou, text_overlap, calibration_error, perplexity,
  compression_rate, edit_distance) or absent. Bounds 0..1 and unit ``proportion`` only for
  the proportion families; otherwise none. ``lower_is_better`` comes from the schema
  (``metric_selection``); unknown directions are False for proportions (True for
  calibration errors) and stay unknown otherwise.
- **is_correct** (:func:`is_correct`): for indicator-style metrics (the exact-match family
  incl. ``@k`` and any name holding ``exact_match``, ``ifeval_strict_accuracy``,
  ``chain_of_thought_correctness``, ``math_equiv*``, ``exact_set_match``) true exactly when
  the score is the maximum 1.0 (a 0.5 tie is not correct), else false; null for continuous
  metrics and for rows without a HELM score.
- **sample_hash** = sha256 hex of ``prompt + first "correct"-tagged reference text``.
- **Model.** helmproc has no HELM model registry, so ``model_info.id`` (and ``name``) is the
  run_spec's ``adapter_spec.model``; if absent, ``adapter_spec.model_deployment``; if both are
  absent, the ``model=`` value of the run name (lossy: HELM wrote ``/`` as ``_`` there). The
  developer is the part of the id before the first ``/``, or None when the id has no ``/``.
- **dataset_name** (= ``evaluation_name``) is scenario.json ``name``; without one, the run
  name's ``dataset=`` value, else the run name before its first ``:``.
- **evaluation_id** = ``<dataset_name>/<model id with / as _>/<evaluation_timestamp>``, the
  evaluation timestamp being the minimum request_datetime of the run (or, if no request has
  one, the job's retrieved timestamp). As in EEE's own HELM converter it is deterministic but
  not unique across runs of one dataset and model (MMLU subjects); the provenance columns
  (project, suite, run) are the unique run key.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

SCHEMA_VERSION = "0.3.0"

CORE_METRIC_PREFIXES: tuple[str, ...] = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "classification_micro_f1",
    "classification_macro_f1",
    "f1_score",
    "rouge_l",
    "bleu_",
    "ifeval_strict_accuracy",
    "chain_of_thought_correctness",
    "math_equiv",
    "math_equiv_chain_of_thought",
    # Beyond the peer's list: HELM's set-match accuracy metrics (synthetic_reasoning_natural
    # and similar scenarios report nothing else). They get `helm.<name>` metric ids.
    "exact_set_match",
    "f1_set_match",
    "iou_set_match",
)

# Indicator-style metrics: a per-instance score is 0 or 1 (1 = answered correctly). Prefix
# test on the name without its ``@k`` suffix, plus names holding ``exact_match`` (HELM's
# ``final_number_exact_match``, ``exact_match_indicator``, ...).
INDICATOR_PREFIXES: tuple[str, ...] = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "ifeval_strict_accuracy",
    "chain_of_thought_correctness",
    "math_equiv",
    "exact_set_match",
)
INDICATOR_MAX = 1.0

# Metric families (EEE ``metric_kind``: the family used for safe aggregation), by the name
# without ``@k``: exact names first, then prefixes, then suffixes. Unknown: no metric_kind.
_FAMILY_NAMES: Mapping[str, str] = {
    "bits_per_byte": "compression_rate",
    "f1_score": "f1",
    "f1_set_match": "f1",
    "f1_macro": "f1",
    "f1_micro": "f1",
    "classification_macro_f1": "f1",
    "classification_micro_f1": "f1",
    "iou_set_match": "iou",
    "edit_distance": "edit_distance",
    "perplexity": "perplexity",
}
_FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("rouge", "text_overlap"),
    ("bleu", "text_overlap"),
    ("chinese_bleu", "text_overlap"),
    ("chinese_rouge", "text_overlap"),
    ("ece_", "calibration_error"),
    ("platt_ece_", "calibration_error"),
)
_FAMILY_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_perplexity", "perplexity"),
    ("_accuracy", "accuracy"),
)
# Families whose values are proportions in [0, 1] (then bounds 0..1 and unit "proportion").
PROPORTION_FAMILIES = frozenset({"accuracy", "f1", "iou", "text_overlap", "calibration_error"})

CANONICAL_METRIC_IDS: Mapping[str, str] = {
    "exact_match": "exact-match",
    "f1_score": "f1",
    "rouge_l": "rouge-l",
    "bleu_1": "bleu-1",
    "bleu_4": "bleu-4",
}
METRIC_ID_REGISTRY_REVISION = "8b83e9c"

# EEE source_data / interaction constants for HELM runs.
SOURCE_TYPE = "hf_dataset"
INTERACTION_TYPE = "single_turn"
ATTRIBUTION_SOURCE = "output.raw"
ATTRIBUTION_METHOD = "exact_match"

_AT_K = re.compile(r"^(?P<base>.*)@(?P<k>\d+)$")


def is_core_metric(name: str) -> bool:
    """True if HELM stat ``name`` is one EEE keeps (see :data:`CORE_METRIC_PREFIXES`)."""
    return name.startswith(CORE_METRIC_PREFIXES)


def evaluation_result_id(
    name: str,
    split: str | None,
    perturbation: str | None,
    computed_on: str | None = None,
    sub_split: str | None = None,
) -> str:
    """``name[:split][:sub_split=S][:perturbation[:computed_on]]``: the join key between
    aggregate results and rows, unique within a run. ``perturbation`` is the perturbation's
    label (``perturbations.label``: its name, plus its other fields as JSON when it has any)."""
    result_id = name
    if split:
        result_id += ":" + split
    if sub_split is not None:
        result_id += ":sub_split=" + sub_split
    if perturbation:
        result_id += ":" + perturbation
        if computed_on:
            result_id += ":" + computed_on
    return result_id


def base_metric(name: str) -> str:
    """The metric without a trailing ``@k``."""
    match = _AT_K.match(name)
    return match["base"] if match else name


def is_indicator(name: str) -> bool:
    """Metrics scored 0/1 per instance (see :data:`INDICATOR_PREFIXES`)."""
    base = base_metric(name)
    return base.startswith(INDICATOR_PREFIXES) or "exact_match" in base


def is_correct(name: str, score: float | None) -> bool | None:
    """EEE ``evaluation.is_correct`` for one per-instance score of metric ``name``.

    The rule: for indicator-style metrics (:func:`is_indicator`), true exactly when the
    score is the metric's maximum (1.0; a 0.5 tie is not correct), false otherwise; for any
    other (continuous) metric, and for a score HELM did not compute, None (unknown).
    """
    if score is None or not is_indicator(name):
        return None
    return score >= INDICATOR_MAX


def metric_family(name: str) -> str | None:
    """EEE ``metric_kind`` of HELM metric ``name``: its family, or None when unknown."""
    base = base_metric(name)
    if is_indicator(base):
        return "accuracy"
    found = _FAMILY_NAMES.get(base)
    if found is not None:
        return found
    for prefix, family in _FAMILY_PREFIXES:
        if base.startswith(prefix):
            return family
    for suffix, family in _FAMILY_SUFFIXES:
        if base.endswith(suffix) or base == suffix[1:]:
            return family
    return None


@dataclass(frozen=True)
class MetricConfig:
    """EEE ``metric_config`` of one HELM metric (values for the aggregate result).

    ``min_score``/``max_score``/``metric_unit`` are set only for proportions;
    ``lower_is_better`` is None when no schema or table declares the direction.
    """

    metric_name: str
    metric_id: str
    metric_kind: str | None
    metric_unit: str | None = None
    score_type: str = "continuous"
    lower_is_better: bool | None = None
    min_score: float | None = None
    max_score: float | None = None
    metric_parameters: dict[str, float] = field(default_factory=dict)
    additional_details: dict[str, str] = field(default_factory=dict)


@functools.cache
def metric_config(name: str, lower_is_better: bool | None = None) -> MetricConfig:
    """The EEE metric_config for HELM metric ``name`` (cached; treat the result as read-only).

    ``metric_kind`` is the family (:func:`metric_family`). ``metric_parameters`` is
    ``{"k": k}`` for ``name@k`` and empty otherwise. ``lower_is_better`` is the direction
    the run's metric selection found (None: unknown).
    """
    parameters = {}
    match = _AT_K.match(name)
    if match:
        parameters = {"k": float(match["k"])}
    details = {"metric_id_registry_revision": METRIC_ID_REGISTRY_REVISION}
    canonical = CANONICAL_METRIC_IDS.get(name)
    if canonical is None:
        metric_id = f"helm.{name}"
        details = {"metric_id_status": "unregistered", **details}
    else:
        metric_id = canonical
    family = metric_family(name)
    proportion = family in PROPORTION_FAMILIES
    if family == "calibration_error" and lower_is_better is None:
        lower_is_better = True
    if lower_is_better is None and proportion and family != "calibration_error":
        lower_is_better = False
    return MetricConfig(
        metric_name=name,
        metric_id=metric_id,
        metric_kind=family,
        metric_unit="proportion" if proportion else None,
        lower_is_better=lower_is_better,
        min_score=0.0 if proportion else None,
        max_score=1.0 if proportion else None,
        metric_parameters=parameters,
        additional_details=details,
    )


def sample_hash(prompt: str, first_correct_reference: str) -> str:
    """sha256 hex of the prompt followed by the first correct reference text ("" if none)."""
    return hashlib.sha256((prompt + first_correct_reference).encode("utf-8")).hexdigest()


def model_id(model: str | None, model_deployment: str | None, run_name: str) -> str | None:
    """EEE ``model_info.id``: adapter_spec.model, else model_deployment, else ``model=`` of
    the run name; None if none of them names a model."""
    return model or model_deployment or run_name_arg(run_name, "model")


def model_developer(model: str) -> str | None:
    """The developer of a model id: the part before the first ``/``; None without a ``/``."""
    developer, sep, _ = model.partition("/")
    return developer if sep and developer else None


def dataset_name(scenario_name: str | None, run_name: str) -> str:
    """EEE ``dataset_name`` / ``evaluation_name``: scenario.json ``name``; without one, the
    run name's ``dataset=`` value, else the run name before its first ``:``."""
    return scenario_name or run_name_arg(run_name, "dataset") or run_name.partition(":")[0]


def run_name_arg(run_name: str, key: str) -> str | None:
    """The value of ``key=`` in a HELM run name (``scenario:k1=v1,k2=v2``), or None."""
    for part in run_name.partition(":")[2].split(","):
        name, sep, value = part.partition("=")
        if sep and name == key and value:
            return value
    return None


def evaluation_id(dataset_name: str, model: str, evaluation_timestamp: str) -> str:
    """EEE ``evaluation_id`` (see the module docstring for why it is not unique)."""
    return f"{dataset_name}/{model.replace('/', '_')}/{evaluation_timestamp}"
