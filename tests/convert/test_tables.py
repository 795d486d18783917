"""Tables are built by column name: two columns of one type cannot trade places unnoticed.

Every value below is distinct, so a builder that put a column under its neighbour's name
(``model`` <-> ``scenario``, ``n_instances`` <-> ``n_rows``, ...) fails the comparison.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from helmproc.engine.convert.schemas import (
    RUNS_SCHEMA,
    RunRow,
    runs_table,
    struct_by_name,
    table_by_name,
)
from helmproc.engine.facts import RunRef


def test_runs_table_puts_every_field_under_its_own_name() -> None:
    row = RunRow(
        RunRef("proj", "suite-1", "run-a", "rel-2", "loc"),
        model="model-m",
        scenario="scenario-s",
        method="method-x",
        n_instances=7,
        n_rows=11,
        outcome="ok",
        error="error-e",
        metric_source="schema:releases/rel-2/schema.json",
        n_evaluations=13,
        source_sizes="stats.json=5",
        source_crc32c="0000abcd",
        converted_at="1790000000",
    )
    assert runs_table([row]).to_pylist() == [
        {
            "helm_project": "proj",
            "helm_release": "rel-2",
            "helm_suite": "suite-1",
            "helm_run": "run-a",
            "model": "model-m",
            "scenario": "scenario-s",
            "method": "method-x",
            "n_instances": 7,
            "n_rows": 11,
            "outcome": "ok",
            "error": "error-e",
            "metric_source": "schema:releases/rel-2/schema.json",
            "n_evaluations": 13,
            "source_sizes": "stats.json=5",
            "source_crc32c": "0000abcd",
            "converted_at": "1790000000",
        }
    ]


def test_table_by_name_follows_the_schema_order_whatever_the_mapping_order() -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("n", pa.int64())])
    columns = {
        "n": pa.array([1], pa.int64()),
        "b": pa.array(["bee"]),
        "a": pa.array(["ay"]),
    }
    assert table_by_name(columns, schema).to_pylist() == [{"a": "ay", "b": "bee", "n": 1}]


@pytest.mark.parametrize(
    "names",
    [("a", "b"), ("a", "b", "n", "extra")],
    ids=["missing column", "unknown column"],
)
def test_table_by_name_refuses_columns_that_do_not_match(names: tuple[str, ...]) -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.string()), ("n", pa.int64())])
    columns = {name: pa.array([1] if name in ("n", "extra") else ["x"]) for name in names}
    with pytest.raises(ValueError, match="do not match"):
        table_by_name(columns, schema)


def test_struct_by_name_follows_the_type_order() -> None:
    type_ = pa.struct([("raw", pa.string()), ("formatted", pa.string())])
    built = struct_by_name({"formatted": pa.array(["f"]), "raw": pa.array(["r"])}, type_)
    assert built.to_pylist() == [{"raw": "r", "formatted": "f"}]
    with pytest.raises(ValueError, match="do not match"):
        struct_by_name({"raw": pa.array(["r"])}, type_)


def test_runs_schema_is_what_runs_table_builds() -> None:
    assert runs_table([]).schema.equals(RUNS_SCHEMA)
