"""Contract suites: every destination (a folder, a Hub repo on the fake Hub) and every source (a
folder, the bucket over loopback HTTP) keeps the same promises, checked by the same tests.

Expected values come from the HELM fixture itself (its release index and run files) and from
the shards' journaled facts, never from helmproc's own output.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helmproc.engine.chunks.worker import w_process_chunk
from helmproc.engine.errors import RunConversionError
from helmproc.engine.facts import ShardFact
from helmproc.engine.helm.file_names import REQUIRED_RUN_FILES, RUNS_INDEX
from helmproc.engine.job.start import start_job
from helmproc.engine.publish.folder import DirPublisher, Publisher
from helmproc.engine.publish.hub import HubPublisher
from helmproc.engine.publish.registry import publisher_from_config
from helmproc.engine.sources.bucket import HttpSource
from helmproc.engine.sources.folder import DirSource, Source
from helmproc.engine.sources.registry import source_from_config
from tests.fakes.bucket_server import BucketServer
from tests.fakes.fake_hub import fake_hub_fixture, hub_env_fixture  # noqa: F401  (fixtures)
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, coordinator

RELEASE = "v1.1.0"
CARD = "---\nconfigs: []\n---\n# contract\n"


# -- destinations --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[ShardFact, ...]]:
    """One chunk's shards of the fixture job, sitting in a staging folder."""
    base = tmp_path_factory.mktemp("staged")
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    try:
        started = start_job(
            DirSource(FIXTURE), DirPublisher(base / "out"), chunk_size=3, work_root=base / "w"
        )
        with started.journal:
            coord = coordinator(started, base / "out")
            result = w_process_chunk(coord._spec(1))
    finally:
        mp.undo()
    return started.paths.staging, result.shards


@pytest.fixture(params=["folder", "hub"])
def publisher(request: pytest.FixtureRequest, tmp_path: Path) -> Publisher:
    if request.param == "folder":
        return DirPublisher(tmp_path / "dataset")
    request.getfixturevalue("hub_env")  # endpoint and token from the environment
    return HubPublisher("org/contract")


def test_published_shards_check_out_and_are_found_again(publisher: Publisher, staged) -> None:
    staging, shards = staged
    assert publisher.published_commit(shards) is None
    before = publisher.check_all(shards)
    assert all(problem is not None and problem.startswith("missing") for problem in before.values())
    publisher.prepare()
    commit = publisher.publish(staging, shards, "contract", card=CARD)
    assert publisher.published_commit(shards) == commit
    assert publisher.check_all(shards) == {fact.path: None for fact in shards}


def test_publishing_again_is_idempotent(publisher: Publisher, staged) -> None:
    staging, shards = staged
    publisher.prepare()
    publisher.publish(staging, shards, "first")
    files = set(publisher.list_files())
    # again from the same staged files (a resume after a crash between placing and journaling):
    # a folder's shards are then hard links of those very files, and nothing may be left over
    publisher.publish(staging, shards, "again")
    assert set(publisher.list_files()) == files
    assert publisher.published_commit(shards) is not None
    assert publisher.check_all(shards) == {fact.path: None for fact in shards}


def test_a_shard_left_out_is_missing_in_the_same_words(publisher: Publisher, staged) -> None:
    staging, shards = staged
    publisher.prepare()
    publisher.publish(staging, shards[:-1], "all but the last")
    problems = publisher.check_all(shards)
    assert problems[shards[-1].path] == "missing"
    assert all(problems[fact.path] is None for fact in shards[:-1])
    assert publisher.published_commit(shards) is None


def test_a_shard_whose_facts_differ_is_reported_in_the_same_words(
    publisher: Publisher, staged
) -> None:
    staging, shards = staged
    publisher.prepare()
    publisher.publish(staging, shards, "contract")
    fact = shards[0]
    bigger = ShardFact(fact.table, fact.path, fact.n_rows, fact.n_bytes + 1, fact.sha256)
    other_hash = ShardFact(fact.table, fact.path, fact.n_rows, fact.n_bytes, "0" * 64)
    more_rows = ShardFact(fact.table, fact.path, fact.n_rows + 1, fact.n_bytes, fact.sha256)
    problems = [publisher.check_all([f])[fact.path] for f in (bigger, other_hash, more_rows)]
    assert problems == [
        f"size {fact.n_bytes} != journaled {fact.n_bytes + 1}",
        "sha256 differs from the journal",
        f"{fact.n_rows} rows != journaled {fact.n_rows + 1}",
    ]


