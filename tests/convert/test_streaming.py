"""Streaming huge run files: same output as the fast path, bounded memory, whole-run writes.

A run whose ``scenario_state.json`` / ``per_instance_stats.json`` exceed the streaming
threshold is read element by element (``helm_stream``) and its rows come out in batches. These
tests force that path with a threshold of 0 and small blocks / batches, on every fixture run
and on generated large runs (the generator of ``bench/convert_bench.py``, at a few MB here;
the 1 GB figure is the bench's), and check the tables equal the whole-file path's.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helmproc.engine.chunks.worker import ChunkSpec, w_process_chunk
from helmproc.engine.convert import run_index
from helmproc.engine.convert.converter import ConvertedRun, convert_run
from helmproc.engine.durable import simulate_disk_full
from helmproc.engine.errors import DiskFullError, RunConversionError
from helmproc.engine.facts import RunRef
from helmproc.engine.helm import array_stream as helm_stream
from helmproc.engine.helm.array_stream import iter_array_elements
from tests.convert.helm_runs import (
    FIXTURE_ROOT,
    JOB_TIMESTAMP,
    REAL_RUN_DIRS,
    VARIANTS,
    copy_run,
    edit_json,
    expected_rows,
    ref_for,
    rel,
    row_key,
)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "convert_bench.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("convert_bench", module)
    spec.loader.exec_module(module)
    return module


def convert(run_dir: Path, stream: bool, batch_bytes: int | None = None) -> ConvertedRun:
    return convert_run(
        run_dir,
        ref_for(run_dir),
        JOB_TIMESTAMP,
        stream_threshold_bytes=0 if stream else 1 << 40,
        batch_bytes=batch_bytes,
    )


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read blocks far smaller than an element, so elements always span blocks."""
    monkeypatch.setattr(helm_stream, "BLOCK_BYTES", 1000)


@pytest.fixture(autouse=True)
def reread_streamed_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed states are read back from the file, not kept decoded: the path every test here
    checks (keeping them is what ``test_kept_states_*`` below checks)."""
    monkeypatch.setattr(run_index, "KEEP_DECODED_BYTES", 0)


@pytest.fixture(scope="module")
def large_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~3 MB scenario_state.json in HELM's layout, with per-token top_logprobs."""
    root = tmp_path_factory.mktemp("large") / "v1.1.0"
    return Path(load_bench().write_large_run(root / "large:model=simple_model1", 3 << 20))


