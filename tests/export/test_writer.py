"""Tests of ``helmproc export-eee``: a dataset folder -> the EEE datastore layout.

The dataset is the fixture output of ``helmproc run`` (a real subprocess, once per session).
Expected values are read from the dataset's Parquet tables with pyarrow and checked against
EEE's JSON Schemas from the ``every-eval-ever`` package (``eee_schemas`` tests); the rules
(uuid, layout) are restated here from the module docstrings.
Variants of the dataset (runs split across mixed row groups, no statistics, a run published
twice, damaged values) are built by rewriting its Parquet files.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helmproc.engine.export import dataset_reader as dataset_index
from helmproc.engine.export.layout import file_uuid, record_layout, safe_component
from helmproc.engine.export.records import sample_record
from helmproc.engine.export.writer import (
    DatasetError,
    DatasetNotFoundError,
    ExportReport,
    export_eee,
)
from tests.fakes.eee_schemas import eee_schema
from tests.fakes.jobkit import HELMPROC
from tests.fakes.jobkit import helmproc as run_helmproc

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "benchmark_output"
# `helmproc run --source FIXTURE` names the project after the folder holding benchmark_output/
PROJECT = FIXTURE.parent.name
EPOCH = "1800000000"
RunId = tuple[str, str, str]


# --- fixtures -------------------------------------------------------------------------------


def helmproc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helmproc(cwd, *args, epoch=EPOCH)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("dataset")
    proc = helmproc(work, "run", "--source", str(FIXTURE), "--to", "ds", "-q")
    assert proc.returncode == 0, proc.stderr
    return work / "ds"


@pytest.fixture(scope="session")
def exported(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportReport]:
    out = tmp_path_factory.mktemp("eee")
    return out, export_eee(dataset, out)


def read_table(dataset: Path, table: str) -> pa.Table:
    return pads.dataset(dataset / table, format="parquet").to_table()


def run_id(row: dict[str, Any]) -> RunId:
    return (row["helm_project"], row["helm_suite"], row["helm_run"])


def by_run(table: pa.Table) -> dict[RunId, list[dict[str, Any]]]:
    grouped: dict[RunId, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in table.to_pylist():
        grouped[run_id(row)].append(row)
    return grouped


def strict_json(text: str) -> Any:
    def reject(value: str) -> None:
        raise ValueError(f"non-finite number {value}")

    return json.loads(text, parse_constant=reject)


def aggregates(out: Path) -> dict[RunId, tuple[Path, dict[str, Any]]]:
    """Every exported aggregate, keyed by the provenance it records."""
    found = {}
    for path in sorted(out.glob("data/*/*/*/*.json")):
        record = strict_json(path.read_text(encoding="utf-8"))
        details = record["source_metadata"]["additional_details"]
        key = (details["helm_project"], details["helm_suite"], details["helm_run"])
        assert key not in found, f"{key} exported twice"
        found[key] = (path, record)
    return found


def samples(out: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    path = out / record["detailed_evaluation_results"]["file_path"]
    return [strict_json(line) for line in path.read_text(encoding="utf-8").splitlines()]


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def expected_uuid(project: str, suite: str, run: str) -> str:
    """The documented rule: sha256 of the namespaced identity, uuid4 bits set."""
    digest = hashlib.sha256(f"helmproc.eee-export.v1\0{project}\0{suite}\0{run}".encode()).digest()
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


# --- the fixture export ---------------------------------------------------------------------


@pytest.mark.eee_schemas
def test_exported_records_validate_against_the_eee_schemas(
    exported: tuple[Path, ExportReport],
) -> None:
    import jsonschema

    out, report = exported
    aggregate_validator = jsonschema.Draft7Validator(eee_schema("eval.schema.json"))
    sample_validator = jsonschema.Draft7Validator(eee_schema("instance_level_eval.schema.json"))
    found = aggregates(out)
    assert len(found) == len(report.exported) >= 10  # the fixture's runs with aggregates
    n_lines = 0
    for _, record in found.values():
        aggregate_validator.validate(record)
        for line in samples(out, record):
            sample_validator.validate(line)
            n_lines += 1
    assert n_lines == report.n_samples > 2000


def test_counts_match_the_dataset(dataset: Path, exported: tuple[Path, ExportReport]) -> None:
    out, report = exported
    instances = by_run(read_table(dataset, "instances"))
    evaluations = by_run(read_table(dataset, "evaluations"))
    found = aggregates(out)
    assert set(found) == set(evaluations)  # every run with aggregates, and only those
    for key, (_, record) in found.items():
        assert len(record["evaluation_results"]) == len(evaluations[key])
        lines = samples(out, record)
        assert len(lines) == len(instances[key]) == record["detailed_evaluation_results"][
            "total_rows"
        ]
        samples_bytes = (out / record["detailed_evaluation_results"]["file_path"]).read_bytes()
        assert record["detailed_evaluation_results"]["checksum"] == (
            hashlib.sha256(samples_bytes).hexdigest()
        )
        assert samples_bytes.endswith(b"\n") and b"\r" not in samples_bytes
    assert report.dataset_instance_rows == sum(len(rows) for rows in instances.values())
    skipped_rows = sum(s.n_rows for s in report.skipped)
    assert report.n_samples + skipped_rows == report.dataset_instance_rows


def test_records_carry_the_dataset_values(
    dataset: Path, exported: tuple[Path, ExportReport]
) -> None:
    out, _ = exported
    instances = by_run(read_table(dataset, "instances"))
    evaluations = by_run(read_table(dataset, "evaluations"))
    for key, (_, record) in aggregates(out).items():
        rows = evaluations[key]
        results = record["evaluation_results"]
        assert [(r["evaluation_result_id"], r["score_details"]["score"]) for r in results] == [
            (r["evaluation_result_id"], r["score"]) for r in rows
        ]
        assert record["evaluation_id"] == rows[0]["evaluation_id"]
        assert record["retrieved_timestamp"] == EPOCH
        assert record["model_info"]["id"] == rows[0]["model_id"]
        lines = samples(out, record)
        got = [(s["sample_id"], s.get("evaluation_result_id"), s["evaluation"]["score"])
               for s in lines]
        want = [(r["sample_id"], r["evaluation_result_id"], r["evaluation"]["score"])
                for r in instances[key]]
        assert got == want  # same rows, same order (the dataset's row key order)
        for line, row in zip(lines, instances[key], strict=True):
            assert line["evaluation_id"] == record["evaluation_id"]
            assert line["model_id"] == record["model_info"]["id"]
            assert line["input"] == row["input"]
            assert list(line)[:4] == ["schema_version", "evaluation_id", "model_id",
                                      "evaluation_name"]
            assert "messages" in line and line["messages"] is None  # explicit nulls


def test_layout_and_stable_uuid4_names(exported: tuple[Path, ExportReport]) -> None:
    out, report = exported
    for (project, suite, run), (path, record) in aggregates(out).items():
        name = expected_uuid(project, suite, run)
        parsed = uuid.UUID(name)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        developer, _, model = record["model_info"]["id"].partition("/")
        collection = record["evaluation_results"][0]["evaluation_name"]
        folder = f"data/{collection}/{developer}/{model.replace('/', '_')}"
        assert path.relative_to(out).as_posix() == f"{folder}/{name}.json"
        assert record["detailed_evaluation_results"] == {
            "format": "jsonl",
            "file_path": f"{folder}/{name}_samples.jsonl",
            "hash_algorithm": "sha256",
            "checksum": record["detailed_evaluation_results"]["checksum"],
            "total_rows": record["detailed_evaluation_results"]["total_rows"],
        }
        assert file_uuid(project, suite, run) == name
    assert len({Path(r.aggregate_path).name for r in report.exported}) == len(report.exported)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(files) == report.n_files == 2 * len(report.exported)
    assert all(re.fullmatch(r"data/[^/]+/[^/]+/[^/]+/[0-9a-f-]{36}(_samples\.jsonl|\.json)", f)
               for f in files)


def test_reexport_gives_identical_bytes(dataset: Path, exported: tuple[Path, ExportReport],
                                        tmp_path: Path) -> None:
    out, _ = exported
    before = folder_bytes(out)
    export_eee(dataset, tmp_path / "again")
    assert folder_bytes(tmp_path / "again") == before
    export_eee(dataset, out)  # over the same folder: same names, same bytes, nothing new
    assert folder_bytes(out) == before


def test_reexport_removes_a_killed_exports_temp_files(
    dataset: Path, exported: tuple[Path, ExportReport], tmp_path: Path
) -> None:
    out, _ = exported
    before = folder_bytes(out)
    again = tmp_path / "again"
    export_eee(dataset, again)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid now names a writer that is gone
    samples = next(again.rglob("*.jsonl"))
    leftover = samples.with_name(f"{samples.name}.tmp-{child.pid}")
    leftover.write_bytes(samples.read_bytes()[:10])
    export_eee(dataset, again)
    assert folder_bytes(again) == before


def test_runs_without_aggregates_are_skipped_with_a_reason(
    exported: tuple[Path, ExportReport],
) -> None:
    _, report = exported
    assert [(s.run, s.n_rows) for s in report.skipped] == [
        (f"{PROJECT}/v1.0.0/simple1:model=simple_model1", 30)
    ]
    assert "no aggregate results" in report.skipped[0].reason


# --- dataset variants -----------------------------------------------------------------------

Edit = Callable[[pa.Table], pa.Table]


def rewrite(dataset: Path, table: str, edit: Edit, **write_options: Any) -> None:
    """Replace ``table`` by one file holding ``edit`` of its rows."""
    rows = edit(read_table(dataset, table))
    shutil.rmtree(dataset / table)
    target = dataset / table / "edited" / "0000" / f"{table}-000000.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(rows, target, **write_options)


@pytest.fixture
def variant(dataset: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "variant"
    shutil.copytree(dataset, copy)
    return copy


def same_rows(table: pa.Table) -> pa.Table:
    return table


def interleave(table: pa.Table) -> pa.Table:
    """Rows of all runs interleaved round-robin (each run keeps its own row order)."""
    rank: collections.Counter[str] = collections.Counter()
    keys = []
    for i, run in enumerate(table.column("helm_run").to_pylist()):
        keys.append((rank[run], run, i))
        rank[run] += 1
    return table.take(pa.array([i for *_, i in sorted(keys)]))


@pytest.mark.parametrize(
    ("edit", "write_options"),
    [
        # one file, every row group holding several runs: the filtered path
        (same_rows, {"row_group_size": 100}),
        # runs interleaved across row groups
        (interleave, {"row_group_size": 333}),
        # no statistics at all: every row group is a candidate for every run
        (same_rows, {"write_statistics": False, "row_group_size": 500}),
    ],
    ids=["mixed-row-groups", "interleaved", "no-statistics"],
)
def test_row_group_layout_does_not_change_the_export(
    variant: Path, exported: tuple[Path, ExportReport], tmp_path: Path, edit: Edit,
    write_options: dict[str, Any],
) -> None:
    out, _ = exported
    rewrite(variant, "instances", edit, **write_options)
    rewrite(variant, "evaluations", edit, **write_options)
    export_eee(variant, tmp_path / "out")
    assert folder_bytes(tmp_path / "out") == folder_bytes(out)


def test_small_batches_stream_the_same_bytes(
    dataset: Path, exported: tuple[Path, ExportReport], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out, report = exported
    seen: list[int] = []
    original = dataset_index.TableIndex.batches

    def recording(self: dataset_index.TableIndex, *args: Any, **kw: Any) -> Any:
        for batch in original(self, *args, **kw):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(dataset_index, "BATCH_ROWS", 7)
    monkeypatch.setattr(dataset_index.TableIndex, "batches", recording)
    export_eee(dataset, tmp_path / "out")
    assert folder_bytes(tmp_path / "out") == folder_bytes(out)
    assert max(seen) == 7 and sum(seen) >= report.n_samples


def drop_run(run: str) -> Edit:
    return lambda t: t.filter(pc.not_equal(t.column("helm_run"), run))


def test_run_without_instance_rows_gets_an_aggregate_only(variant: Path, tmp_path: Path) -> None:
    run = "dyck_language_np=3:model=simple_model1"
    rewrite(variant, "instances", drop_run(run))
    report = export_eee(variant, tmp_path / "out")
    (entry,) = [r for r in report.exported if r.run.endswith(run)]
    assert entry.samples_path is None and entry.n_samples == 0
    record = strict_json((tmp_path / "out" / entry.aggregate_path).read_text())
    assert "detailed_evaluation_results" not in record
    assert not list((tmp_path / "out" / entry.aggregate_path).parent.glob("*.jsonl"))


def test_a_run_published_twice_is_skipped(variant: Path, tmp_path: Path) -> None:
    for table in ("runs", "evaluations", "instances"):
        (job,) = list((variant / table).iterdir())
        shutil.copytree(job, variant / table / "second-job")
    report = export_eee(variant, tmp_path / "out")
    assert report.exported == ()
    assert len(report.skipped) == read_table(variant, "runs").num_rows // 2
    assert all("listed 2 times in the runs table" in s.reason for s in report.skipped)
    assert not (tmp_path / "out" / "data").exists()


def set_where(column: str, run: str, value: Any) -> Edit:
    def edit(table: pa.Table) -> pa.Table:
        index = table.schema.get_field_index(column)
        match = pc.equal(table.column("helm_run"), run)
        field = table.schema.field(column)
        replaced = pc.if_else(match, pa.scalar(value, field.type), table.column(column))
        return table.set_column(index, field, replaced)

    return edit


MCQA = "simple_mcqa:model=fixture_echo-model-2"


@pytest.mark.parametrize(
    ("table", "edit", "reason"),
    [
        # a run the converter failed: no rows, listed as failed
        ("runs", set_where("outcome", MCQA, "failed"), "conversion failed"),
        # NaN is not JSON: EEE's strict parser would reject the file
        ("evaluations", set_where("score", MCQA, float("nan")), "not valid JSON"),
        # an instance row of another evaluation
        ("instances", set_where("evaluation_id", MCQA, "x/y/1"), "has evaluation_id 'x/y/1'"),
        # the same result twice
        ("evaluations", set_where("evaluation_result_id", MCQA, "same"), "occurs twice"),
    ],
    ids=["failed-run", "nan-score", "foreign-instance-row", "duplicate-result-id"],
)
def test_damaged_runs_are_skipped_and_the_others_exported(
    variant: Path, tmp_path: Path, table: str, edit: Edit, reason: str
) -> None:
    rewrite(variant, table, edit)
    report = export_eee(variant, tmp_path / "out")
    skipped = {s.run.rpartition("/")[2]: s.reason for s in report.skipped}
    assert reason in skipped.pop(MCQA)
    assert list(skipped) == ["simple1:model=simple_model1"]
    evaluated = set(read_table(variant, "evaluations").column("helm_run").to_pylist())
    assert len(report.exported) == len(evaluated - {MCQA})
    assert not list((tmp_path / "out").rglob("*.tmp-*"))
    assert not (tmp_path / "out" / "data" / "simple_mcqa" / "fixture").exists()


def test_missing_or_empty_dataset_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no such folder"):
        export_eee(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty" / "instances").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no helmproc dataset here"):
        export_eee(tmp_path / "empty", tmp_path / "out")


# --- records: rows the fixtures do not have ------------------------------------------------


@pytest.mark.eee_schemas
def test_fallback_rows_leave_evaluation_result_id_out(dataset: Path) -> None:
    import jsonschema

    validator = jsonschema.Draft7Validator(eee_schema("instance_level_eval.schema.json"))
    row = read_table(dataset, "instances").slice(0, 1).to_pylist()[0]
    row["evaluation_result_id"] = None
    row["metadata"] = [{"key": "subject", "value": "x"}]
    row["a_future_column"] = "not an EEE field"
    record = sample_record(row, "dev/model")
    assert "evaluation_result_id" not in record
    assert record["metadata"] == {"subject": "x"} and record["model_id"] == "dev/model"
    assert not any(k.startswith("helm_") for k in record) and "a_future_column" not in record
    validator.validate(record)


# --- layout rules ---------------------------------------------------------------------------

BAD_CHARS = re.compile(r'[<>:"\\|?*\x00-\x1f]')
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
            *(f"LPT{i}" for i in range(1, 10))}


def eee_accepts(component: str) -> bool:
    """EEE's path rules for one collection/developer/model component."""
    return (
        component not in ("", ".", "..", "data")
        and component.lower() != "unknown"
        and component == component.strip()
        and not BAD_CHARS.search(component)
        and not component.endswith((".", " "))
        and component.split(".", 1)[0].upper() not in RESERVED
    )


