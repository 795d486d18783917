"""Fixed costs of small jobs: ``helmproc run`` into a local folder, process start to exit.

    python bench/small_jobs.py [--repeat 5] [--runs 5] [--instances 100]

Two jobs, each run as ``python -m helmproc.cli run --source SRC --to DEST --quiet --json`` in a
fresh process, ``--repeat`` times (medians reported, each round listed):

- **new**: ``--runs`` small runs (``bench/corpus.py``'s MMLU-like runs of ``--instances``
  instances), none of them in the destination yet (a fresh destination and journal per round);
- **done**: the same command again on the destination the new job filled: every run is in the
  dataset already.

The breakdown of the new job comes from the clock of this process (start and exit of the
child) and the journal's own timestamps: *imports* (``import helmproc.cli.app`` in a fresh
interpreter, minus a bare ``python -c pass``, measured apart), *planning* (process start to the
job's ``started_at`` in the journal, less interpreter and imports: discovery, planning,
journal), *pool start + first chunk* (``started_at`` to the first ``processed`` event),
*publishing* (first ``processed`` to the last ``cleaned`` event), *final card and exit* (last
``cleaned`` event to process exit). Nothing is written outside ``bench/out/small``; it is
deleted at the end. Targets (issue 16): done <= 1.0 s, new <= 2.5 s. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out" / "small"
sys.path.insert(0, str(BENCH))

import corpus  # noqa: E402 - bench/corpus.py

TARGETS = {"done_s": 1.0, "new_s": 2.5}


def _timed(command: list[str], cwd: Path) -> tuple[float, float, float, str]:
    """(wall seconds, start epoch, exit epoch, stdout) of ``command``."""
    start_epoch = time.time()
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, start_epoch, start_epoch + wall, proc.stdout


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def journal_times(work: Path) -> dict[str, float]:
    """started_at, first processed, last cleaned of the one journal under ``work``."""
    journal = next(work.rglob("journal.sqlite"))
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as db:
        started = db.execute("SELECT started_at FROM job").fetchone()[0]
        firsts = dict(db.execute("SELECT state, min(at) FROM events GROUP BY state").fetchall())
        lasts = dict(db.execute("SELECT state, max(at) FROM events GROUP BY state").fetchall())
    return {
        "started": _epoch(started),
        "first_processed": _epoch(firsts["processed"]),
        "last_cleaned": _epoch(lasts["cleaned"]),
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    src = corpus.write_corpus(
        OUT / "src", corpus.uniform_plan(args.runs, args.instances, seed=5), processes=1
    )
    python = sys.executable
    base = [python, "-m", "helmproc.cli", "run", "--source", str(src.root), "--quiet", "--json"]
    if args.max_workers:
        base += ["--max-workers", str(args.max_workers)]
    bare, imports, new, done, parts = [], [], [], [], []
    for r in range(args.repeat):
        bare.append(_timed([python, "-c", "pass"], OUT)[0])
        imports.append(_timed([python, "-c", "import helmproc.cli.app"], OUT)[0] - bare[-1])
        work = OUT / f"round-{r}"
        work.mkdir()
        wall, start, end, stdout = _timed([*base, "--to", "dataset"], work)
        status = json.loads(stdout)
        if not status.get("done") or status["runs"].get("ok") != args.runs:
            raise SystemExit(f"new job did not convert every run: {status['runs']}")
        t = journal_times(work)
        new.append(wall)
        parts.append(
            {
                "interpreter": bare[-1],
                "imports": imports[-1],
                "planning": t["started"] - start - bare[-1] - imports[-1],
                "pool start + first chunk": t["first_processed"] - t["started"],
                "rest + publishing": t["last_cleaned"] - t["first_processed"],
                "final card + exit": end - t["last_cleaned"],
            }
        )
        wall, *_ = _timed([*base, "--to", "dataset"], work)
        done.append(wall)
        print(
            f"  round {r + 1}: new {new[-1]:.2f} s, done {done[-1]:.2f} s, load"
            f" {os.getloadavg()[0]:.1f}",
            file=sys.stderr,
            flush=True,
        )
    breakdown = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    shutil.rmtree(OUT, ignore_errors=True)
    return {
        "runs": args.runs,
        "instances_per_run": args.instances,
        "new_s": statistics.median(new),
        "done_s": statistics.median(done),
        "new_rounds_s": new,
        "done_rounds_s": done,
        "breakdown_new_s": breakdown,
        "load": os.getloadavg(),
    }


def summary(report: dict[str, Any]) -> list[str]:
    rounds = ", ".join(f"{x:.2f}" for x in report["new_rounds_s"])
    done_rounds = ", ".join(f"{x:.2f}" for x in report["done_rounds_s"])
    parts = ", ".join(f"{k} {v:.2f}" for k, v in report["breakdown_new_s"].items())
    new_ok = "met" if report["new_s"] <= TARGETS["new_s"] else "NOT met"
    done_ok = "met" if report["done_s"] <= TARGETS["done_s"] else "NOT met"
    return [
        f"  small job, {report['runs']} new runs   {report['new_s']:.2f} s (rounds {rounds};"
        f" target <= {TARGETS['new_s']} s): {new_ok}",
        f"                       breakdown (median s): {parts}",
        f"  small job, all done  {report['done_s']:.2f} s (rounds {done_rounds}; target <="
        f" {TARGETS['done_s']} s): {done_ok}",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--max-workers", type=int, default=0, help="default: helmproc's")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = bench(args)
    print(json.dumps(report, indent=2) if args.json else "\n".join(summary(report)))


if __name__ == "__main__":
    main()