@pytest.fixture(scope="module")
def compact_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of run written compactly (no indentation: the generic scanner)."""
    root = tmp_path_factory.mktemp("compact") / "v1.1.0"
    run = root / "compact:model=simple_model1"
    return Path(load_bench().write_large_run(run, 1 << 20, indent=None))


def assert_same_run(streamed: ConvertedRun, whole: ConvertedRun) -> None:
    """``streamed`` came from ``convert(..., True)`` (threshold 0: every file streams), ``whole``
    from ``convert(..., False)`` (threshold 1 TiB: every file decodes whole)."""
    assert streamed.instances.equals(whole.instances)
    assert streamed.evaluations.equals(whole.evaluations)
    assert (streamed.n_instances, streamed.n_rows) == (whole.n_instances, whole.n_rows)
    assert streamed.n_rows == streamed.instances.num_rows


# --- same tables as the fast path ------------------------------------------------------------


@pytest.mark.parametrize("run_dir", REAL_RUN_DIRS, ids=rel)
def test_every_fixture_run_streams_to_the_same_tables(run_dir: Path, small_blocks: None) -> None:
    assert_same_run(convert(run_dir, True, batch_bytes=2000), convert(run_dir, False))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_streams_to_the_same_tables(tmp_path: Path, variant: str) -> None:
    relative, edit = VARIANTS[variant]
    run_dir = copy_run(relative, tmp_path)
    edit(run_dir)
    assert_same_run(convert(run_dir, True, batch_bytes=5000), convert(run_dir, False))


@pytest.mark.parametrize("fixture_name", ["large_run", "compact_run"])
def test_generated_large_run_streams_to_the_same_tables(
    request: pytest.FixtureRequest, fixture_name: str
) -> None:
    run_dir: Path = request.getfixturevalue(fixture_name)
    streamed = convert(run_dir, True, batch_bytes=256 << 10)
    batches = list(streamed.instance_batches())
    assert len(batches) > 3  # the rows did come out in several batches
    assert sum(b.num_rows for b in batches) == streamed.n_rows
    whole = convert(run_dir, False)
    assert_same_run(streamed, whole)
    rows = whole.instances.to_pylist()
    assert {row_key(r): r["evaluation"]["score"] for r in rows} == expected_rows(run_dir)
    assert {r["evaluation"]["score"] for r in rows} == {0.0, 0.5, 1.0}


def _state_spans(run_dir: Path) -> int:
    return sum(1 for _ in iter_array_elements(run_dir / "scenario_state.json", "request_states"))


@pytest.mark.parametrize("keep", ["none", "some", "all"])
def test_kept_states_give_the_same_tables_as_states_read_again(
    large_run: Path, monkeypatch: pytest.MonkeyPatch, keep: str
) -> None:
    """Streamed states decoded once and kept (up to KEEP_DECODED_BYTES), read back from the
    file past it, or a mix: the same tables as the whole-file path, and every state not kept
    is read back exactly once."""
    budget = {"none": 0, "some": 200_000, "all": 1 << 40}[keep]
    monkeypatch.setattr(run_index, "KEEP_DECODED_BYTES", budget)
    reads: list[int] = []
    real_read_span = run_index.read_span

    def counting(fh: Any, offset: int, length: int) -> bytes:
        reads.append(offset)
        return real_read_span(fh, offset, length)

    monkeypatch.setattr(run_index, "read_span", counting)
    streamed = convert(large_run, True, batch_bytes=256 << 10)
    assert_same_run(streamed, convert(large_run, False))
    n_states = _state_spans(large_run)
    assert len(reads) == len(set(reads))
    if keep == "none":
        assert len(reads) == n_states
    elif keep == "some":
        assert 0 < len(reads) < n_states
    else:
        assert reads == []


def test_batches_do_not_depend_on_the_path(large_run: Path) -> None:
    """Same batch boundaries either way, so the Parquet bytes do not depend on the path."""
    streamed = [b.num_rows for b in convert(large_run, True, 64 << 10).instance_batches()]
    whole = [b.num_rows for b in convert(large_run, False, 64 << 10).instance_batches()]
    assert streamed == whole and len(whole) > 10


def test_lone_surrogates_and_nan_stream_through_the_slow_decoder(tmp_path: Path) -> None:
    """Elements msgspec rejects (lone surrogate escapes, bare NaN) take the fallback decoder
    element by element, with the same result as the whole-file fallback."""
    run_dir = copy_run("v1.0.0/simple_mcqa:model=simple_model1", tmp_path)
    path = run_dir / "scenario_state.json"
    path.write_text(path.read_text().replace('"text": "Answer:"', '"text": "Answer:\\ud83d"', 1))
    edit_json(
        run_dir / "per_instance_stats.json",
        lambda e: [{**e[0], "stats": [{**e[0]["stats"][0], "mean": float("nan")}]}, *e[1:]],
    )
    streamed, whole = convert(run_dir, True), convert(run_dir, False)
    assert_same_run(streamed, whole)
    assert "Answer:\ufffd" in {r["output"]["raw"][0] for r in streamed.instances.to_pylist()}


# --- memory ---------------------------------------------------------------------------------


def python_peak_bytes(run_dir: Path, stream: bool) -> int:
    """Peak Python heap while converting (Arrow buffers are not traced; rows are dropped).

    A conversion runs first untraced: modules the converter imports on first use and the
    tables they build (HELM's headline metrics, decoders) are not the run's cost."""
    for _ in convert(run_dir, stream, batch_bytes=64 << 10).instance_batches():
        pass
    tracemalloc.start()
    try:
        run = convert(run_dir, stream, batch_bytes=64 << 10)
        for _ in run.instance_batches():
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streaming_never_holds_a_big_file(
    large_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed peak does not grow with the file: four times the bytes, the same peak
    (give or take a quarter), and well under the file; decoding whole holds more than it."""
    monkeypatch.setattr(helm_stream, "BLOCK_BYTES", 64 << 10)  # the file is many blocks
    bigger = Path(load_bench().write_large_run(tmp_path / "v1.1.0" / "large:model=simple_model1",
                                               12 << 20))
    small_bytes = (large_run / "scenario_state.json").stat().st_size
    big_bytes = (bigger / "scenario_state.json").stat().st_size
    assert big_bytes > 3 * small_bytes
    small_peak = python_peak_bytes(large_run, True)
    big_peak = python_peak_bytes(bigger, True)
    assert big_peak < small_peak * 1.25
    assert big_peak < big_bytes / 8
    assert python_peak_bytes(bigger, False) > big_bytes  # the measure can tell


# --- errors are the fast path's errors ----------------------------------------------------


def first_state(**fields: Any) -> Any:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        data["request_states"][0]["instance"].update(fields)
        return data

    return edit


STREAMED_ERRORS: list[Any] = [
    # (file, damage, expected reason prefix) - the whole-file path must say the same
    pytest.param(
        "scenario_state.json",
        lambda p: edit_json(p, lambda d: {"request_states": {"a": 1}}),
        "unexpected shape: Expected `array`, got `object` - at `$.request_states`",
        id="request_states not a list",
    ),
    pytest.param(
        "scenario_state.json",
        lambda p: edit_json(p, lambda d: {"adapter_spec": d["adapter_spec"]}),
        "unexpected shape: Object missing required field `request_states`",
        id="no request_states",
    ),
    pytest.param(
        "scenario_state.json",
        lambda p: edit_json(p, first_state(references="none")),
        "unexpected shape: Expected `array`, got `str` - at `$.request_states[0].instance.ref",
        id="references not a list",
    ),
    pytest.param(
        "per_instance_stats.json",
        lambda p: edit_json(p, lambda e: [*e[:2], {"stats": []}]),
        "unexpected shape: Object missing required field `instance_id` - at `$[2]`",
        id="entry without instance_id",
    ),
    pytest.param(
        "per_instance_stats.json",
        lambda p: edit_json(p, lambda e: [*e, e[0]]),
        "two entries for instance",
        id="duplicate entry",
    ),
    pytest.param(
        "scenario_state.json",
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "malformed JSON",
        id="truncated scenario_state",
    ),
    pytest.param(
        "per_instance_stats.json",
        lambda p: p.write_bytes(p.read_bytes()[:-3]),
        "malformed JSON",
        id="truncated per_instance_stats",
    ),
    pytest.param("scenario_state.json", Path.unlink, "missing", id="missing scenario_state"),
]


@pytest.mark.parametrize(("file", "damage", "reason"), STREAMED_ERRORS)
def test_streamed_files_fail_like_whole_files(
    tmp_path: Path, file: str, damage: Any, reason: str
) -> None:
    run_dir = copy_run("v1.0.0/simple_mcqa:model=simple_model1", tmp_path)
    damage(run_dir / file)
    for stream in (True, False):
        with pytest.raises(RunConversionError) as info:
            convert(run_dir, stream)
        assert info.value.file == file
        assert info.value.reason.startswith(reason), (stream, info.value.reason)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    file=st.sampled_from(["scenario_state.json", "per_instance_stats.json"]),
    where=st.floats(0, 1),
    length=st.integers(0, 40),
    insert=st.sampled_from(list(b'{}[]",:\\ \n0aN')),
)
def test_damaged_bytes_in_a_streamed_file_fail_only_with_run_conversion_error(
    tmp_path_factory: pytest.TempPathFactory, file: str, where: float, length: int, insert: int
) -> None:
    run_dir = copy_run("v1.0.0/simple_mcqa:model=simple_model1", tmp_path_factory.mktemp("d"))
    path = run_dir / file
    data = bytearray(path.read_bytes())
    at = int(where * (len(data) - 1))
    data[at : at + length] = bytes([insert])
    path.write_bytes(bytes(data))
    try:
        run = convert(run_dir, True, batch_bytes=3000)
        run.instances.validate(full=True)
    except RunConversionError as exc:
        # e.g. a damaged instance id in per_instance_stats.json has no request state
        assert exc.file in ("scenario_state.json", "per_instance_stats.json")


