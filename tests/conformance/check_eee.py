"""EEE conformance: export the fixture dataset and run EEE's own validator on every file.

Run by ``tox -e conformance`` (Python 3.12, ``every-eval-ever==0.3.0`` from PyPI, this
project installed). Steps, each a real subprocess in a fresh temporary folder:

1. ``helmproc run --source tests/data/benchmark_output --to dataset`` (``SOURCE_DATE_EPOCH``
   pinned) builds the fixture dataset;
2. ``helmproc export-eee --from dataset --to eee --json`` writes the EEE datastore layout;
3. ``python -m every_eval_ever validate --format json 'data/*/*/*/*.json'
   'data/*/*/*/*_samples.jsonl'`` (inside the export folder) validates every aggregate and
   samples file (schema, strict JSON, path rules, companion checksums/row counts, model
   identity path);
4. the README's own validator command (the line of its "Exporting to the EEE datastore"
   section that runs ``every_eval_ever validate``) is run exactly as written, by ``bash``
   from the folder holding ``eee-out``, and must exit 0 and report no failed file.

Passes only if the validator reports no errors and no warnings, every file the export
reports was validated, at least one run was exported, and the README's command passes.
Exit status: 0 pass, 1 fail.
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
README = CHECKOUT / "README.md"
EXPORT_FOLDER = "eee-out"  # the folder name the README's commands use
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


def readme_validate_command() -> str:
    """The README's validator command line, as written."""
    for line in README.read_text(encoding="utf-8").splitlines():
        if "python -m every_eval_ever validate" in line:
            return line.strip()
    raise SystemExit("conformance: README.md has no every_eval_ever validate command")


def run_readme_command(work: Path) -> list[str]:
    """Problems of running the README's validator command in ``work`` (none: it passed)."""
    command = readme_validate_command()
    print("+ (README)", command, flush=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or " 0 failed" not in output or "0 warnings" not in output:
        return [f"the README's validator command failed (exit {proc.returncode}):\n{output}"]
    return []


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="helmproc-conformance-") as tmp:
        work = Path(tmp)
        must(run([*HELMPROC, "run", "--source", str(FIXTURE), "--to", "dataset", "-q"], work))
        summary = json.loads(
            must(
                run(
                    [*HELMPROC, "export-eee", "--from", "dataset", "--to", EXPORT_FOLDER, "--json"],
                    work,
                )
            )
        )
        exported = {r["aggregate"] for r in summary["exported"]}
        exported |= {r["samples"] for r in summary["exported"] if r["samples"]}
        patterns = ["data/*/*/*/*.json", "data/*/*/*/*_samples.jsonl"]
        proc = run([*VALIDATE, *patterns], work / EXPORT_FOLDER)
        readme_problems = run_readme_command(work)
        try:
            reports = json.loads(proc.stdout)
        except json.JSONDecodeError:
            sys.stderr.write(proc.stdout + proc.stderr)
            print("conformance: FAIL (validator printed no JSON report)")
            return 1
    validated = {str(report["file"]) for report in reports}
    found = problems(reports) + readme_problems
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
