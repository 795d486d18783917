"""EEE conformance: export the fixture dataset and run EEE's own validator on every file.

Run by ``tox -e conformance`` (Python 3.12, ``every-eval-ever==0.3.0`` from PyPI, this
project installed). Steps, each a real subprocess in a fresh temporary folder:

1. ``helmproc run --source tests/data/benchmark_output --to dataset`` (``SOURCE_DATE_EPOCH``
   pinned) builds the fixture dataset;
2. ``helmproc export-eee --from dataset --to eee --json`` writes the EEE datastore layout;
3. ``python -m every_eval_ever validate --format json 'eee/data/*/*/*/*.json'
   'eee/data/*/*/*/*_samples.jsonl'`` validates every aggregate and samples file (schema,
   strict JSON, path rules, companion checksums/row counts, model identity path).

Passes only if the validator exits 0 (no errors and no warnings), every file the export
reports was validated, and at least one run was exported. Exit status: 0 pass, 1 fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]
FIXTURE = CHECKOUT / "tests" / "data" / "benchmark_output"
SOURCE_DATE_EPOCH = "1800000000"
HELMPROC = [sys.executable, "-m", "helmproc.cli"]
VALIDATE = [sys.executable, "-m", "every_eval_ever", "validate", "--format", "json"]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def must(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"conformance: command failed with exit {proc.returncode}")
    return proc.stdout


def problems(reports: list[dict[str, Any]]) -> list[str]:
    found = []
    for report in reports:
        for kind in ("errors", "warnings"):
            for item in report[kind]:
                found.append(f"{report['file']}: {kind[:-1]}: {item.get('loc')}: {item['msg']}")
        if not report["valid"] and not report["errors"]:
            found.append(f"{report['file']}: invalid")
    return found


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="helmproc-conformance-") as tmp:
        work = Path(tmp)
        must(run([*HELMPROC, "run", "--source", str(FIXTURE), "--to", "dataset", "-q"], work))
        summary = json.loads(
            must(run([*HELMPROC, "export-eee", "--from", "dataset", "--to", "eee", "--json"], work))
        )
        exported = {r["aggregate"] for r in summary["exported"]}
        exported |= {r["samples"] for r in summary["exported"] if r["samples"]}
        patterns = ["data/*/*/*/*.json", "data/*/*/*/*_samples.jsonl"]
        proc = run([*VALIDATE, *patterns], work / "eee")
        try:
            reports = json.loads(proc.stdout)
        except json.JSONDecodeError:
            sys.stderr.write(proc.stdout + proc.stderr)
            print("conformance: FAIL (validator printed no JSON report)")
            return 1
    validated = {str(report["file"]) for report in reports}
    found = problems(reports)
    if exported != validated:
        found.append(f"exported files {sorted(exported ^ validated)} were not all validated")
    if not exported:
        found.append("the export wrote no files")
    for line in found:
        print(line)
    print(
        f"conformance: every_eval_ever validate exit {proc.returncode}; "
        f"{summary['runs_exported']} runs exported ({len(validated)} files validated, "
        f"{summary['samples_rows']} sample rows), {summary['runs_skipped']} runs skipped"
    )
    for skipped in summary["skipped"]:
        print(f"  skipped {skipped['run']}: {skipped['reason']}")
    ok = proc.returncode == 0 and not found
    print(f"conformance: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
