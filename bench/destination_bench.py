"""Benchmark: the destination as the ledger (planning) and compaction throughput.

``planning``: a dataset folder whose ``runs`` table holds ``--runs`` runs (default 50,000) in
groups of ``--group-runs`` (16: a job's default chunk size, never compacted; ``--group-runs
50000`` is one compacted group), each group with its (small) ``instances`` and
``evaluations`` files; a source listing the same runs plus ``--new`` new ones. Each variant
runs in a fresh process (so peak memory is its own) and times ``start_job`` (read the ledger,
plan, journal): against that dataset (plans ``--new`` runs), and against an empty folder
(plans every run: a job's planning without a destination). It prints the seconds, the ledger
read alone, and the peak RSS above the process's baseline after building the source.

``compaction``: ``--groups`` copies of the fixture's converted groups (real shards, chunk size
1) in one folder; times ``helmproc compact`` (in-process ``compact()``) and a plain
``pyarrow.dataset`` rewrite of the same files (read each table, ``write_dataset`` one file per
table), in MB/s of input Parquet bytes.

Not a test: ``python bench/destination_bench.py [planning|compaction|all]``. Everything lives in
a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "benchmark_output"


def build_ledger_dataset(dest: Path, n_runs: int, group_runs: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from helmproc.engine.convert.schemas import (
        EVALUATIONS_SCHEMA,
        INSTANCES_SCHEMA,
        RunRow,
        runs_table,
    )
    from helmproc.engine.dataset_layout import shard_path
    from helmproc.engine.facts import RunRef

    empty_instances = INSTANCES_SCHEMA.empty_table()
    empty_evals = EVALUATIONS_SCHEMA.empty_table()
    for cid, start in enumerate(range(0, n_runs, group_runs)):
        rows = [
            RunRow(
                RunRef("bench", "v1", f"scenario_{i % 97}:model=org_m{i % 53},seed={i}", None, ""),
                f"org/m{i % 53}", f"scenario_{i % 97}", "generation", 100, 300, "ok", None,
                n_evaluations=40, source_sizes="run_spec.json=3000;stats.json=90000",
                source_crc32c="0badf00d", converted_at="1790000000",
            )
            for i in range(start, min(start + group_runs, n_runs))
        ]
        for table, data in (
            ("runs", runs_table(rows)),
            ("instances", empty_instances),
            ("evaluations", empty_evals),
        ):
            path = dest / shard_path(table, "benchjob0001", cid)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(data) if not isinstance(data, pa.Table) else data, path)


class ListSource:
    """A source that lists ``n`` runs (the dataset's) plus ``new`` more, fetches nothing."""

    def __init__(self, n: int, new: int) -> None:
        from helmproc.engine.facts import RunRef

        self.refs = [
            RunRef("bench", "v1", f"scenario_{i % 97}:model=org_m{i % 53},seed={i}", None, "")
            for i in range(n + new)
        ]

    @property
    def config(self) -> dict:
        return {"kind": "bench-list", "n": len(self.refs)}

    def discover(self) -> list:
        return list(self.refs)


def planning_child(dest: str, n: int, new: int) -> None:
    import psutil

    from helmproc.engine.job.start import start_job
    from helmproc.engine.publish.folder import DirPublisher
    from helmproc.engine.publish.ledger import read_ledger

    source = ListSource(n, new)
    baseline = psutil.Process().memory_info().rss
    work = Path(tempfile.mkdtemp(prefix="plan-work-"))
    t0 = time.perf_counter()
    ledger = read_ledger(DirPublisher(dest))
    t_ledger = time.perf_counter() - t0
    del ledger
    t0 = time.perf_counter()
    started = start_job(source, DirPublisher(dest), chunk_size=16, work_root=work)
    t_start = time.perf_counter() - t0
    started.journal.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "ledger_read_s": t_ledger, "start_job_s": t_start, "planned_runs": started.n_runs,
        "peak_extra_mb": (peak - baseline) / 1e6,
    }))


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "_child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_planning(n_runs: int, group_runs: int, new: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    try:
        dest, empty = base / "dataset", base / "empty"
        t0 = time.perf_counter()
        build_ledger_dataset(dest, n_runs, group_runs)
        files = sum(1 for _ in dest.rglob("*.parquet"))
        print(f"built a dataset of {n_runs} runs in {files} files "
              f"({time.perf_counter() - t0:.1f} s)")
        with_dest = run_child(str(dest), str(n_runs), str(new))
        without = run_child(str(empty), str(n_runs), str(new))
        print(f"against the dataset: start_job {with_dest['start_job_s']:.2f} s (ledger read "
              f"{with_dest['ledger_read_s']:.2f} s), planned {with_dest['planned_runs']} runs, "
              f"peak +{with_dest['peak_extra_mb']:.0f} MB")
        print(f"empty destination:   start_job {without['start_job_s']:.2f} s, planned "
              f"{without['planned_runs']} runs, peak +{without['peak_extra_mb']:.0f} MB")
        print(f"ratio (with / without a destination): "
              f"{with_dest['start_job_s'] / without['start_job_s']:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bench_compaction(groups: int) -> None:
    import pyarrow.dataset as pads

    from helmproc.engine.publish.compaction import compact
    from helmproc.engine.publish.folder import DirPublisher

    base = Path(tempfile.mkdtemp(prefix="compact-bench-"))
    try:
        seed = base / "seed"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1790000000"}
        subprocess.run(
            [sys.executable, "-m", "helmproc.cli", "run", "--source", str(FIXTURE), "--to",
             str(seed), "--chunk-size", "1", "-q"],
            cwd=base, env=env, check=True, capture_output=True,
        )
        dest = base / "dataset"
        dest.mkdir()
        seed_groups = sorted(p.relative_to(seed) for p in seed.rglob("*.parquet")
                             if not p.parts[-4:][0] == "releases")
        copies = max(1, groups // max(1, len([p for p in seed_groups if p.parts[0] == "runs"])))
        for c in range(copies):
            for rel in seed_groups:
                if rel.parts[0] == "releases":
                    continue
                parts = list(rel.parts)
                parts[1] = f"{parts[1]}{c:04d}"
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(seed / rel, target)
        files = sorted(dest.rglob("*.parquet"))
        size = sum(p.stat().st_size for p in files)
        plain = base / "plain"
        t0 = time.perf_counter()
        for table in ("instances", "evaluations", "runs"):
            data = pads.dataset(str(dest / table), format="parquet").to_table()
            pads.write_dataset(data, str(plain / table), format="parquet",
                               max_rows_per_file=1 << 30, max_rows_per_group=64 * 1024)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = compact(DirPublisher(dest), base / "work", target_bytes=1 << 40)
        t_compact = time.perf_counter() - t0
        mb = size / 1e6
        print(f"{len(files)} files, {mb:.1f} MB of Parquet -> {report.files_after} files")
        print(f"helmproc compact: {t_compact:.2f} s, {mb / t_compact:.1f} MB/s (journaled, "
              "fsynced, byte-deterministic)")
        print(f"pyarrow.dataset rewrite: {t_plain:.2f} s, {mb / t_plain:.1f} MB/s")
        print(f"ratio (compact / plain): {t_compact / t_plain:.2f}x the time")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        planning_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=["planning", "compaction", "all"])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--group-runs", type=int, default=16)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--groups", type=int, default=2000)
    args = parser.parse_args()
    if args.what in ("planning", "all"):
        bench_planning(args.runs, args.group_runs, args.new)
    if args.what in ("compaction", "all"):
        bench_compaction(args.groups)


if __name__ == "__main__":
    main()