def eee_folder(model_id: str, developer: str | None) -> tuple[str, str]:
    """Where EEE files a model id: (developer, model), per EEE's layout rules."""
    parts = [p.strip().replace(":", "_") for p in model_id.strip().split("/")]
    assert all(eee_accepts(p) for p in parts), f"EEE refuses {model_id!r}"
    if len(parts) == 1:
        assert developer is not None
        return developer.strip().replace(":", "_"), parts[0]
    return parts[0], "_".join(parts[1:])


def layout_of(model_id: str, deployment: str | None = None, developer: str | None = None,
              name: str = "mmlu") -> Any:
    return record_layout("p", "s", "r", evaluation_name=name, model_id=model_id,
                         model_developer=developer, model_deployment=deployment)


@pytest.mark.parametrize(
    ("model_id", "deployment", "developer", "folder", "record_id"),
    [
        ("openai/gpt2", "huggingface/gpt2", "openai", "openai/gpt2", "openai/gpt2"),
        # colons: EEE keeps them in the id and writes _ in the folder
        ("meta/llama:8b", None, "meta", "meta/llama_8b", "meta/llama:8b"),
        ("a/b/c", None, "a", "a/b_c", "a/b/c"),
        # names EEE refuses get a _ prefix, and the id follows the folder
        ("data/model", None, "data", "_data/model", "_data/model"),
        ("Unknown/x", None, "Unknown", "_Unknown/x", "_Unknown/x"),
        ("con/x", None, "con", "_con/x", "_con/x"),
        ("dev/..", None, "dev", "dev/_", "dev/_"),
        ("dev//x", None, "dev", "dev/__x", "dev/_/x"),
        ('dev/a"b?', None, "dev", "dev/a_b_", "dev/a_b_"),
        # flat ids: developer from the run's data
        ("gpt2", "huggingface/gpt2", None, "huggingface/gpt2", "gpt2"),
        ("gpt2", None, None, "unattributed/gpt2", "gpt2"),
        ("gpt2", None, "openai", "openai/gpt2", "gpt2"),
    ],
)
def test_model_layout(model_id: str, deployment: str | None, developer: str | None,
                      folder: str, record_id: str) -> None:
    layout = layout_of(model_id, deployment, developer)
    assert f"{layout.developer}/{layout.model}" == folder
    assert layout.model_id == record_id
    assert layout.helm_model_id == (None if record_id == model_id else model_id)
    assert eee_folder(layout.model_id, layout.model_developer) == (layout.developer, layout.model)


