"""Sources read the release's (else the suite's) ``schema.json`` once, over both sources.

DirSource on the fixture folder and HttpSource on the loopback bucket serving the same tree:
the same runs get the same schema, each file is read once per source object, a missing one
is None and a malformed one fails the runs that need it with the file named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helmproc.engine.errors import RunConversionError
from helmproc.engine.job.coordinator import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.bucket import HttpSource
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import DirSource, MultiSource
from tests.fakes.bucket_server import BucketServer
from tests.fakes.jobkit import FIXTURE
from tests.sources.test_bucket import FAST

RELEASE_SCHEMA = FIXTURE / "releases" / "v1.1.0" / "schema.json"
SUITE_SCHEMA = FIXTURE / "runs" / "v0.1.0" / "schema.json"

pytestmark = pytest.mark.usefixtures("fixed_epoch")


def group_names(path: Path) -> set[str]:
    return {g["name"] for g in json.loads(path.read_text())["run_groups"]}


@pytest.fixture
def bucket() -> BucketServer:
    server = BucketServer(max_page_size=50)
    server.mount("lite/benchmark_output", FIXTURE)
    with server:
        yield server


def test_dir_source_reads_the_release_schema_once() -> None:
    source = DirSource(FIXTURE)  # release mode: the newest release, v1.1.0
    refs = source.discover()
    schemas = [source.schema_for(ref) for ref in refs]
    assert all(s is schemas[0] for s in schemas)  # one parsed object for every run
    assert schemas[0] is not None
    assert schemas[0].where == "releases/v1.1.0/schema.json"
    assert set(schemas[0].run_groups) == group_names(RELEASE_SCHEMA)


def test_dir_source_reads_the_suite_schema_and_none_where_there_is_none(tmp_path: Path) -> None:
    old = DirSource(FIXTURE, suite="v0.1.0")
    schema = old.schema_for(old.discover()[0])
    assert schema is not None and schema.where == "runs/v0.1.0/schema.json"
    assert set(schema.run_groups) == group_names(SUITE_SCHEMA)
    newer = DirSource(FIXTURE, suite="v1.0.0")  # helm-run wrote no schema.json there
    assert newer.schema_for(newer.discover()[0]) is None
    bare = tmp_path / "bare"
    shutil.copytree(FIXTURE / "runs" / "v1.0.0", bare)
    folder = DirSource(bare)
    assert folder.schema_for(folder.discover()[0]) is None


def test_http_source_fetches_each_schema_once(bucket: BucketServer) -> None:
    source = HttpSource(bucket.base_url, project="lite", client=FAST)
    refs = source.discover()
    schemas = {id(source.schema_for(ref)) for ref in refs for _ in range(2)}
    assert len(schemas) == 1
    schema = source.schema_for(refs[0])
    assert schema is not None and set(schema.run_groups) == group_names(RELEASE_SCHEMA)
    asked = [e for e in bucket.log if e.path.endswith("/schema.json")]
    assert [(e.path.split("/benchmark_output/")[1], e.status) for e in asked] == [
        ("releases/v1.1.0/schema.json", 200)
    ]


def test_http_source_suite_schema_and_404(bucket: BucketServer) -> None:
    old = HttpSource(bucket.base_url, project="lite", suite="v0.1.0", client=FAST)
    schema = old.schema_for(old.discover()[0])
    assert schema is not None and set(schema.run_groups) == group_names(SUITE_SCHEMA)
    newer = HttpSource(bucket.base_url, project="lite", suite="v1.0.0", client=FAST)
    refs = newer.discover()
    assert newer.schema_for(refs[0]) is None and newer.schema_for(refs[1]) is None
    misses = [e for e in bucket.log if e.path.endswith("v1.0.0/schema.json")]
    assert [e.status for e in misses] == [404]  # a missing schema is asked for once too


def test_wrappers_pass_the_schema_through(bucket: BucketServer) -> None:
    inner = DirSource(FIXTURE, project="lite")
    wrapped = MultiSource([FilteredSource(inner, RunFilters.build(limit=2))])
    ref = wrapped.discover()[0]
    schema = wrapped.schema_for(ref)
    assert schema is not None and schema is inner.schema_for(ref)


def test_a_malformed_schema_fails_the_runs_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, root)
    (root / "releases" / "v1.1.0" / "schema.json").write_text('{"run_groups": [')
    source = DirSource(root)
    refs = source.discover()
    for ref in refs[:2]:  # the error is kept and raised for every run, not read again
        with pytest.raises(RunConversionError) as info:
            source.schema_for(ref)
        assert info.value.file == "releases/v1.1.0/schema.json"
        assert info.value.reason.startswith("malformed JSON")


@pytest.mark.parametrize("kind", ["dir", "http"])
def test_runs_table_records_which_source_decided(
    kind: str, bucket: BucketServer, tmp_path: Path
) -> None:
    source = (
        DirSource(FIXTURE, project="lite")
        if kind == "dir"
        else HttpSource(bucket.base_url, project="lite", client=FAST)
    )
    started = start_job(source, DirPublisher(tmp_path / "out"), chunk_size=4, work_root=tmp_path)
    with started.journal as journal:
        execute_job(journal, ExecOptions(max_workers=1))
    runs = pq.read_table(tmp_path / "out" / "runs").to_pylist()
    by_run = {r["helm_run"]: r["metric_source"] for r in runs}
    declared = group_names(RELEASE_SCHEMA)
    for run, metric_source in by_run.items():
        spec = json.loads(next((FIXTURE / "runs").glob(f"*/{run}/run_spec.json")).read_text())
        if declared & set(spec.get("groups", [])):
            assert metric_source == "schema:releases/v1.1.0/schema.json", run
        else:  # no schema entry: the built-in table, else the core list
            assert metric_source in ("builtin", "core"), run
    assert "schema:releases/v1.1.0/schema.json" in by_run.values()
