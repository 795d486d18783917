"""How well ``--memory-budget`` bounds the process tree: two big runs, a small budget.

Builds a bare folder of two big runs (the fixture's ``simple_mcqa`` run with every instance
repeated ``--factor`` times under new ids), then for each budget runs ``helmproc run`` as a
subprocess (2 workers, one run per chunk) while sampling the whole tree's USS (coordinator,
fork server, workers) every ``--every`` seconds with psutil. Reports, per budget: the peak tree
USS, peak / budget, the wall time and how the runs ended (a run too big for the budget fails
with a reason, which is the budget doing its job).

    python bench/budget_bench.py [--factor 600] [--budgets 150M,250M,350M] [--every 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_RUN = ROOT / "tests/data/benchmark_output/runs/v1.1.0/simple_mcqa:model=simple_model1"
sys.path.insert(0, str(ROOT))

from helmproc.cli.option_checks import parse_size  # noqa: E402  (the CLI's own parsing)
from tests.fakes.jobkit import inflate_run  # noqa: E402  (the tests' big-run maker)


def tree_uss(root: psutil.Process) -> int:
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            total += proc.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def one(corpus: Path, work: Path, budget: str, every: float) -> dict[str, object]:
    args = [sys.executable, "-m", "helmproc.cli", "run", "--source", str(corpus), "--to", "out"]
    args += ["--memory-budget", budget, "--max-workers", "2", "--chunk-size", "1", "--json"]
    work.mkdir(parents=True)
    started = time.monotonic()
    proc = subprocess.Popen(args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_uss(root))
        time.sleep(every)
    out = proc.stdout.read() if proc.stdout else b""
    report = json.loads(out) if out.strip() else {}
    return {
        "budget": budget,
        "peak_tree_uss_mib": round(peak / (1 << 20), 1),
        "peak_over_budget": round(peak / parse_size(budget), 3),
        "seconds": round(time.monotonic() - started, 1),
        "runs": report.get("runs"),
        "exit": proc.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=int, default=600)
    parser.add_argument("--budgets", default="150M,250M,350M")
    parser.add_argument("--every", type=float, default=0.01)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="helmproc-budget-") as tmp:
        corpus = Path(tmp) / "corpus"
        for tag in ("a", "b"):
            inflate_run(FIXTURE_RUN, corpus / f"big-{tag}", opts.factor, f"big{tag}")
        mib = sum(p.stat().st_size for p in corpus.rglob("*")) / (1 << 20)
        print(f"corpus: 2 runs, {mib:.0f} MiB of JSON", file=sys.stderr)
        for i, budget in enumerate(opts.budgets.split(",")):
            env_epoch = os.environ.setdefault("SOURCE_DATE_EPOCH", "1790000000")
            assert env_epoch
            print(json.dumps(one(corpus, Path(tmp) / f"w{i}", budget, opts.every)), flush=True)


if __name__ == "__main__":
    main()