@pytest.mark.parametrize(
    ("name", "collection"),
    [("mmlu", "mmlu"), ("a/b:c", "a_b_c"), ("data", "_data"), ("", "_"), ("x.", "x")],
)
def test_collection_names(name: str, collection: str) -> None:
    assert layout_of("d/m", name=name).collection == collection


def identity_text(max_size: int) -> st.SearchStrategy[str]:
    """Text rich in what path rules care about: separators, dots, spaces, reserved names."""
    pieces = st.sampled_from(
        ["/", ":", ".", "..", " ", "\u3000", "data", "unknown", "CON", "com1", "a", "B-7", '"',
         "?", "\\", "\x00", "\x1f", "é"]
    )
    return st.lists(st.one_of(pieces, st.characters()), max_size=max_size).map("".join)


@settings(max_examples=500, deadline=None)
@given(
    identity_text(20),
    st.one_of(st.none(), identity_text(8)),
    st.one_of(st.none(), identity_text(8)),
    identity_text(12),
)
def test_any_identity_gets_a_folder_eee_accepts_and_agrees_with(
    model_id: str, deployment: str | None, developer: str | None, name: str
) -> None:
    layout = layout_of(model_id, deployment, developer, name)
    for component in (layout.collection, layout.developer, layout.model):
        assert eee_accepts(component), component
    # the record's identity files exactly where it is written (EEE's identity-path check)
    assert eee_folder(layout.model_id, layout.model_developer) == (layout.developer, layout.model)
    assert layout_of(model_id, deployment, developer, name) == layout
    assert safe_component(layout.developer) == layout.developer


