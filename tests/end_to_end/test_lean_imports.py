"""helmproc's own processes (the CLI, the pool's workers) never import pandas, which pyarrow
would import on its first array when it is installed; a program using the engine keeps it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE

HELMPROC = [sys.executable, "-X", "importtime", "-m", "helmproc.cli"]


def pandas_imports(importtime_log: str) -> list[int]:
    """Microseconds (cumulative) of every top-level ``pandas`` import in ``-X importtime``
    output, one entry per process that tried."""
    return [
        int(m.group(1))
        for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \|\s*pandas$", importtime_log, re.M)
    ]


def test_a_job_imports_no_pandas_in_the_cli_or_its_workers(tmp_path: Path) -> None:
    # pandas is installed here (the test extras' `datasets` needs it): the case that costs
    assert importlib.util.find_spec("pandas") is not None
    done = subprocess.run(
        [*HELMPROC, "run", "--source", str(FIXTURE), "--to", "out", "--max-workers", "2",
         "--chunk-size", "2"],
        cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": FIXED_EPOCH},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tries = pandas_imports(done.stderr)
    # each process that touches Arrow asks once; refused, an attempt costs microseconds, an
    # import of pandas at least tens of milliseconds
    assert len(tries) >= 2, "the coordinator and the workers should each have asked"
    assert max(tries) < 20_000, tries


def test_a_library_user_keeps_pandas() -> None:
    code = (
        "import helmproc.engine as e, pyarrow as pa; e.run_job; pa.array([1]);"
        "import pandas; print(pandas.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "pandas", done.stderr[-2000:]
