"""The public Python API: the README's example runs as written, and ``helmproc.engine`` can be
imported after the journal (its names resolve lazily, so there is no import cycle at runtime)."""

from __future__ import annotations

import ast
import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq

import helmproc.engine
from helmproc.engine import api

CHECKOUT = Path(__file__).resolve().parents[2]
FIXTURE = CHECKOUT / "tests" / "data" / "benchmark_output"


def readme_example() -> str:
    """The Python block of the README's "Python API" section."""
    readme = (CHECKOUT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no Python example under 'Python API'"
    return match.group(1)


def test_the_readme_example_converts_the_release(tmp_path: Path) -> None:
    code = readme_example()
    assert len(code.strip().splitlines()) <= 5
    shutil.copytree(FIXTURE, tmp_path / "tests" / "data" / "benchmark_output")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    runs = json.loads((FIXTURE / "releases" / "v1.1.0" / "runs_to_run_suites.json").read_text())
    printed = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert printed == {"ok": len(runs), "failed": 0}
    dataset = tmp_path / "helm-eee-dataset"
    run_rows = sum(pq.read_metadata(p).num_rows for p in (dataset / "runs").rglob("*.parquet"))
    assert run_rows == len(runs)
    assert (dataset / "README.md").is_file()


def test_the_journal_imports_before_the_engine_in_a_fresh_interpreter() -> None:
    """The journal imports the engine's shared vocabulary; the engine's API imports the
    journal. Importing the journal first must work, and must not load the API."""
    code = (
        "import sys\n"
        "import helmproc.journal\n"
        "assert 'helmproc.engine.api' not in sys.modules, 'the vocabulary pulled in the API'\n"
        "from helmproc.engine import Journal, run_job\n"
        "assert Journal is helmproc.journal.Journal and callable(run_job)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_every_public_name_resolves_to_its_defining_module() -> None:
    import importlib

    assert sorted(helmproc.engine.__all__) == sorted(helmproc.engine._WHERE)
    assert set(api.__all__) <= set(helmproc.engine.__all__)
    for name, where in helmproc.engine._WHERE.items():
        assert getattr(helmproc.engine, name) is getattr(importlib.import_module(where), name)


def test_run_job_reads_with_the_credentials_of_the_source_it_was_given(tmp_path: Path) -> None:
    """The journal keeps the source without its credentials; the job itself must read with
    them (a server that requires them refuses the journaled URL)."""
    from helmproc.engine import DirPublisher, ExecOptions, HttpSource, run_job
    from tests.fakes.bucket_server import BucketServer

    password, token = "pw-api-5ecret", "tok-api-5ecret"
    release = "v1.1.0"
    runs = json.loads((FIXTURE / "releases" / release / "runs_to_run_suites.json").read_text())
    with BucketServer() as server:
        server.mount("lite/benchmark_output", FIXTURE)
        basic = base64.b64encode(f"reader:{password}".encode()).decode()
        server.required = (f"Basic {basic}", f"access_token={token}")
        parts = urlsplit(server.base_url)
        netloc = f"reader:{password}@{parts.netloc}"
        url = urlunsplit(parts._replace(netloc=netloc, query=f"access_token={token}"))
        report = run_job(
            HttpSource(url, project="lite", release=release),
            DirPublisher(tmp_path / "out"),
            options=ExecOptions(max_workers=1),
            work_root=tmp_path / ".helmproc",
        )
    assert report.to_json()["runs"] == {"ok": len(runs), "failed": 0}
    journal = next((tmp_path / ".helmproc").rglob("journal.sqlite")).read_bytes()
    assert password.encode() not in journal and token.encode() not in journal