def test_uuids_differ_per_run_and_are_v4() -> None:
    names = {file_uuid("p", s, r) for s in ("v1", "v2") for r in ("a", "b", "a:b", "")}
    assert len(names) == 8
    for name in names:
        parsed = uuid.UUID(name)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == name
    assert file_uuid("p", "v1", "a") == expected_uuid("p", "v1", "a")


# --- the command ----------------------------------------------------------------------------


def test_cli_exports_and_prints_a_summary(dataset: Path, exported: tuple[Path, ExportReport],
                                          tmp_path: Path) -> None:
    out, report = exported
    counts = report.to_json()
    proc = helmproc(tmp_path, "export-eee", "--from", str(dataset), "--to", "eee")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        f"exported {counts['runs_exported']} runs to eee: {counts['files']} files, "
        f"{counts['results']} aggregate results, {counts['samples_rows']} sample rows; "
        "skipped 1 run"
    )
    assert f"skipped {PROJECT}/v1.0.0/simple1:model=simple_model1 (30 instance rows): no " \
        "aggregate" in proc.stdout
    assert folder_bytes(tmp_path / "eee") == folder_bytes(out)
    proc = helmproc(tmp_path, "export-eee", "--from", str(dataset), "--to", "eee", "--json")
    summary = json.loads(proc.stdout)
    assert {k: v for k, v in summary.items() if k != "out"} == {
        k: v for k, v in counts.items() if k != "out"
    }
    assert summary["skipped"][0]["instance_rows"] == 30
    assert {r["aggregate"] for r in summary["exported"]} == {
        p.relative_to(out).as_posix() for p in out.glob("data/*/*/*/*.json")
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--from", "nope", "--to", "x"], 2, "helmproc: no dataset folder: nope: no such folder"),
        (["--from", "empty", "--to", "x"], 1, "helmproc: not a helmproc dataset: empty:"),
        (["--to", "x"], 2, "Missing option '--from'"),
    ],
    ids=["missing", "empty", "usage"],
)
def test_cli_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "empty").mkdir()
    proc = helmproc(tmp_path, "export-eee", *args)
    assert (proc.returncode, proc.stdout) == (code, "")
    assert message in proc.stderr
    assert not (tmp_path / "x").exists()


def test_cli_io_errors_name_the_run_and_the_repair(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the output folder should go")
    proc = helmproc(tmp_path, "export-eee", "--from", str(dataset), "--to", "taken")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert f"helmproc: export-eee could not read or write: run {PROJECT}/" in proc.stderr
    assert "run the same `helmproc export-eee`" in proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    path = sorted((broken / "runs").rglob("*.parquet"))[0]
    path.write_bytes(b"not parquet")
    proc = helmproc(tmp_path, "export-eee", "--from", "broken", "--to", "out")
    assert proc.returncode == 1
    assert "helmproc: not a helmproc dataset: broken: cannot read the Parquet footers" in (
        proc.stderr
    )


def test_cli_help() -> None:
    proc = subprocess.run([*HELMPROC, "export-eee", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--from" in proc.stdout and "--to" in proc.stdout and "--json" in proc.stdout
