"""What the dataset is for, measured: the same questions asked of helmproc's Parquet shards and
of ``helmproc export-eee``'s JSONL, with the same engines.

    pip install -e '.[bench]'                        # duckdb, polars
    python bench/reader_bench.py DATASET [--export DIR] [--repeat 3]

``DATASET`` is a folder written by ``helmproc run``. The EEE export of it is written with
``helmproc export-eee`` into ``--export`` (default: a temporary folder, deleted afterwards).
Then DuckDB and Polars each answer, on the ``instances`` shards and on the ``*_samples.jsonl``
files:

1. **scores**: the mean score per (model, scenario, metric): ``model_id``, ``evaluation_name``,
   ``evaluation_result_id`` (the headline metric is one of each scenario's metrics);
2. **one slice**: every row, all columns, of one scenario for one model (the scenario and model
   of the first row of the shards, materialised in the engine's own format);
3. **full scan**: every row: the count, the summed length of ``input.raw`` (the prompts, the
   biggest column) and the mean score.

Each query runs ``--repeat`` times (the file cache is warm after the first; fewer once the
runs add up to 20 s) and the median is reported, with bytes per instance row of each format
(all ``instances`` shards or all JSONL files, over their rows). Engines use their default
threads. Results of a query must agree between formats (row count, score sums to 1e-9), or the
benchmark stops. Prints a table and a JSON report (``--json``). Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

QUERIES = ("scores", "slice", "scan")
ENGINES = ("duckdb", "polars")
PATIENCE_S = 20.0


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if ".tmp-" not in p.name)


def export(dataset: Path, dest: Path) -> None:
    command = [sys.executable, "-m", "helmproc.cli", "export-eee", "--from", str(dataset),
               "--to", str(dest), "--quiet"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


# --- the questions, per engine and format ------------------------------------------------------


def duckdb_queries(parquet: list[Path], jsonl: list[Path]) -> dict[str, Callable[..., Any]]:
    import duckdb

    con = duckdb.connect()
    sources = {
        "parquet": f"read_parquet({[str(p) for p in parquet]!r})",
        "jsonl": f"read_ndjson({[str(p) for p in jsonl]!r}, maximum_object_size=1073741824)",
    }

    def scores(fmt: str) -> Any:
        return con.sql(
            f"SELECT model_id, evaluation_name, evaluation_result_id, avg(evaluation.score) AS s,"
            f" count(*) AS n FROM {sources[fmt]} GROUP BY ALL ORDER BY ALL"
        ).fetchall()

    def one_slice(fmt: str, model: str, scenario: str) -> Any:
        return con.sql(
            f"SELECT * FROM {sources[fmt]} WHERE model_id = $model AND evaluation_name = $scenario",
            params={"model": model, "scenario": scenario},
        ).to_arrow_table()

    def scan(fmt: str) -> Any:
        return con.sql(
            f"SELECT count(*), sum(length(input.raw)), avg(evaluation.score) FROM {sources[fmt]}"
        ).fetchall()

    return {"scores": scores, "slice": one_slice, "scan": scan}


def polars_queries(parquet: list[Path], jsonl: list[Path]) -> dict[str, Callable[..., Any]]:
    import polars as pl

    def frame(fmt: str) -> Any:
        if fmt == "parquet":
            return pl.scan_parquet([str(p) for p in parquet])
        return pl.scan_ndjson([str(p) for p in jsonl], infer_schema_length=None)

    def scores(fmt: str) -> Any:
        out = (
            frame(fmt)
            .group_by("model_id", "evaluation_name", "evaluation_result_id")
            .agg(pl.col("evaluation").struct.field("score").mean().alias("s"), pl.len().alias("n"))
            .sort("model_id", "evaluation_name", "evaluation_result_id")
            .collect()
        )
        return out.rows()

    def one_slice(fmt: str, model: str, scenario: str) -> Any:
        return (
            frame(fmt)
            .filter((pl.col("model_id") == model) & (pl.col("evaluation_name") == scenario))
            .collect()
        )

    def scan(fmt: str) -> Any:
        out = (
            frame(fmt)
            .select(
                pl.len(),
                pl.col("input").struct.field("raw").str.len_bytes().sum(),
                pl.col("evaluation").struct.field("score").mean(),
            )
            .collect()
        )
        return out.rows()

    return {"scores": scores, "slice": one_slice, "scan": scan}


# --- measuring ---------------------------------------------------------------------------------


def _timed(call: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """Median of up to ``repeat`` runs; stops repeating once they took ``PATIENCE_S`` (a
    JSONL query of tens of seconds is measured once or twice, not ``repeat`` times)."""
    times: list[float] = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
        if sum(times) >= PATIENCE_S:
            break
    return statistics.median(times), times, result


def _n_rows(result: Any) -> int:
    return int(getattr(result, "num_rows", None) or getattr(result, "height", 0) or len(result))


def _agree(query: str, a: Any, b: Any) -> bool:
    """Same answer from both formats (scores: same groups and means; slice: same row count)."""
    if query == "slice":
        return _n_rows(a) == _n_rows(b)
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, float) or isinstance(y, float):
                if x is None or y is None or abs(x - y) > 1e-9 * max(1.0, abs(x)):
                    return False
            elif x != y:
                return False
    return True


def first_slice(parquet: list[Path]) -> tuple[str, str]:
    import pyarrow.parquet as pq

    row = pq.read_table(parquet[0], columns=["model_id", "evaluation_name"]).slice(0, 1)
    return row["model_id"][0].as_py(), row["evaluation_name"][0].as_py()


def bench(dataset: Path, export_dir: Path, repeat: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    parquet = _files(dataset / "instances", "*.parquet")
    if not any(export_dir.rglob("*_samples.jsonl")):
        started = time.perf_counter()
        export(dataset, export_dir)
        print(f"export-eee: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    jsonl = _files(export_dir, "*_samples.jsonl")
    n_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parquet)
    parquet_bytes = sum(p.stat().st_size for p in parquet)
    jsonl_bytes = sum(p.stat().st_size for p in jsonl)
    model, scenario = first_slice(parquet)
    report: dict[str, Any] = {
        "rows": n_rows,
        "parquet": {"files": len(parquet), "bytes": parquet_bytes,
                    "bytes_per_row": parquet_bytes / n_rows},
        "jsonl": {"files": len(jsonl), "bytes": jsonl_bytes, "bytes_per_row": jsonl_bytes / n_rows},
        "slice": {"model_id": model, "evaluation_name": scenario},
        "queries": {},
    }  # fmt: skip
    makers = {"duckdb": duckdb_queries, "polars": polars_queries}
    for engine in ENGINES:
        queries = makers[engine](parquet, jsonl)
        for name in QUERIES:
            args = (model, scenario) if name == "slice" else ()
            results = {}
            entry: dict[str, Any] = {}
            query = queries[name]
            for fmt in ("parquet", "jsonl"):
                median, times, results[fmt] = _timed(
                    lambda q=query, f=fmt, a=args: q(f, *a), repeat
                )
                entry[fmt] = {"median_s": median, "runs_s": times}
            if not _agree(name, results["parquet"], results["jsonl"]):
                raise SystemExit(f"{engine} {name}: Parquet and JSONL answers differ")
            entry["rows_out"] = _n_rows(results["parquet"])
            entry["speedup"] = entry["jsonl"]["median_s"] / entry["parquet"]["median_s"]
            report["queries"][f"{engine} {name}"] = entry
            print(
                f"  {engine:<7} {name:<7} Parquet {entry['parquet']['median_s'] * 1e3:8.1f} ms"
                f"  JSONL {entry['jsonl']['median_s'] * 1e3:9.1f} ms  {entry['speedup']:6.1f}x"
                f"  ({entry['rows_out']:,} rows out)",
                file=sys.stderr,
                flush=True,
            )
    return report


def summary(report: dict[str, Any]) -> list[str]:
    lines = [
        f"reader: {report['rows']:,} instance rows; bytes per row: Parquet"
        f" {report['parquet']['bytes_per_row']:,.0f} ({report['parquet']['bytes'] / 1e6:,.0f} MB,"
        f" {report['parquet']['files']} shards), EEE JSONL {report['jsonl']['bytes_per_row']:,.0f}"
        f" ({report['jsonl']['bytes'] / 1e6:,.0f} MB, {report['jsonl']['files']} files)",
    ]
    for key, entry in report["queries"].items():
        lines.append(
            f"  {key:<15} Parquet {entry['parquet']['median_s'] * 1e3:8.1f} ms, JSONL"
            f" {entry['jsonl']['median_s'] * 1e3:9.1f} ms: {entry['speedup']:.1f}x"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a folder written by helmproc run")
    parser.add_argument("--export", type=Path, default=None, help="where export-eee writes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    temp = None
    export_dir = args.export
    if export_dir is None:
        temp = tempfile.mkdtemp(prefix="reader-bench-")
        export_dir = Path(temp)
    try:
        report = bench(args.dataset, export_dir, args.repeat)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else "\n".join(summary(report)))


if __name__ == "__main__":
    main()
