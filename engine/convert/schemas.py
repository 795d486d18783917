"""Arrow schemas of the three output tables, and the builder of the ``runs`` table.

Every table starts with the same provenance columns (``helm_project``, ``helm_release``,
``helm_suite``, ``helm_run``), then the EEE 0.3.0 fields as columns, nested as EEE nests them
(``input``, ``output``, ``evaluation``, ... are structs). Columns that are always filled are
declared non-nullable at the top level; everything HELM or EEE may leave out is nullable.

EEE's string-keyed objects (``additional_details``, ``metadata``, ``metric_parameters``) are
stored as lists of ``{key, value}`` structs (:data:`STRING_MAP`, :data:`NUMBER_MAP`), in the
order the converter emits them, not as Arrow ``map`` columns: that is the physical layout of a
Parquet MAP, but ``datasets`` (5.x) cannot load ``map`` columns, and the Hub viewer uses it.

The schemas are the contract between the converter, the shard writer and ``export-eee``;
changing one is a dataset format change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from helmproc.engine.facts import RunRef

STRING_MAP = pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))
NUMBER_MAP = pa.list_(pa.struct([("key", pa.string()), ("value", pa.float64())]))

PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("helm_project", pa.string(), nullable=False),
    pa.field("helm_release", pa.string()),
    pa.field("helm_suite", pa.string(), nullable=False),
    pa.field("helm_run", pa.string(), nullable=False),
)

INPUT_TYPE = pa.struct(
    [
        ("raw", pa.string()),
        ("formatted", pa.string()),
        ("reference", pa.list_(pa.string())),
        ("choices", pa.list_(pa.string())),
    ]
)
OUTPUT_TYPE = pa.struct(
    [("raw", pa.list_(pa.string())), ("reasoning_trace", pa.list_(pa.string()))]
)
ANSWER_ATTRIBUTION_TYPE = pa.list_(
    pa.struct(
        [
            ("turn_idx", pa.int32()),
            ("source", pa.string()),
            ("extracted_value", pa.string()),
            ("extraction_method", pa.string()),
            ("is_terminal", pa.bool_()),
        ]
    )
)
EVALUATION_TYPE = pa.struct(
    [
        ("score", pa.float64()),
        ("is_correct", pa.bool_()),
        ("num_turns", pa.int32()),
        ("tool_calls_count", pa.int32()),
    ]
)
TOKEN_USAGE_TYPE = pa.struct(
    [
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("input_tokens_cache_write", pa.int64()),
        ("input_tokens_cache_read", pa.int64()),
        ("reasoning_tokens", pa.int64()),
    ]
)
PERFORMANCE_TYPE = pa.struct(
    [
        ("latency_ms", pa.float64()),
        ("time_to_first_token_ms", pa.float64()),
        ("generation_time_ms", pa.float64()),
        ("additional_details", STRING_MAP),
    ]
)

INSTANCES_SCHEMA = pa.schema(
    [
        *PROVENANCE_FIELDS,
        pa.field("helm_perturbation", pa.string()),
        pa.field("helm_perturbation_description", pa.string()),
        pa.field("helm_train_trial", pa.int32(), nullable=False),
        pa.field("helm_split", pa.string()),
        pa.field("schema_version", pa.string(), nullable=False),
        pa.field("evaluation_id", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("evaluation_name", pa.string(), nullable=False),
        pa.field("evaluation_result_id", pa.string()),
        pa.field("metric_name", pa.string()),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("sample_hash", pa.string()),
        pa.field("interaction_type", pa.string(), nullable=False),
        pa.field("input", INPUT_TYPE, nullable=False),
        pa.field("output", OUTPUT_TYPE),
        pa.field("messages", pa.string()),
        pa.field("answer_attribution", ANSWER_ATTRIBUTION_TYPE, nullable=False),
        pa.field("evaluation", EVALUATION_TYPE, nullable=False),
        pa.field("token_usage", TOKEN_USAGE_TYPE),
        pa.field("performance", PERFORMANCE_TYPE),
        pa.field("error", pa.string()),
        pa.field("metadata", STRING_MAP),
    ]
)
"""One row per (instance, perturbation, train trial) x kept metric; key: provenance +
(sample_id, helm_perturbation_description, helm_train_trial, evaluation_result_id).
``helm_perturbation`` is the perturbation's name (for filtering), ``helm_perturbation_description``
its whole description as canonical JSON (``helm.perturbations``), which tells same-named
variants apart. ``metric_name`` is the HELM metric of the row (null on a row HELM scored with
no kept metric). ``metadata`` (EEE's string map, null when empty) carries the HELM facts EEE
has no field for: ``sub_split``, ``media`` (e.g. ``"image/png x2"``), ``annotations`` (JSON
text), ``encrypted`` (``"true"`` while texts are still ``[encrypted_text_N]`` placeholders)
and ``score_missing`` (why a row has no score); see ``instance_rows``."""

SOURCE_DATA_TYPE = pa.struct(
    [
        ("dataset_name", pa.string()),
        ("source_type", pa.string()),
        ("samples_number", pa.int64()),
        ("sample_ids", pa.list_(pa.string())),
        (
            "additional_details",
            pa.struct([("scenario_name", pa.string()), ("scenario_args", pa.string())]),
        ),
    ]
)
GENERATION_CONFIG_TYPE = pa.struct(
    [
        (
            "generation_args",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("top_k", pa.float64()),
                    ("max_tokens", pa.int64()),
                    ("reasoning", pa.bool_()),
                ]
            ),
        ),
        ("additional_details", STRING_MAP),
    ]
)

EVALUATIONS_SCHEMA = pa.schema(
    [
        *PROVENANCE_FIELDS,
        pa.field("schema_version", pa.string(), nullable=False),
        pa.field("evaluation_id", pa.string(), nullable=False),
        pa.field("retrieved_timestamp", pa.string(), nullable=False),
        pa.field("evaluation_timestamp", pa.string()),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_developer", pa.string()),
        pa.field("model_deployment", pa.string()),
        pa.field("evaluation_name", pa.string(), nullable=False),
        pa.field("evaluation_result_id", pa.string(), nullable=False),
        pa.field("metric_name", pa.string(), nullable=False),
        pa.field("metric_id", pa.string(), nullable=False),
        pa.field("metric_kind", pa.string()),
        pa.field("metric_unit", pa.string()),
        pa.field("metric_parameters", NUMBER_MAP),
        pa.field("metric_additional_details", STRING_MAP),
        pa.field("score_type", pa.string()),
        pa.field("split", pa.string()),
        pa.field("sub_split", pa.string()),
        pa.field("perturbation", pa.string()),
        pa.field("perturbation_description", pa.string()),
        pa.field("perturbation_computed_on", pa.string()),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("count", pa.int64()),
        pa.field("stddev", pa.float64()),
        pa.field("num_samples", pa.int64()),
        pa.field("lower_is_better", pa.bool_()),
        pa.field("min_score", pa.float64()),
        pa.field("max_score", pa.float64()),
        pa.field("source_data", SOURCE_DATA_TYPE, nullable=False),
        pa.field("generation_config", GENERATION_CONFIG_TYPE),
        pa.field("source_organization", pa.string()),
    ]
)
"""One row per EEE aggregate result (a kept metric's stats.json entries for one split,
perturbation and computed_on, merged over sub-splits as helm-summarize does; plus one row
per sub-split); key: provenance + evaluation_result_id. ``lower_is_better`` is null when
neither the schema nor the built-in table knows the direction. ``source_organization`` is
the job's ``--source-organization`` (null: unknown)."""

RUNS_SCHEMA = pa.schema(
    [
        *PROVENANCE_FIELDS,
        pa.field("model", pa.string()),
        pa.field("scenario", pa.string()),
        pa.field("method", pa.string()),
        pa.field("n_instances", pa.int64(), nullable=False),
        pa.field("n_rows", pa.int64(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("metric_source", pa.string()),
        pa.field("n_evaluations", pa.int64(), nullable=False),
        pa.field("source_sizes", pa.string()),
        pa.field("source_crc32c", pa.string()),
        pa.field("converted_at", pa.string(), nullable=False),
    ]
)
"""One row per HELM run (ok or failed); key: provenance. Also the manifest of published runs
(the destination's ledger): ``n_rows`` / ``n_evaluations`` are the run's rows in ``instances``
and ``evaluations``; ``source_sizes`` (``name=bytes`` of each input file, sorted, ``;``-joined)
and ``source_crc32c`` (crc32c of those files' bytes in that order, hex) say what the run was
converted from, so a later job can tell a changed source; ``converted_at`` is the converting
job's timestamp (Unix seconds as text). A failed run's row has no sizes.
``metric_source`` says what decided the run's metrics: ``schema:<file>`` (the release's or
suite's schema.json), ``builtin`` (helmproc's table of HELM's published headlines) or
``core`` (the EEE core list only); null for a failed run."""

RELEASES_SCHEMA = pa.schema(
    [
        pa.field("helm_project", pa.string(), nullable=False),
        pa.field("helm_release", pa.string(), nullable=False),
        pa.field("helm_suite", pa.string(), nullable=False),
        pa.field("helm_run", pa.string(), nullable=False),
    ]
)
"""One row per (project, release, suite, run) a job read in release mode: which runs each
release lists. A run listed by several releases has one row per release, while its rows in the
other tables exist once (with ``helm_release`` = the release it was first converted under)."""


@dataclass(frozen=True)
class RunRow:
    """One row of the ``runs`` table: a run's identity, what it is, and how converting it went.

    ``outcome`` is ``"ok"`` or ``"failed"``; ``error`` is the failure reason (None when ok).
    """

    ref: RunRef
    model: str | None
    scenario: str | None
    method: str | None
    n_instances: int
    n_rows: int
    outcome: str
    error: str | None
    metric_source: str | None = None
    n_evaluations: int = 0
    source_sizes: str | None = None
    source_crc32c: str | None = None
    converted_at: str = ""


def table_by_name(columns: Mapping[str, pa.Array | pa.ChunkedArray], schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from columns given by name: every column of the schema exactly
    once, in the schema's order whatever the mapping's order, and nothing else (ValueError
    otherwise). Tables are built this way, never by position, so two columns of one type
    cannot trade places unnoticed."""
    names = schema.names
    missing = [name for name in names if name not in columns]
    unknown = sorted(set(columns) - set(names))
    if missing or unknown:
        raise ValueError(f"columns do not match the schema: missing {missing}, unknown {unknown}")
    return pa.Table.from_arrays([columns[name] for name in names], schema=schema)


def struct_by_name(
    children: Mapping[str, pa.Array], type_: pa.StructType, mask: pa.Array | None = None
) -> pa.StructArray:
    """A struct array of ``type_`` from its children given by name (same checks as
    :func:`table_by_name`)."""
    names = [field.name for field in type_]
    missing = [name for name in names if name not in children]
    unknown = sorted(set(children) - set(names))
    if missing or unknown:
        raise ValueError(f"fields do not match the struct: missing {missing}, unknown {unknown}")
    return pa.StructArray.from_arrays(
        [children[name] for name in names], fields=list(type_), mask=mask
    )


def provenance_columns(ref: RunRef, n_rows: int) -> dict[str, pa.Array]:
    """The four provenance columns for ``n_rows`` rows of one run, by name."""
    values = (ref.project, ref.release, ref.suite, ref.run_name)
    return {
        field.name: pa.repeat(pa.scalar(value, type=pa.string()), n_rows)
        for field, value in zip(PROVENANCE_FIELDS, values, strict=True)
    }


def runs_table(rows: Sequence[RunRow]) -> pa.Table:
    """The ``runs`` table for ``rows``, in the order given."""
    columns: dict[str, pa.Array] = {
        "helm_project": pa.array([r.ref.project for r in rows], type=pa.string()),
        "helm_release": pa.array([r.ref.release for r in rows], type=pa.string()),
        "helm_suite": pa.array([r.ref.suite for r in rows], type=pa.string()),
        "helm_run": pa.array([r.ref.run_name for r in rows], type=pa.string()),
        "model": pa.array([r.model for r in rows], type=pa.string()),
        "scenario": pa.array([r.scenario for r in rows], type=pa.string()),
        "method": pa.array([r.method for r in rows], type=pa.string()),
        "n_instances": pa.array([r.n_instances for r in rows], type=pa.int64()),
        "n_rows": pa.array([r.n_rows for r in rows], type=pa.int64()),
        "outcome": pa.array([r.outcome for r in rows], type=pa.string()),
        "error": pa.array([r.error for r in rows], type=pa.string()),
        "metric_source": pa.array([r.metric_source for r in rows], type=pa.string()),
        "n_evaluations": pa.array([r.n_evaluations for r in rows], type=pa.int64()),
        "source_sizes": pa.array([r.source_sizes for r in rows], type=pa.string()),
        "source_crc32c": pa.array([r.source_crc32c for r in rows], type=pa.string()),
        "converted_at": pa.array([r.converted_at for r in rows], type=pa.string()),
    }
    return table_by_name(columns, RUNS_SCHEMA)


def releases_table(rows: Sequence[tuple[str, str, str, str]]) -> pa.Table:
    """The ``releases`` table for (project, release, suite, run) tuples, sorted, deduplicated."""
    unique = sorted(set(rows))
    names = ("helm_project", "helm_release", "helm_suite", "helm_run")
    columns = {n: pa.array([r[i] for r in unique], type=pa.string()) for i, n in enumerate(names)}
    return table_by_name(columns, RELEASES_SCHEMA)