def test_the_recorded_config_rebuilds_the_same_destination(publisher: Publisher, staged) -> None:
    staging, shards = staged
    publisher.prepare()
    publisher.publish(staging, shards, "contract")
    recorded = json.loads(json.dumps(publisher.config))  # what the journal keeps
    assert "token" not in json.dumps(recorded).lower()
    rebuilt = publisher_from_config(recorded)
    assert type(rebuilt) is type(publisher) and rebuilt.config == publisher.config
    assert rebuilt.published_commit(shards) == publisher.published_commit(shards)


# -- sources -------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(kind: str, tree: Path) -> Iterator[Source]:
    """The ``kind`` of source over the benchmark_output folder ``tree``."""
    if kind == "folder":
        yield DirSource(tree, release=RELEASE)
        return
    with BucketServer() as server:
        server.mount("lite/benchmark_output", tree)
        yield HttpSource(server.base_url, project="lite", release=RELEASE)


@pytest.fixture(params=["folder", "bucket"])
def source_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tree_source(source_kind: str, tmp_path: Path) -> Iterator[tuple[Path, Source]]:
    """(the benchmark_output tree it reads, the source), for a copy of the fixture."""
    tree = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, tree)
    with serving(source_kind, tree) as source:
        yield tree, source


def release_index(tree: Path) -> dict[str, str]:
    """Run name -> suite, from the release's own index."""
    return json.loads((tree / "releases" / RELEASE / RUNS_INDEX).read_text())


def test_discovery_lists_the_release_in_a_stable_order(tree_source) -> None:
    tree, source = tree_source
    refs = source.discover()
    assert {ref.run_name: ref.suite for ref in refs} == release_index(tree)
    assert refs == sorted(refs) and refs == source.discover()
    assert {ref.release for ref in refs} == {RELEASE}


def test_fetch_gives_the_run_files_byte_for_byte(tree_source, tmp_path: Path) -> None:
    tree, source = tree_source
    for ref in source.discover()[:2]:
        run_dir = source.fetch(ref, tmp_path / "scratch" / ref.run_name)
        original = tree / "runs" / ref.suite / ref.run_name
        for name in REQUIRED_RUN_FILES:
            assert (run_dir / name).read_bytes() == (original / name).read_bytes(), name


def test_the_recorded_config_rebuilds_the_same_source(tree_source) -> None:
    _, source = tree_source
    recorded = json.loads(json.dumps(source.config))  # what the journal keeps
    rebuilt = source_from_config(recorded)
    assert type(rebuilt) is type(source) and rebuilt.discover() == source.discover()


def test_a_file_over_the_limit_fails_only_its_run(tree_source, tmp_path: Path) -> None:
    _, source = tree_source
    ref = source.discover()[0]
    with pytest.raises(RunConversionError, match="larger than --max-file-bytes"):
        source.fetch(ref, tmp_path / "scratch", max_file_bytes=10)


def test_a_run_missing_from_the_tree_fails_only_its_run(source_kind: str, tmp_path: Path) -> None:
    tree = tmp_path / "benchmark_output"
    shutil.copytree(FIXTURE, tree)
    suites = release_index(tree)
    gone, kept = sorted(suites)[:2]
    shutil.rmtree(tree / "runs" / suites[gone] / gone)
    with serving(source_kind, tree) as source:
        refs = {ref.run_name: ref for ref in source.discover()}
        with pytest.raises(RunConversionError):
            source.fetch(refs[gone], tmp_path / "scratch" / "gone")
        fetched = source.fetch(refs[kept], tmp_path / "scratch" / "kept")
        assert (fetched / REQUIRED_RUN_FILES[0]).exists()
