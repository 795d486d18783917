"""Run the peer, every-eval-ever 0.3.0's HELM converter, on local HELM runs; report its cost.

    python bench/peer_convert.py --setup                  # create bench/out/peer-venv once
    bench/out/peer-venv/bin/python bench/peer_convert.py --log-dir RUNS --out OUT

``--setup`` (any Python) creates a Python 3.12 venv (EEE 0.3.0 needs >= 3.12) and installs the
converter from PyPI. Its HELM adapter imports five modules of ``crfm-helm``
(``helm.benchmark.adaptation.scenario_state``, ``config_registry``, ``metrics.metric``,
``metrics.statistic``, ``model_deployment_registry``, ``run_spec``) and ``dacite``. Those modules
need only the small packages in ``PEER_REQUIREMENTS`` (found by importing them, pinned to
crfm-helm 0.5.16's own ranges); crfm-helm's full dependency list also pulls torch,
torchvision, transformers, spaCy and datasets, which the converter never imports and which on
Python 3.12 means a multi-GB CUDA build of torch. So crfm-helm is installed with ``--no-deps``
beside those packages; the conversion code that runs is exactly the published one.

The conversion is EEE's own CLI path (``every_eval_ever convert helm --log_path DIR
--output_dir OUT``, called in-process as ``every_eval_ever.cli._cmd_convert_helm`` so the
interpreter start and imports are timed apart): all run directories under ``--log-dir`` in
one process, aggregate JSON plus instance-level JSONL written under ``--out`` (its staging
goes to ``$TMPDIR``). One JSON object is printed on stdout: import and conversion seconds
(wall and CPU), runs converted (JSONL files written), the CLI's error if any run failed, JSONL
rows written, peak RSS. Everything the CLI itself prints goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_VENV = BENCH / "out" / "peer-venv"
PEER_PACKAGE = "every-eval-ever==0.3.0"
HELM_PACKAGE = "crfm-helm==0.5.16"
# What the converter's imports of crfm-helm need (ranges as crfm-helm 0.5.16 declares them).
PEER_REQUIREMENTS = (
    PEER_PACKAGE,
    "dacite~=1.6",
    "zstandard~=0.18.0",
    "pyhocon~=0.3.59",
    "colorlog~=6.9",
    "cattrs~=22.2",
    "sqlitedict>=2.1.0,<3.0",
    "retrying~=1.3",
    "Mako~=1.2",
    "pandas~=2.0",
    # every-eval-ever's own [helm] extra, minus crfm-helm itself
    "typer>=0.12,<1.0",
    "nltk!=3.10.1",
)
CHECK = (
    "import every_eval_ever.converters.helm.adapter as a; "
    "raise SystemExit(repr(a._HELM_IMPORT_ERROR) if a._HELM_IMPORT_ERROR else 0)"
)


def find_python312() -> str:
    """A Python 3.12 interpreter: ``python3.12`` on PATH, else pyenv's 3.12."""
    found = shutil.which("python3.12")
    if found:
        return found
    try:
        prefix = subprocess.run(
            ["pyenv", "prefix", "3.12"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("the peer needs Python 3.12 (python3.12 on PATH or pyenv 3.12)") from None
    return str(Path(prefix) / "bin" / "python3.12")


def venv_ready(venv: Path) -> bool:
    python = venv / "bin" / "python"
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", CHECK], capture_output=True).returncode == 0


def setup(venv: Path = DEFAULT_VENV) -> Path:
    """Create ``venv`` with the peer installed (a no-op when it already works)."""
    python = venv / "bin" / "python"
    if venv_ready(venv):
        return python
    print(f"peer: creating {venv} (every-eval-ever 0.3.0, Python 3.12)", file=sys.stderr)
    subprocess.run([find_python312(), "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEER_REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", HELM_PACKAGE], check=True)
    check = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"peer venv is incomplete: {check.stderr.strip() or check.stdout}")
    return python


def count_rows(out: Path) -> int:
    rows = 0
    for path in out.rglob("*_samples.jsonl"):
        with open(path, "rb") as fh:
            rows += sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    return rows


def convert(log_dir: Path, out: Path) -> dict[str, object]:
    """Convert every run under ``log_dir`` with EEE's CLI code path; the measurements."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        import every_eval_ever.converters.helm.adapter  # noqa: F401 - HELM registry load
        from every_eval_ever.cli import _cmd_convert_helm
    import_s = time.perf_counter() - started
    args = argparse.Namespace(
        log_path=str(log_dir),
        output_dir=str(out),
        source_organization_name="helmproc-bench",
        evaluator_relationship="third_party",
        source_organization_url=None,
        source_organization_logo_url=None,
        eval_library_name="helm",
        eval_library_version="unknown",
    )
    error = None
    cpu = time.process_time()
    wall = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        try:
            _cmd_convert_helm(args)
        except Exception as exc:  # the CLI raises when any run failed; the others still count
            error = f"{type(exc).__name__}: {exc}"[:500]
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return {
        "python": sys.version.split()[0],
        "import_s": round(import_s, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "n_converted": len(list(out.rglob("*_samples.jsonl"))),
        "error": error,
        "n_rows": count_rows(out),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", action="store_true", help="create the peer venv and exit")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--log-dir", type=Path, help="folder whose subfolders are HELM runs")
    parser.add_argument("--out", type=Path, help="output folder for EEE records")
    args = parser.parse_args(argv)
    if args.setup:
        print(setup(args.venv))
        return
    if args.log_dir is None or args.out is None:
        parser.error("--log-dir and --out are required (or --setup)")
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(convert(args.log_dir, args.out)))


if __name__ == "__main__":
    main()
