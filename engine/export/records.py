"""EEE 0.3.0 records rebuilt from helmproc dataset rows: the aggregate and the sample lines.

Pure functions from rows (``to_pylist`` dicts or Arrow record batches of the
``evaluations`` and ``instances`` tables, :mod:`tables`) to JSON-ready dicts and the exact
bytes they are written as. No I/O, so the same rows always give the same bytes.

- **Aggregate** (``EvaluationLog``): run-level fields from the run's first evaluation row,
  one ``evaluation_results`` item per evaluation row in table order. Written like EEE writes
  it: ``None`` values left out (``exclude_none``), ``indent=2``, UTF-8 (no ASCII escaping),
  with a final newline. ``source_metadata`` carries helmproc's constant source description
  plus the HELM provenance (project, release, suite, run) in its ``additional_details``, the
  only place that tells MMLU-style runs with equal ``evaluation_id`` apart.
  ``model_info.inference_platform`` is the run's model deployment before its ``/``.
  Infinite metric bounds are written as EEE's ``"Infinity"`` / ``"-Infinity"`` strings.
  ``source_organization_name`` is the job's ``--source-organization`` kept in the rows
  (``unknown`` without one). A result whose direction nobody knows (``lower_is_better``
  null) is written ``lower_is_better: false`` (EEE requires it) with
  ``additional_details.lower_is_better: "unknown"``.
- **Sample lines** (``InstanceLevelEvaluationLog``): every EEE field of the row
  (:data:`SAMPLE_FIELDS`; provenance and other columns are left out) with explicit nulls.
  Rows without a HELM score (``evaluation.score`` null: HELM computed none) are not
  samples and are left out (EEE requires a number). ``is_correct`` is null for continuous
  metrics in the dataset; EEE requires a boolean, so such a line says ``false`` with
  metadata ``is_correct: "not applicable"``.
  ``model_id`` is the record's (:class:`eee_layout.RecordLayout`) so it equals the
  aggregate's ``model_info.id``. String maps stored as ``[{key, value}]`` become objects.
  One compact JSON object per line, UTF-8, LF-terminated. Lines are built a record batch at
  a time (:func:`sample_lines`): column-wise ``to_pylist`` of the EEE columns only.

Sample lines are encoded by msgspec (compact, keys in insertion order); the aggregate by
the stdlib's C encoder, re-indented by ``msgspec.json.format``. Numbers are checked on the
way out: JSON has no NaN or infinity (and msgspec would write them as null), so a non-finite
value raises ``ValueError`` instead (vectorized over each Arrow batch for sample lines).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from helmproc.engine.export.layout import RecordLayout

SOURCE_NAME = "HELM"
SOURCE_TYPE = "evaluation_run"
UNKNOWN_ORGANIZATION = "unknown"
IS_CORRECT_NOTE = ("is_correct", "not applicable")
UNKNOWN_DIRECTION = ("lower_is_better", "unknown")
EVALUATOR_RELATIONSHIP = "third_party"
EVAL_LIBRARY = {"name": "helm", "version": "unknown"}
MODEL_PLACEHOLDERS = {"deployment_type": "unknown", "model_availability": "unknown"}
SAMPLES_FORMAT = "jsonl"
HASH_ALGORITHM = "sha256"

# The top-level fields of EEE's InstanceLevelEvaluationLog. Only these columns of the
# instances table become sample fields: provenance (``helm_*``) and any column added later
# that EEE does not define are left out (the schema forbids additional properties).
SAMPLE_FIELDS = frozenset(
    {
        "schema_version", "evaluation_id", "model_id", "evaluation_name",
        "evaluation_result_id", "sample_id", "sample_hash", "interaction_type", "input",
        "output", "messages", "answer_attribution", "evaluation", "token_usage",
        "performance", "error", "metadata",
    }
)  # fmt: skip

JsonDict = dict[str, Any]

# msgspec: ~2x faster than json.dumps for sample lines; keeps key order, writes UTF-8, but
# writes NaN and infinity as null, hence the explicit finiteness checks.
_ENCODER = msgspec.json.Encoder()


def string_map(pairs: Sequence[Mapping[str, Any]] | None) -> dict[str, str] | None:
    """A stored ``[{key, value}]`` list as an object (None stays None; first key wins)."""
    if pairs is None:
        return None
    result: dict[str, str] = {}
    for pair in pairs:
        result.setdefault(str(pair["key"]), "" if pair["value"] is None else str(pair["value"]))
    return result


def _number_map(pairs: Sequence[Mapping[str, Any]] | None) -> dict[str, float] | None:
    if not pairs:
        return None
    result: dict[str, float] = {}
    for pair in pairs:
        result.setdefault(str(pair["key"]), pair["value"])
    return result


def _without_none(values: Mapping[str, Any]) -> JsonDict:
    return {k: v for k, v in values.items() if v is not None}


def _bound(value: float | None) -> float | str | None:
    """A metric bound in EEE's wire form (infinities as strings, NaN as absent)."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _detail_text(value: Any) -> str:
    return "" if value is None else str(value)


