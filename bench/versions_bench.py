"""Two installed versions of helmproc, the same job, interleaved rounds.

    python bench/versions_bench.py CORPUS --old VENV_A --new VENV_B [--rounds 5]

Each round runs ``<venv>/bin/helmproc run --source CORPUS --to <fresh folder>`` once with each
version (the order alternates between rounds), in a fresh working folder, and measures wall
time and the CPU time of the whole process tree (sampled, see ``timed_job``). Printed:
each round's new/old ratio of wall and CPU, and their medians. Both jobs get the same options
(``--max-workers``, ``--chunk-size``); nothing else is shared, so a cache warmed by one version
helps the other alike. Generate the corpus with ``bench/corpus.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_job(venv: Path, corpus: Path, work: Path, extra: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the tree) of one job into a fresh folder under ``work``.

    CPU: every process of the job's tree is sampled every 20 ms (psutil) and its last
    reading kept; a fork server's workers are not waited for by the job's own process, so
    ``RUSAGE_CHILDREN`` would miss them. A process's last < 20 ms are not seen."""
    import psutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    last: dict[tuple[int, float], float] = {}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(venv / "bin" / "helmproc"), "run", "--source", str(corpus), "--to", "out",
         "--quiet", *extra],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                t = p.cpu_times()
                last[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{venv}: helmproc exited {proc.returncode}")
    return wall, sum(last.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="a benchmark_output folder")
    parser.add_argument("--old", type=Path, required=True, help="venv of the version before")
    parser.add_argument("--new", type=Path, required=True, help="venv of the version after")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-workers", default="2")
    parser.add_argument("--chunk-size", default="8")
    args = parser.parse_args(argv)
    extra = ["--max-workers", args.max_workers, "--chunk-size", args.chunk_size]
    walls: list[float] = []
    cpus: list[float] = []
    with tempfile.TemporaryDirectory(prefix="helmproc-versions-") as tmp:
        for i in range(args.rounds):
            order = [("old", args.old), ("new", args.new)]
            if i % 2:
                order.reverse()
            got = {name: timed_job(venv, args.corpus, Path(tmp) / name, extra)
                   for name, venv in order}
            (ow, oc), (nw, nc) = got["old"], got["new"]
            walls.append(nw / ow)
            cpus.append(nc / oc)
            print(f"round {i + 1}: old {ow:.2f} s wall {oc:.2f} s CPU | new {nw:.2f} s wall "
                  f"{nc:.2f} s CPU | new/old wall {nw / ow:.3f} CPU {nc / oc:.3f}", flush=True)
    print(f"median new/old: wall {statistics.median(walls):.3f}, "
          f"CPU {statistics.median(cpus):.3f} ({args.rounds} rounds)")


if __name__ == "__main__":
    sys.exit(main())