# --- the element scanner on its own ------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers() | st.text(alphabet='ab{}[]",:\\\n é')
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
objects = st.lists(st.dictionaries(st.text(max_size=4), json_value, max_size=4), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    elements=objects,
    indent=st.sampled_from([None, 0, 1, 2, 4, "\t"]),
    under_key=st.booleans(),
    block=st.integers(1, 64),
)
def test_scanner_cuts_exactly_the_array_elements(
    tmp_path_factory: pytest.TempPathFactory,
    elements: list[dict[str, Any]],
    indent: Any,
    under_key: bool,
    block: int,
) -> None:
    path = tmp_path_factory.mktemp("scan") / "data.json"
    document: Any = elements
    if under_key:
        document = {"before": {"x": ["]"]}, "request_states": elements, "after": [1, "}"]}
    path.write_text(json.dumps(document, indent=indent))
    key = "request_states" if under_key else None
    found = list(iter_array_elements(path, key, block_bytes=block))
    assert [json.loads(bytes(data)) for _, data in found] == elements
    raw = path.read_bytes()
    assert all(raw[offset : offset + len(data)] == bytes(data) for offset, data in found)


# --- the worker writes a run's rows whole or not at all --------------------------------------


def chunk_spec(source_root: Path, tmp_path: Path, names: list[str]) -> ChunkSpec:
    refs = tuple(RunRef("proj", "suite", name, None, name) for name in names)
    return ChunkSpec(
        job_id="job",
        chunk_id=0,
        runs=refs,
        source_config={"kind": "dir", "root": str(source_root), "project": "proj"},
        staging_root=str(tmp_path / "staging"),
        scratch_root=str(tmp_path / "scratch"),
        job_timestamp=JOB_TIMESTAMP,
    )


