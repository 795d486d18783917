"""DirSource discovery in its three modes, on the real HELM fixture tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helmproc.engine.errors import ConfigError, RunConversionError, SourceError
from helmproc.engine.sources.folder import DirSource, newest_release
from helmproc.engine.sources.registry import source_from_config

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "benchmark_output"


def test_release_mode_reads_the_index_and_last_suite_wins() -> None:
    refs = DirSource(FIXTURE, project="demo", release="v1.1.0").discover()
    index = json.loads((FIXTURE / "releases/v1.1.0/runs_to_run_suites.json").read_text())
    assert {(r.suite, r.run_name) for r in refs} == {(s, n) for n, s in index.items()}
    assert len(refs) == 12
    # simple_mcqa:model=simple_model1 exists in v1.0.0 and v1.1.0; the index maps it to v1.1.0
    mcqa = [r for r in refs if r.run_name == "simple_mcqa:model=simple_model1"]
    assert [r.suite for r in mcqa] == ["v1.1.0"]
    assert all(r.release == "v1.1.0" and r.project == "demo" for r in refs)
    assert refs == sorted(refs)


def test_default_mode_picks_the_newest_release() -> None:
    assert DirSource(FIXTURE).discover() == DirSource(FIXTURE, release="v1.1.0").discover()


def test_suite_mode_lists_run_dirs_and_skips_summary_files() -> None:
    refs = DirSource(FIXTURE, suite="v0.1.0").discover()
    assert [r.run_name for r in refs] == [
        "simple1:model=simple_model1",
        "simple_mcqa:model=simple_model1",
    ]
    assert all(r.release is None and r.suite == "v0.1.0" for r in refs)


def test_bare_folder_takes_run_names_from_run_spec(tmp_path: Path) -> None:
    bare = tmp_path / "my_runs"
    bare.mkdir()
    src = FIXTURE / "runs/v1.0.0/simple_mcqa:model=simple_model1"
    shutil.copytree(src, bare / "simple_mcqa-model=simple_model1")  # ':' replaced, as on Windows
    (bare / "eval_cache").mkdir()
    (bare / "not_a_run").mkdir()
    refs = DirSource(bare).discover()
    assert len(refs) == 1
    assert refs[0].run_name == "simple_mcqa:model=simple_model1"
    assert refs[0].location == "simple_mcqa-model=simple_model1"
    assert refs[0].suite == "my_runs"
    assert DirSource(bare).fetch(refs[0], tmp_path).name == "simple_mcqa-model=simple_model1"


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        # a release that does not exist names the missing index
        ({"release": "v9.9.9"}, SourceError, "runs_to_run_suites.json"),
        # a suite that does not exist names the suite
        ({"suite": "nope"}, SourceError, "nope"),
    ],
)
def test_bad_selection_is_a_clear_error(kwargs: dict, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        DirSource(FIXTURE, **kwargs).discover()


def test_missing_root_and_conflicting_flags(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        DirSource(tmp_path / "absent")
    with pytest.raises(ConfigError, match="either"):
        DirSource(FIXTURE, release="v1.1.0", suite="v1.0.0")
    with pytest.raises(SourceError, match="no HELM runs"):
        DirSource(tmp_path).discover()


def test_fetch_of_a_listed_but_missing_run_fails_that_run(tmp_path: Path) -> None:
    root = tmp_path / "bo"
    shutil.copytree(FIXTURE / "releases", root / "releases")
    refs = DirSource(root, release="v1.1.0").discover()
    with pytest.raises(RunConversionError, match="missing"):
        DirSource(root, release="v1.1.0").fetch(refs[0], tmp_path)


def test_config_round_trip() -> None:
    src = DirSource(FIXTURE, project="lite", suite="v1.0.0")
    again = source_from_config(src.config)
    assert again.discover() == src.discover()


@pytest.mark.parametrize(
    "names, newest",
    [
        (["v1.9.0", "v1.10.0", "v1.2.0"], "v1.10.0"),  # numeric, not lexicographic
        (["v0.2.4", "v0.3.0", "v0.2.10"], "v0.3.0"),
        (["v1.0.0"], "v1.0.0"),
    ],
)
def test_newest_release_compares_numerically(names: list[str], newest: str) -> None:
    assert newest_release(names) == newest
