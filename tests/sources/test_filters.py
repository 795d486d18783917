"""Run filters and MultiSource on local sources: selection, determinism, recorded config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helmproc.engine.errors import ConfigError
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources import filters as run_filters
from helmproc.engine.sources.filters import FilteredSource, RunFilters, SpecFacts
from helmproc.engine.sources.folder import DirSource, MultiSource
from helmproc.engine.sources.registry import source_from_config
from tests.fakes.jobkit import FIXTURE

RELEASE_RUNS = sorted(json.loads((FIXTURE / "releases/v1.1.0/runs_to_run_suites.json").read_text()))


def names(source: object) -> list[str]:
    return [r.run_name for r in source.discover()]  # type: ignore[attr-defined]


def filtered(**kw: object) -> FilteredSource:
    return FilteredSource(DirSource(FIXTURE, release="v1.1.0"), RunFilters.build(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw, expected",
    [
        # include: regex searched anywhere in the run name
        ({"include": [r"^simple_mcqa:"]}, [
            "simple_mcqa:model=fixture_echo-model-2",
            "simple_mcqa:model=simple_model1",
            "simple_mcqa:model=simple_model1,data_augmentation=lower",
        ]),
        # several includes are OR-ed, excludes win over includes
        ({"include": ["^dyck", "^simple1"], "exclude": ["dyck"]}, ["simple1:model=simple_model1"]),
        # adapter method comes from run_specs.json, not the name
        ({"adapter_methods": ["multiple_choice_separate_original"]}, [
            "simple_mcqa_method:method=multiple_choice_separate_original,model=simple_model1",
        ]),
        # model as written in the spec ...
        ({"models": ["fixture/echo-model-2"]}, [
            "simple_mcqa:model=fixture_echo-model-2",
            "synthetic_reasoning_natural:difficulty=easy,model=fixture_echo-model-2",
        ]),
        # ... or as sanitised in run names
        ({"models": ["fixture_echo-model-2"], "adapter_methods": ["generation"]}, [
            "synthetic_reasoning_natural:difficulty=easy,model=fixture_echo-model-2",
        ]),
        # a model nobody ran
        ({"models": ["openai/gpt2"]}, []),
    ],
)
def test_filters_select_runs(kw: dict, expected: list[str]) -> None:
    got = names(filtered(**kw))
    assert sorted(got) == sorted(expected)
    # the suite is part of the sort key, so compare as sets above and check order separately
    refs = filtered(**kw).discover()
    assert refs == sorted(refs)


def test_limit_applies_after_sorting_and_filters() -> None:
    everything = DirSource(FIXTURE, release="v1.1.0").discover()
    assert filtered(limit=4).discover() == sorted(everything)[:4]
    generation = filtered(adapter_methods=["generation"]).discover()
    assert len(generation) == 7
    assert filtered(adapter_methods=["generation"], limit=3).discover() == generation[:3]
    # limit larger than what is there keeps everything
    assert filtered(limit=100).discover() == sorted(everything)


def test_release_mode_reads_run_specs_index_once(monkeypatch: pytest.MonkeyPatch) -> None:
    per_run: list[Path] = []
    index_reads: list[Path] = []
    real_spec, real_index = run_filters._read_spec, run_filters._read_specs_index
    monkeypatch.setattr(
        run_filters, "_read_spec", lambda p, root: per_run.append(p) or real_spec(p, root)
    )
    monkeypatch.setattr(
        run_filters,
        "_read_specs_index",
        lambda p, root: index_reads.append(p) or real_index(p, root),
    )
    assert len(names(filtered(adapter_methods=["generation"]))) == 7
    assert [p.name for p in index_reads] == ["run_specs.json"]
    assert per_run == []  # every run of the release is in run_specs.json


def test_suite_mode_and_bare_folders_read_each_run_spec(tmp_path: Path) -> None:
    suite = FilteredSource(
        DirSource(FIXTURE, suite="v1.0.0"), RunFilters.build(adapter_methods=["generation"])
    )
    assert names(suite) == [
        "dyck_language_np=3:model=simple_model1",
        "simple1:model=simple_model1",
        "simple_classification:model=simple_model1",
        "synthetic_reasoning:mode=pattern_match,model=simple_model1",
    ]
    bare = tmp_path / "bare"
    shutil.copytree(FIXTURE / "runs/v1.0.0", bare)
    (bare / "simple1:model=simple_model1/run_spec.json").write_text("{not json")
    only_mcqa = FilteredSource(DirSource(bare), RunFilters.build(models=["simple/model1"]))
    # the unreadable spec matches no model filter; the others are read from run_spec.json
    assert names(only_mcqa) == [
        "dyck_language_np=3:model=simple_model1",
        "simple_classification:model=simple_model1",
        "simple_mcqa:model=simple_model1",
        "synthetic_reasoning:mode=pattern_match,model=simple_model1",
    ]


def test_filters_are_recorded_and_rebuilt_from_config() -> None:
    source = filtered(include=["mcqa"], limit=2)
    config = source.config
    assert config["kind"] == "dir" and config["root"] == str(FIXTURE.resolve())
    assert config["filters"]["include"] == ["mcqa"] and config["filters"]["limit"] == 2
    rebuilt = source_from_config(json.loads(json.dumps(config)))
    assert isinstance(rebuilt, FilteredSource)
    assert rebuilt.discover() == source.discover()
    # no filters: the config is exactly DirSource's (old journals keep their job ids)
    assert "filters" not in source_from_config(DirSource(FIXTURE).config).config


def test_filters_change_the_job_id(tmp_path: Path) -> None:
    def job_id(source: object) -> str:
        started = start_job(
            source,  # type: ignore[arg-type]
            DirPublisher(tmp_path / "out"),
            chunk_size=4,
            work_root=tmp_path / "work",
        )
        with started.journal as journal:
            job = journal.job()
            assert job is not None
            return job.job_id

    plain = job_id(DirSource(FIXTURE, release="v1.1.0"))
    include = job_id(filtered(include=["mcqa"]))
    limit = job_id(filtered(include=["mcqa"], limit=2))
    assert len({plain, include, limit}) == 3


def test_filtered_job_converts_only_the_selected_runs(tmp_path: Path) -> None:
    source = filtered(include=["^simple_mcqa:"], exclude=["lower"])
    started = start_job(
        source, DirPublisher(tmp_path / "out"), chunk_size=1, work_root=tmp_path / "work"
    )
    with started.journal as journal:
        report = execute_job(journal, ExecOptions(max_workers=1)).to_json()
    assert started.n_runs == 2
    assert report["done"] and sum(report["runs"].values()) == 2


@pytest.mark.parametrize(
    "kw, text",
    [
        ({"include": ["("]}, "--include '\\(' is not a valid regex"),  # names flag and pattern
        ({"exclude": ["[a"]}, "--exclude"),
        ({"limit": 0}, "--limit must be at least 1"),
    ],
)
def test_bad_filter_values_are_config_errors(kw: dict, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        RunFilters.build(**kw)


def test_spec_filters_need_a_source_that_reads_specs() -> None:
    class Plain:
        config: dict = {"kind": "plain"}

        def discover(self) -> list:
            return DirSource(FIXTURE).discover()

    with pytest.raises(ConfigError, match="cannot read run specs"):
        FilteredSource(Plain(), RunFilters.build(models=["x"])).discover()
    # name filters work on any source
    assert len(FilteredSource(Plain(), RunFilters.build(limit=1)).discover()) == 1


def test_spec_facts_of_odd_specs() -> None:
    assert SpecFacts.from_spec({"adapter_spec": {"method": "generation"}}) == SpecFacts(
        "generation", None, None
    )
    assert SpecFacts.from_spec({"adapter_spec": "nope"}) is None
    assert SpecFacts.from_spec([]) is None
    facts = SpecFacts("generation", "meta/llama-2-13b", "together/llama-2-13b")
    assert facts.model_names() == {
        "meta/llama-2-13b",
        "meta_llama-2-13b",
        "together/llama-2-13b",
        "together_llama-2-13b",
    }


# -- MultiSource -------------------------------------------------------------------------------


def test_multi_source_merges_projects_and_filters_across_them() -> None:
    lite = DirSource(FIXTURE, project="lite", release="v1.1.0")
    mmlu = DirSource(FIXTURE, project="mmlu", suite="v0.1.0")
    multi = MultiSource([lite, mmlu])
    refs = multi.discover()
    assert len(refs) == 12 + 2 and refs == sorted(refs)
    assert {r.project for r in refs} == {"lite", "mmlu"}
    config = multi.config
    assert [p["project"] for p in config["parts"]] == ["lite", "mmlu"]
    assert config["root"] == str(FIXTURE.resolve())  # shared by both parts: shown in the card
    rebuilt = source_from_config(json.loads(json.dumps(config)))
    assert rebuilt.discover() == refs
    mmlu_ref = next(r for r in refs if r.project == "mmlu")
    assert (multi.fetch(mmlu_ref, Path("/unused")) / "run_spec.json").exists()
    # filters over a multi source: limit counts across projects, in sorted order
    mcqa = FilteredSource(multi, RunFilters.build(adapter_methods=["multiple_choice_joint"]))
    assert {(r.project, r.suite) for r in mcqa.discover()} == {
        ("lite", "v1.0.0"),
        ("lite", "v1.1.0"),
        ("mmlu", "v0.1.0"),
    }


def test_multi_source_needs_distinct_projects() -> None:
    with pytest.raises(ConfigError, match="own project"):
        MultiSource([DirSource(FIXTURE, project="lite"), DirSource(FIXTURE, project="lite")])
