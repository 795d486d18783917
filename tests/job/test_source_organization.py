"""``--source-organization``: recorded with the job, kept in every evaluation row, exported.

Default: the public bucket's owner for a source reading only the public bucket, else none
(EEE ``unknown``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helmproc.engine.errors import ConfigError
from helmproc.engine.job.coordinator import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.bucket import DEFAULT_BASE_URL, HttpSource
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import (
    PUBLIC_BUCKET_OWNER,
    DirSource,
    MultiSource,
    default_organization,
)
from tests.fakes.jobkit import FIXTURE

pytestmark = pytest.mark.usefixtures("fixed_epoch")


def test_the_public_bucket_defaults_to_its_owner() -> None:
    lite = HttpSource(DEFAULT_BASE_URL, project="lite")
    mmlu = HttpSource(DEFAULT_BASE_URL, project="mmlu")
    assert default_organization(lite.config) == PUBLIC_BUCKET_OWNER
    assert "Stanford CRFM" in PUBLIC_BUCKET_OWNER
    both = MultiSource([lite, FilteredSource(mmlu, RunFilters.build(limit=1))])
    assert default_organization(both.config) == PUBLIC_BUCKET_OWNER
    assert default_organization(DirSource(FIXTURE).config) is None
    other = HttpSource("http://127.0.0.1:9/other-bucket", project="lite")
    assert default_organization(other.config) is None
    assert default_organization(MultiSource([lite, DirSource(FIXTURE, project="x")]).config) is None


def test_the_organization_is_recorded_with_the_job_and_kept_in_rows(tmp_path: Path) -> None:
    started = start_job(
        DirSource(FIXTURE),
        DirPublisher(tmp_path / "out"),
        chunk_size=8,
        work_root=tmp_path / "work",
        source_organization="Example Lab",
    )
    with started.journal as journal:
        job = journal.job()
        assert job is not None and job.config["source_organization"] == "Example Lab"
        execute_job(journal, ExecOptions(max_workers=1))
    rows = pq.read_table(tmp_path / "out" / "evaluations").column("source_organization")
    assert rows.length() > 0 and set(rows.to_pylist()) == {"Example Lab"}


def test_an_empty_organization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source-organization"):
        start_job(
            DirSource(FIXTURE),
            DirPublisher(tmp_path / "out"),
            chunk_size=8,
            work_root=tmp_path,
            source_organization="  ",
        )


def test_the_cli_option_reaches_the_export(tmp_path: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1800000000"}
    cli = [sys.executable, "-m", "helmproc.cli"]
    subprocess.run(
        [*cli, "run", "--source", str(FIXTURE), "--to", "ds", "-q",
         "--source-organization", "Example Lab"],
        cwd=tmp_path, env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*cli, "export-eee", "--from", "ds", "--to", "eee"],
        cwd=tmp_path, env=env, check=True, capture_output=True,
    )  # fmt: skip
    records = [json.loads(p.read_text()) for p in (tmp_path / "eee").rglob("*.json")]
    assert records
    assert {r["source_metadata"]["source_organization_name"] for r in records} == {"Example Lab"}
