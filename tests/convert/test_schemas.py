"""Tests of the Arrow schemas and the runs table (engine/convert/schemas.py): the tables have
the contract schemas, round-trip through Parquet, and load with ``datasets``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq

from helmproc.engine.convert.converter import ConvertedRun
from helmproc.engine.convert.schemas import (
    EVALUATIONS_SCHEMA,
    INSTANCES_SCHEMA,
    RUNS_SCHEMA,
    RunRow,
    runs_table,
)
from helmproc.engine.facts import RunRef
from tests.convert.helm_runs import (
    FIXTURE_ROOT,
    REAL_RUN_DIRS,
    VARIANTS,
    convert,
    parquet_bytes,
    ref_for,
)


def test_tables_have_the_contract_schemas(converted: ConvertedRun) -> None:
    assert converted.instances.schema.equals(INSTANCES_SCHEMA)
    assert converted.evaluations.schema.equals(EVALUATIONS_SCHEMA)
    for table in (converted.instances, converted.evaluations):
        table.validate(full=True)
        assert table.column("helm_project").to_pylist() == ["testproj"] * table.num_rows


def test_parquet_round_trip(converted: ConvertedRun) -> None:
    for table in (converted.instances, converted.evaluations):
        assert pq.read_table(io.BytesIO(parquet_bytes(table))).equals(table)


# --- runs table -----------------------------------------------------------------------------


def test_runs_table() -> None:
    ok = RunRow(
        ref_for(REAL_RUN_DIRS[0]), "simple/model1", "simple1", "generation", 10, 30, "ok", None
    )
    failed = RunRow(
        RunRef("p", "s", "r", None, "x"), None, None, None, 0, 0, "failed", "boom",
        converted_at="1790000000",
    )
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
        "n_evaluations": 0,
        "source_sizes": None,
        "source_crc32c": None,
        "converted_at": "1790000000",
    }
    assert runs_table([]).num_rows == 0


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