def _generation_config(config: Mapping[str, Any] | None) -> JsonDict | None:
    if config is None:
        return None
    args = _without_none(config.get("generation_args") or {})
    if "max_tokens" in args and args["max_tokens"] < 1:  # EEE: max_tokens >= 1
        del args["max_tokens"]
    return _without_none(
        {
            "generation_args": args,
            "additional_details": string_map(config.get("additional_details")) or None,
        }
    )


def evaluation_result(row: Mapping[str, Any]) -> JsonDict:
    """One ``evaluation_results`` item from one ``evaluations`` row."""
    source = dict(row["source_data"])
    details = source.get("additional_details")
    source["additional_details"] = _without_none(details) if details else None
    score_details = {
        "count": _detail_text(row["count"]),
        "stddev_across_train_trials": _detail_text(row["stddev"]),
        "split": _detail_text(row["split"]),
        "perturbation": _detail_text(row["perturbation"]),
    }
    if row["sub_split"] is not None:
        score_details["sub_split"] = row["sub_split"]
    if row.get("perturbation_description") is not None:
        score_details["perturbation_description"] = row["perturbation_description"]
    if row.get("perturbation_computed_on") is not None:
        score_details["perturbation_computed_on"] = row["perturbation_computed_on"]
    metric_config = {
        "evaluation_description": row["metric_name"],
        "metric_id": row["metric_id"],
        "metric_name": row["metric_name"],
        "metric_kind": row["metric_kind"],
        "metric_unit": row["metric_unit"],
        "metric_parameters": _number_map(row["metric_parameters"]),
        "lower_is_better": bool(row["lower_is_better"]),
        "score_type": row["score_type"],
        "min_score": _bound(row["min_score"]),
        "max_score": _bound(row["max_score"]),
        "additional_details": string_map(row["metric_additional_details"]) or None,
    }
    if row["lower_is_better"] is None:
        key, value = UNKNOWN_DIRECTION
        metric_config["additional_details"] = {
            **(metric_config["additional_details"] or {}),
            key: value,
        }
    uncertainty = _without_none({"num_samples": row["num_samples"]})
    return _without_none(
        {
            "evaluation_result_id": row["evaluation_result_id"],
            "evaluation_name": row["evaluation_name"],
            "source_data": _without_none(source),
            "evaluation_timestamp": row["evaluation_timestamp"] or row["retrieved_timestamp"],
            "metric_config": _without_none(metric_config),
            "score_details": _without_none(
                {
                    "score": row["score"],
                    "details": score_details,
                    "uncertainty": uncertainty or None,
                }
            ),
            "generation_config": _generation_config(row["generation_config"]),
        }
    )


def _provenance(row: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: row[key]
        for key in ("helm_project", "helm_release", "helm_suite", "helm_run")
        if row[key] is not None
    }


def _model_info(first: Mapping[str, Any], layout: RecordLayout) -> JsonDict:
    deployment = first["model_deployment"]
    details = dict(MODEL_PLACEHOLDERS)
    if deployment:
        details["helm_model_deployment"] = deployment
    if layout.helm_model_id is not None:
        details["helm_model_id"] = layout.helm_model_id
    platform = deployment.partition("/")[0] if deployment and "/" in deployment else None
    return _without_none(
        {
            "name": first["model_name"],
            "id": layout.model_id,
            "developer": layout.model_developer,
            "inference_platform": platform or None,
            "additional_details": details,
        }
    )


def aggregate_record(
    rows: Sequence[Mapping[str, Any]],
    layout: RecordLayout,
    samples: JsonDict | None,
) -> JsonDict:
    """The EvaluationLog of one run from its ``evaluations`` rows (at least one).

    ``samples`` is the ``detailed_evaluation_results`` object, or None when the run has no
    sample lines (EEE refuses an empty companion file, so none is written or declared).
    """
    first = rows[0]
    return _without_none(
        {
            "schema_version": first["schema_version"],
            "evaluation_id": first["evaluation_id"],
            "evaluation_timestamp": first["evaluation_timestamp"],
            "retrieved_timestamp": first["retrieved_timestamp"],
            "source_metadata": {
                "source_name": SOURCE_NAME,
                "source_type": SOURCE_TYPE,
                "source_organization_name": first.get("source_organization")
                or UNKNOWN_ORGANIZATION,
                "evaluator_relationship": EVALUATOR_RELATIONSHIP,
                "additional_details": _provenance(first),
            },
            "eval_library": dict(EVAL_LIBRARY),
            "model_info": _model_info(first, layout),
            "evaluation_results": [evaluation_result(r) for r in rows],
            "detailed_evaluation_results": samples,
        }
    )