def spooled_files(tmp_path: Path) -> Iterator[Path]:
    return (p for p in (tmp_path / "scratch").rglob("*") if p.is_file())


def test_worker_spools_big_runs_and_drops_a_run_that_fails_midway(
    tmp_path: Path, large_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helmproc.engine.chunks import spool as run_spool
    from helmproc.engine.convert import converter as convert_module
    from helmproc.engine.convert import instance_rows
    monkeypatch.setattr(convert_module, "STREAM_THRESHOLD_BYTES", 0)
    monkeypatch.setattr(instance_rows, "BATCH_BYTES", 128 << 10)
    spooled: list[Path] = []
    real_spool = run_spool._spool

    def spy(path: Path, tables: Iterator[pa.Table]) -> None:
        spooled.append(path)
        real_spool(path, tables)

    monkeypatch.setattr(run_spool, "_spool", spy)
    source = tmp_path / "source"
    good = Path(shutil.copytree(large_run, source / "good"))
    bad = Path(shutil.copytree(large_run, source / "bad"))
    # The last entry's request state has a placeholder whose key does not decrypt: the
    # failure comes from the batch iterator, after earlier batches were built.
    edit_json(bad / "scenario_state.json", _encrypt_last_prompt)
    (bad / "encryption_data.json").write_text(json.dumps({"[encrypted_text_0]": BAD_KEY}))

    result = w_process_chunk(chunk_spec(source, tmp_path, ["bad", "good"]))
    outcomes = {o.run.run_name: o for o in result.outcomes}
    assert outcomes["bad"].ok is False
    assert outcomes["bad"].error is not None
    assert outcomes["bad"].error.startswith("encryption_data.json: cannot decrypt")
    shard = next(s for s in result.shards if s.table == "instances")
    rows = pq.read_table(tmp_path / "staging" / shard.path)
    assert set(rows.column("helm_run").to_pylist()) == {"good"}
    want = convert_run(good, RunRef("proj", "suite", "good", None, "good"), JOB_TIMESTAMP)
    assert rows.num_rows == want.n_rows == outcomes["good"].n_rows
    assert rows.equals(want.instances.cast(rows.schema))
    assert pq.ParquetFile(tmp_path / "staging" / shard.path).num_row_groups > 3
    assert list(spooled_files(tmp_path)) == []
    assert spooled and all(not p.exists() for p in spooled)


BAD_KEY = {"ciphertext": "AAAA", "key": "A" * 44, "iv": "A" * 16, "tag": "A" * 24}


def _encrypt_last_prompt(data: dict[str, Any]) -> dict[str, Any]:
    states = data["request_states"]
    last = max(states, key=lambda s: s["instance"]["id"])  # the last entry in row order
    last["request"]["prompt"] = "[encrypted_text_0]"
    return data


def test_single_batch_runs_are_not_spooled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from helmproc.engine.chunks import spool as run_spool
    run = FIXTURE_ROOT / "runs" / "v1.0.0" / "simple_mcqa:model=simple_model1"
    source = tmp_path / "source"
    shutil.copytree(run, source / "mcqa")
    spooled: list[Path] = []
    monkeypatch.setattr(run_spool, "_spool", lambda path, tables: spooled.append(path))
    result = w_process_chunk(chunk_spec(source, tmp_path, ["mcqa"]))
    assert result.outcomes[0].ok and result.outcomes[0].n_rows == 160
    assert spooled == []


def test_a_full_disk_while_spooling_stops_the_chunk_with_the_path(
    tmp_path: Path, large_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC writing a big run's spool is the machine's problem, not the run's: the chunk
    fails with ``DiskFullError`` naming the spool file, and the partial spool is removed."""
    from helmproc.engine.convert import converter as convert_module
    from helmproc.engine.convert import instance_rows
    monkeypatch.setattr(convert_module, "STREAM_THRESHOLD_BYTES", 0)
    monkeypatch.setattr(instance_rows, "BATCH_BYTES", 128 << 10)
    writes: dict[Path, int] = {}

    def after_one_batch(path: Path) -> bool:
        """The spool's first batch lands on disk, then the disk is full."""
        if path.suffix != ".arrow":
            return False
        writes[path] = writes.get(path, 0) + 1
        return writes[path] > 2  # the spool's own block, its first batch, then full

    source = tmp_path / "source"
    shutil.copytree(large_run, source / "big")
    with simulate_disk_full(after_one_batch), pytest.raises(DiskFullError) as caught:
        w_process_chunk(chunk_spec(source, tmp_path, ["big"]))
    assert caught.value.path.endswith(".arrow") and "instances-spool-" in caught.value.path
    assert list(spooled_files(tmp_path)) == []
