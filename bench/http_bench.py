"""Benchmark: ``helmproc run`` over HTTP against the floor (plain requests + json), on loopback.

Generates a corpus by copying the fixture's v1.1.0 runs ``--copies`` times (each copy a
distinct run name, ``,copy=N`` appended, so names keep their ``:``, ``,`` and ``=``), publishes
it as one release, serves it with the test suite's fake bucket (``tests/bucket_server.py``) on
127.0.0.1, then times:

- helmproc: ``helmproc run --source http://127.0.0.1:PORT/<bucket> --benchmark bench
  --release bench`` as a subprocess (interpreter start, discovery, conversion, Parquet, journal);
- local dir: the same ``helmproc run`` reading the corpus folder directly (no HTTP), which
  separates the cost of conversion from the cost of fetching;
- floor: the same release index and the same five files per run fetched with plain
  ``requests`` (one session per process) and decoded with ``json``, in a pool of the same
  number of processes.

Prints runs/min, MB/s (bytes of the files as served) and the ratios; ``--repeat N`` runs N
interleaved rounds and prints medians (the machine may be shared). Everything lives in a
temporary folder removed at the end (``--keep`` keeps it); a crash leaves only that folder.
Not a test: run it by hand, ``python bench/http_bench.py [--copies N] [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "benchmark_output"
sys.path.insert(0, str(ROOT))

from tests.fakes.bucket_server import BucketServer  # noqa: E402 - lives in tests/

PROJECT = "bench"
RELEASE = "bench"
SUITE = "bench"
FILES = (
    "run_spec.json",
    "scenario.json",
    "stats.json",
    "per_instance_stats.json",
    "scenario_state.json",
)


@dataclass(frozen=True)
class Timing:
    seconds: float
    n_runs: int
    n_bytes: int

    def line(self, label: str) -> str:
        return (
            f"{label:<10} {self.seconds:7.2f} s  {self.n_runs / self.seconds * 60:8.0f} runs/min  "
            f"{self.n_bytes / self.seconds / 1e6:7.1f} MB/s"
        )


def make_corpus(dest: Path, copies: int) -> tuple[list[str], int]:
    """``dest`` = a benchmark_output with one release; returns run names and bytes per pass."""
    runs = sorted(p for p in (FIXTURE / "runs" / "v1.1.0").iterdir() if p.is_dir())
    index: dict[str, str] = {}
    n_bytes = 0
    for i in range(copies):
        for run in runs:
            spec = json.loads((run / "run_spec.json").read_text())
            name = f"{spec['name']},copy={i}"
            target = dest / "runs" / SUITE / name
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("display_*", "instances*"))
            spec["name"] = name
            (target / "run_spec.json").write_text(json.dumps(spec, indent=2))
            n_bytes += sum((target / f).stat().st_size for f in FILES)
            index[name] = SUITE
    (dest / "releases" / RELEASE).mkdir(parents=True)
    (dest / "releases" / RELEASE / "runs_to_run_suites.json").write_text(json.dumps(index))
    return sorted(index), n_bytes


def time_helmproc(source: str, work: Path, workers: int, chunk_size: int) -> float:
    """Wall time of ``helmproc run`` from ``source`` (a bucket URL or a local folder)."""
    work.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "helmproc.cli", "run",
        "--source", source, "--benchmark", PROJECT, "--release", RELEASE,
        "--to", str(work / "out"), "--max-workers", str(workers),
        "--chunk-size", str(chunk_size), "--quiet",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"helmproc run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    print(f"helmproc: {proc.stdout.strip()}", file=sys.stderr)
    return elapsed


_session: requests.Session | None = None


def _floor_run(args: tuple[str, str]) -> int:
    """Fetch and decode one run's five files; the bytes received."""
    global _session
    if _session is None:
        _session = requests.Session()
    base, name = args
    n = 0
    for file in FILES:
        path = "/".join(quote(p, safe="") for p in (PROJECT, "benchmark_output", "runs", SUITE))
        response = _session.get(f"{base}/{path}/{quote(name, safe='')}/{file}", timeout=60)
        response.raise_for_status()
        json.loads(response.content)
        n += len(response.content)
    return n


def time_floor(base_url: str, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    index_url = f"{base_url}/{PROJECT}/benchmark_output/releases/{RELEASE}/runs_to_run_suites.json"
    names = sorted(requests.get(index_url, timeout=60).json())
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        n_bytes = sum(pool.imap_unordered(_floor_run, [(base_url, n) for n in names], 4))
    return time.perf_counter() - started, n_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=40, help="copies of the 7 fixture runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--gzip", action="store_true", help="serve objects gzip-compressed")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; medians are printed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="helmproc-http-bench-"))
    try:
        names, n_bytes = make_corpus(tmp / "benchmark_output", args.copies)
        print(
            f"corpus: {len(names)} runs, {n_bytes / 1e6:.1f} MB of converter input, "
            f"{args.workers} processes, chunk size {args.chunk_size}, gzip={args.gzip}",
            file=sys.stderr,
        )
        floors: list[float] = []
        helms: list[float] = []
        locals_: list[float] = []
        with BucketServer(gzip_at_rest=args.gzip) as server:
            server.mount(f"{PROJECT}/benchmark_output", tmp / "benchmark_output")
            server.warm_hashes()  # GCS keeps hashes; the fake computes them before measuring
            for round_ in range(args.repeat):  # interleaved, so all three share the load
                floor_s, floor_bytes = time_floor(server.base_url, args.workers)
                floors.append(floor_s)
                helms.append(
                    time_helmproc(
                        server.base_url, tmp / f"http{round_}", args.workers, args.chunk_size
                    )
                )
                locals_.append(
                    time_helmproc(
                        str(tmp / "benchmark_output"), tmp / f"dir{round_}", args.workers,
                        args.chunk_size,
                    )
                )
                print(
                    f"round {round_ + 1}: helmproc {helms[-1]:.2f} s, floor {floors[-1]:.2f} s, "
                    f"local dir {locals_[-1]:.2f} s",
                    file=sys.stderr,
                )
        helm_s, floor_s, local_s = (statistics.median(x) for x in (helms, floors, locals_))
        if args.repeat > 1:
            print(f"medians of {args.repeat} interleaved rounds")
        print(Timing(helm_s, len(names), n_bytes).line("helmproc"))
        print(Timing(floor_s, len(names), n_bytes).line("floor"))
        print(Timing(local_s, len(names), n_bytes).line("local dir"))
        print(f"ratio      helmproc over HTTP = {floor_s / helm_s:.2f} x the floor's throughput")
        print(f"           helmproc over HTTP = {local_s / helm_s:.2f} x its own from a local dir")
        if floor_bytes != n_bytes:
            print(f"note: floor received {floor_bytes} bytes, expected {n_bytes}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