def samples_reference(layout: RecordLayout, checksum: str, total_rows: int) -> JsonDict:
    """The aggregate's ``detailed_evaluation_results`` for the run's samples file."""
    return {
        "format": SAMPLES_FORMAT,
        "file_path": layout.samples_path,
        "hash_algorithm": HASH_ALGORITHM,
        "checksum": checksum,
        "total_rows": total_rows,
    }


def sample_record(row: Mapping[str, Any], model_id: str) -> JsonDict:
    """One sample line from one ``instances`` row (rules in the module docstring)."""
    record = {k: v for k, v in row.items() if k in SAMPLE_FIELDS}
    return _as_sample(record, model_id)


def _as_sample(record: JsonDict, model_id: str) -> JsonDict:
    """Rewrite, in place, the few fields of an instances row (only SAMPLE_FIELDS kept) that
    differ in EEE; every other value passes through unchanged."""
    if "model_id" in record:
        record["model_id"] = model_id
    if record.get("evaluation_result_id", "") is None:
        del record["evaluation_result_id"]
    if record.get("metadata") is not None:
        record["metadata"] = string_map(record["metadata"])
    evaluation = record.get("evaluation")
    if evaluation is not None and evaluation.get("is_correct", False) is None:
        record["evaluation"] = {**evaluation, "is_correct": False}
        key, value = IS_CORRECT_NOTE
        record["metadata"] = {**(record.get("metadata") or {}), key: value}
    if isinstance(record.get("messages"), str):
        record["messages"] = json.loads(record["messages"])  # stored as JSON text if present
    performance = record.get("performance")
    if performance is not None and performance.get("additional_details") is not None:
        details = string_map(performance["additional_details"])
        record["performance"] = {**performance, "additional_details": details}
    return record


def non_finite_fields(data: pa.RecordBatch | pa.Table) -> list[str]:
    """Dotted names of float fields holding NaN or infinity (nulls are fine), vectorized."""
    found: list[str] = []

    def walk(name: str, values: pa.Array) -> None:
        kind = values.type
        if pa.types.is_floating(kind):
            if not pc.all(pc.fill_null(pc.is_finite(values), True)).as_py():
                found.append(name)
        elif pa.types.is_struct(kind):
            for child, field in zip(values.flatten(), kind, strict=True):
                walk(f"{name}.{field.name}", child)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            walk(name, values.flatten())

    for field, column in zip(data.schema, data.columns, strict=True):
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        for chunk in chunks:
            walk(field.name, chunk)
    return sorted(set(found))


def sample_lines(batch: pa.RecordBatch, model_id: str) -> list[bytes]:
    """The sample lines of a batch of ``instances`` rows, each compact JSON + LF.

    Same records as :func:`sample_record` row by row, with columns converted to Python
    column-wise. Raises ValueError if a float field is NaN or infinite (JSON has neither).
    """
    scored = pc.is_valid(pc.struct_field(batch.column("evaluation"), "score"))
    if not pc.all(scored).as_py():
        batch = batch.filter(scored)  # rows HELM computed no score for are not samples
        if batch.num_rows == 0:
            return []
    bad = non_finite_fields(batch)
    if bad:
        raise ValueError(f"non-finite number in {', '.join(bad)}")
    names = [n for n in batch.schema.names if n in SAMPLE_FIELDS]
    n_rows = batch.num_rows
    columns = [
        [None] * n_rows if name == "model_id" else batch.column(name).to_pylist() for name in names
    ]  # model_id is replaced by the record's id anyway
    encode = _ENCODER.encode
    return [
        encode(_as_sample(dict(zip(names, values, strict=True)), model_id)) + b"\n"
        for values in zip(*columns, strict=True)
    ]


def aggregate_bytes(record: JsonDict) -> bytes:
    """The aggregate file's bytes: indent 2, UTF-8, final LF. NaN or infinity raise
    ValueError (stdlib json checks them in C; msgspec re-indents)."""
    compact = json.dumps(record, ensure_ascii=False, allow_nan=False)
    return msgspec.json.format(compact.encode("utf-8"), indent=2) + b"\n"
