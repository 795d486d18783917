"""The pure rules that turn HELM names and values into EEE 0.3.0 field values.

No I/O, no state: every function maps HELM facts (metric names, run_spec fields, prompts) to
the EEE value, so the converter and a later ``export-eee`` agree by calling the same rule.

Rules (sources: ``docs/eee-mapping.md``):

- **Core metrics.** Only stats whose name starts with one of :data:`CORE_METRIC_PREFIXES`
  become EEE results or instance rows; HELM bookkeeping (token counts, runtime, logprob,
  calibration, ...) is dropped. It is a prefix test, so ``exact_match@5`` and
  ``exact_match_indicator`` are core.
- **evaluation_result_id** = ``name[:split][:perturbation.name]``, e.g. ``exact_match:test`` or
  ``exact_match@5:valid:robustness``. ``sub_split`` and ``perturbation.computed_on`` are not
  part of it, so several HELM stats can share one id (the converter keeps the first).
- **metric_config.** ``metric_id`` is canonical for ``exact_match`` (``exact-match``),
  ``f1_score`` (``f1``), ``rouge_l`` (``rouge-l``), ``bleu_1``/``bleu_4``
  (``bleu-1``/``bleu-4``); every other metric gets ``helm.<name>`` plus
  ``metric_id_status: unregistered``. All get ``metric_id_registry_revision``. A trailing
  ``@k`` becomes ``metric_parameters {"k": k}``. Every core metric is a continuous proportion
  in [0, 1] where higher is better.
- **is_correct** = ``score > 0`` for the exact-match family (incl. ``@k``),
  ``ifeval_strict_accuracy``, ``chain_of_thought_correctness`` and ``math_equiv*``; ``False``
  for graded metrics (f1, rouge, bleu, classification F1).
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

# Metrics whose per-instance score means "answered correctly" when positive.
CORRECTNESS_PREFIXES: tuple[str, ...] = (
    "exact_match",
    "quasi_exact_match",
    "prefix_exact_match",
    "quasi_prefix_exact_match",
    "ifeval_strict_accuracy",
    "chain_of_thought_correctness",
    "math_equiv",
    "exact_set_match",
)

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


def evaluation_result_id(name: str, split: str | None, perturbation: str | None) -> str:
    """``name[:split][:perturbation]``: the join key between aggregate results and rows."""
    result_id = name
    if split:
        result_id += ":" + split
    if perturbation:
        result_id += ":" + perturbation
    return result_id


def is_correct(name: str, score: float) -> bool:
    """EEE ``evaluation.is_correct`` for one per-instance score of metric ``name``."""
    return name.startswith(CORRECTNESS_PREFIXES) and score > 0


@dataclass(frozen=True)
class MetricConfig:
    """EEE ``metric_config`` of one HELM metric (values for the aggregate result)."""

    metric_name: str
    metric_id: str
    metric_kind: str
    metric_unit: str = "proportion"
    score_type: str = "continuous"
    lower_is_better: bool = False
    min_score: float = 0.0
    max_score: float = 1.0
    metric_parameters: dict[str, float] = field(default_factory=dict)
    additional_details: dict[str, str] = field(default_factory=dict)


@functools.cache
def metric_config(name: str) -> MetricConfig:
    """The EEE metric_config for HELM metric ``name`` (cached; treat the result as read-only).

    ``metric_kind`` is the metric without its ``@k`` suffix. ``metric_parameters`` is
    ``{"k": k}`` for ``name@k`` and empty otherwise.
    """
    base, parameters = name, {}
    match = _AT_K.match(name)
    if match:
        base, parameters = match["base"], {"k": float(match["k"])}
    details = {"metric_id_registry_revision": METRIC_ID_REGISTRY_REVISION}
    canonical = CANONICAL_METRIC_IDS.get(name)
    if canonical is None:
        metric_id = f"helm.{name}"
        details = {"metric_id_status": "unregistered", **details}
    else:
        metric_id = canonical
    return MetricConfig(
        metric_name=name,
        metric_id=metric_id,
        metric_kind=base,
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
