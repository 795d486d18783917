"""EEE records from real converted rows: no invented scores, unknowns said as unknown.

Rows come from converting fixture runs (the perplexity-only ``simple1`` run has rows HELM
computed no score for; ``simple_mcqa`` has continuous and indicator metrics); expected
values are read from those rows and the HELM JSON.
"""

from __future__ import annotations

import json

import pyarrow as pa

from helmproc.engine.convert.converter import convert_run
from helmproc.engine.export.layout import record_layout
from helmproc.engine.export.records import aggregate_record, sample_lines
from helmproc.engine.facts import RunRef
from tests.convert.helm_runs import FIXTURE_ROOT, JOB_TIMESTAMP, read

MCQA = FIXTURE_ROOT / "runs" / "v1.1.0" / "simple_mcqa:model=simple_model1"
SIMPLE1 = FIXTURE_ROOT / "runs" / "v1.0.0" / "simple1:model=simple_model1"


def convert(run_dir, organization=None):  # type: ignore[no-untyped-def]
    ref = RunRef("p", run_dir.parent.name, run_dir.name, None, run_dir.name)
    return convert_run(run_dir, ref, JOB_TIMESTAMP, source_organization=organization)


def layout_of(row):  # type: ignore[no-untyped-def]
    return record_layout(
        "p",
        "s",
        "r",
        evaluation_name=row["evaluation_name"],
        model_id=row["model_id"],
        model_developer=row["model_developer"],
        model_deployment=row["model_deployment"],
    )


def lines_of(table: pa.Table, model_id: str) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for batch in table.to_batches():
        out += [json.loads(line) for line in sample_lines(batch, model_id)]
    return out


def test_rows_without_a_helm_score_are_not_samples() -> None:
    run = convert(SIMPLE1)
    assert run.instances.num_rows == len(read(SIMPLE1, "per_instance_stats.json"))
    assert lines_of(run.instances, "simple/model1") == []


def test_unknown_is_correct_is_written_false_with_a_note() -> None:
    run = convert(MCQA)
    rows = run.instances.to_pylist()
    lines = lines_of(run.instances, "simple/model1")
    assert len(lines) == len(rows)  # every row has a HELM score here
    for line, row in zip(lines, rows, strict=True):
        judged = row["evaluation"]["is_correct"]
        if judged is None:
            assert line["evaluation"]["is_correct"] is False
            assert line["metadata"]["is_correct"] == "not applicable"
        else:
            assert line["evaluation"]["is_correct"] is judged
            assert "is_correct" not in (line["metadata"] or {})


def test_aggregate_carries_organization_sample_ids_and_families() -> None:
    run = convert(MCQA, organization="Example Lab")
    rows = run.evaluations.to_pylist()
    record = aggregate_record(rows, layout_of(rows[0]), None)
    assert record["source_metadata"]["source_organization_name"] == "Example Lab"
    instance_ids = sorted(
        {s["instance"]["id"] for s in read(MCQA, "scenario_state.json")["request_states"]}
    )
    for result in record["evaluation_results"]:
        assert result["source_data"]["sample_ids"] == instance_ids
        config = result["metric_config"]
        assert config["metric_kind"] == "accuracy"  # exact-match family only in this run
        assert isinstance(config["lower_is_better"], bool)
    unknown = convert(MCQA).evaluations.to_pylist()
    record = aggregate_record(unknown, layout_of(unknown[0]), None)
    assert record["source_metadata"]["source_organization_name"] == "unknown"


def test_unknown_direction_is_said_unknown() -> None:
    run = convert(MCQA)
    rows = run.evaluations.to_pylist()
    rows = [{**rows[0], "lower_is_better": None, "metric_kind": None}]
    config = aggregate_record(rows, layout_of(rows[0]), None)["evaluation_results"][0][
        "metric_config"
    ]
    assert config["lower_is_better"] is False
    assert config["additional_details"]["lower_is_better"] == "unknown"
    assert "metric_kind" not in config  # absent, not a made-up family
