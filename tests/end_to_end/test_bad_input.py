"""The bad input catalogue: real fixture runs made bad, each run through a real job.

Every case builds a small release (three real fixture runs and their index), breaks one thing,
runs a whole job (planner, process pool, shards, DirPublisher) and checks the outcome the
catalogue promises: the case either converts (HELM's format allows it) or fails only the run
it concerns, with a reason naming the file and the problem, while the job finishes and the
other runs' rows equal those of a job over the unbroken tree. No case may read or write
anything outside the source, output and work folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from helmproc.engine.dataset_layout import TABLES
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.sources.bucket import HttpSource
from helmproc.engine.sources.folder import DirSource, Source
from helmproc.engine.sources.http_client import ClientSettings
from helmproc.journal import ChunkState, StatusReport, render_text
from helmproc.journal.status import MAX_RUNS_PER_REASON, RunFailure
from tests.fakes.bucket_server import BucketServer
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE

SUITE = "v1.0.0"
RELEASE = "v1.1.0"
VICTIM = "simple_classification:model=simple_model1"
OTHERS = ("simple1:model=simple_model1", "dyck_language_np=3:model=simple_model1")
RUNS = (VICTIM, *OTHERS)
INDEX = Path("releases") / RELEASE / "runs_to_run_suites.json"
LIMIT = 1_000_000  # --max-file-bytes of the oversized case; every fixture file is far below
FAST = ClientSettings(connect_timeout_s=2.0, read_timeout_s=2.0, deadline_s=10.0, max_attempts=2)


pytestmark = pytest.mark.usefixtures("fixed_epoch")


# -- building and reading trees ------------------------------------------------------------


def make_tree(root: Path) -> Path:
    """A release ``RELEASE`` of the three runs (real fixture files), all in suite ``SUITE``."""
    for run in RUNS:
        shutil.copytree(FIXTURE / "runs" / SUITE / run, root / "runs" / SUITE / run)
    write_index(root, [(run, SUITE) for run in RUNS])
    return root


def write_index(root: Path, entries: list[tuple[str, str]]) -> None:
    """The release index written member by member (so a key may repeat, as JSON text allows)."""
    members = ",\n".join(f"  {json.dumps(name)}: {json.dumps(suite)}" for name, suite in entries)
    (root / INDEX).parent.mkdir(parents=True, exist_ok=True)
    (root / INDEX).write_text("{\n" + members + "\n}\n")


def victim_file(root: Path, name: str) -> Path:
    return root / "runs" / SUITE / VICTIM / name


def run_job(
    source: Source, base: Path, max_file_bytes: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One whole job into ``base/out``: (status report, recorded job config)."""
    started = start_job(
        source,
        DirPublisher(base / "out"),
        chunk_size=2,
        work_root=base / "work",
        max_file_bytes=max_file_bytes,
    )
    with started.journal as journal:
        report = execute_job(journal, ExecOptions(max_workers=1)).to_json()
        job = journal.job()
    assert job is not None
    return report, job.config


def rows_by_run(dataset: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """table -> helm_run -> that run's rows, in shard order."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table in TABLES:
        by_run: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(dataset.glob(f"{table}/**/*.parquet")):
            for row in pq.read_table(path).to_pylist():
                by_run.setdefault(row["helm_run"], []).append(row)
        out[table] = by_run
    return out


def files_outside(base: Path, inside: tuple[str, ...] = ("src", "out", "work")) -> dict[str, str]:
    """Every file under ``base`` but outside the job's own folders: path -> sha256."""
    return {
        str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file() and p.relative_to(base).parts[0] not in inside
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[dict]]]:
    """Rows of a job over the unbroken tree."""
    base = tmp_path_factory.mktemp("good")
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    try:
        report, _ = run_job(DirSource(make_tree(base / "src")), base)
    finally:
        mp.undo()
    assert report["runs"] == {"ok": 3, "failed": 0}
    rows = rows_by_run(base / "out")
    assert rows["runs"].keys() == rows["instances"].keys() == set(RUNS)
    assert VICTIM in rows["evaluations"]
    return rows


# -- ways to break a tree: each returns the name of the run it concerns ----------------------


def truncate(name: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        path = victim_file(root, name)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return VICTIM

    return apply


def replace_bytes(name: str, old: bytes, new: bytes, count: int = 1) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        path = victim_file(root, name)
        data = path.read_bytes()
        assert old in data, f"{old!r} not in {name}"
        path.write_bytes(data.replace(old, new, count))
        return VICTIM

    return apply


def empty(name: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        victim_file(root, name).write_bytes(b"")
        return VICTIM

    return apply


def remove(name: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        victim_file(root, name).unlink()
        return VICTIM

    return apply


def remove_run_dir(root: Path) -> str:
    shutil.rmtree(root / "runs" / SUITE / VICTIM)
    return VICTIM


def nan_stats(root: Path) -> str:
    """Old HELM (< v0.2.4) wrote bare NaN into stats files."""
    for name in ("stats.json", "per_instance_stats.json"):
        path = victim_file(root, name)
        text = path.read_text()
        assert '"stddev": 0.0' in text
        path.write_text(text.replace('"stddev": 0.0', '"stddev": NaN'))
    return VICTIM


def add_unknown_fields(root: Path) -> str:
    """Fields a newer HELM might add, at every level the converter reads."""
    extra = {"helm_future_field": {"nested": [1, "two", None]}}

    def rewrite(name: str, change: Callable[[Any], None]) -> None:
        path = victim_file(root, name)
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data, indent=2))

    rewrite("run_spec.json", lambda d: (d.update(extra), d["adapter_spec"].update(extra)))
    rewrite("scenario.json", lambda d: d.update(extra))
    rewrite("stats.json", lambda d: [s.update(extra) for s in d])
    rewrite(
        "per_instance_stats.json",
        lambda d: [(e.update(extra), [s["name"].update(extra) for s in e["stats"]]) for e in d],
    )
    rewrite(
        "scenario_state.json",
        lambda d: (
            d.update(extra),
            [(rs.update(extra), rs["instance"].update(extra)) for rs in d["request_states"]],
        ),
    )
    return VICTIM


def oversize(root: Path) -> str:
    """scenario_state.json padded with whitespace (still valid JSON) past ``LIMIT``."""
    path = victim_file(root, "scenario_state.json")
    with path.open("ab") as fh:
        fh.write(b" " * (LIMIT + 1))
    return VICTIM


def index_entries(entries: Callable[[Path], list[tuple[str, str]]], run: str) -> Callable:
    def apply(root: Path) -> str:
        write_index(root, entries(root))
        return run

    return apply


def plant_outside_copy(root: Path) -> Path:
    """A valid copy of the victim next to the source folder: converting it would succeed, so a
    run that escapes the source would show up as ok."""
    outside = root.parent / "outside" / VICTIM
    shutil.copytree(FIXTURE / "runs" / SUITE / VICTIM, outside)
    return outside


def escaping_name(root: Path) -> list[tuple[str, str]]:
    plant_outside_copy(root)  # runs/v1.0.0/../../../outside/<victim> is that copy
    return [(f"../../../outside/{VICTIM}", SUITE), *[(r, SUITE) for r in OTHERS]]


def absolute_name(root: Path) -> list[tuple[str, str]]:
    return [(str(plant_outside_copy(root)), SUITE), *[(r, SUITE) for r in OTHERS]]


def escaping_suite(root: Path) -> list[tuple[str, str]]:
    plant_outside_copy(root)  # runs/../../outside/<victim> is that copy
    return [(VICTIM, "../../outside"), *[(r, SUITE) for r in OTHERS]]


def absolute_suite(root: Path) -> list[tuple[str, str]]:
    return [(VICTIM, str(plant_outside_copy(root).parent)), *[(r, SUITE) for r in OTHERS]]


DEPTH = 100_000  # nested arrays: far past Python's and msgspec's recursion limits


def deeply_nested(name: str) -> Callable[[Path], str]:
    """A field the converter ignores, holding ``DEPTH`` nested arrays, first in ``name``'s
    top-level value (an object or an array of objects)."""

    def apply(root: Path) -> str:
        path = victim_file(root, name)
        text = path.read_text()
        at = text.index("{") + 1
        deep = "[" * DEPTH + "]" * DEPTH
        path.write_text(text[:at] + f'"helm_future_field": {deep}, ' + text[at:])
        return VICTIM

    return apply


def plant_outside_file(root: Path, name: str) -> Path:
    """A valid copy of the victim's ``name`` outside the source (reading it would succeed)."""
    outside = root.parent / "outside" / name
    outside.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURE / "runs" / SUITE / VICTIM / name, outside)
    return outside


def link_file_outside(name: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        path = victim_file(root, name)
        path.unlink()
        path.symlink_to(plant_outside_file(root, name))
        return VICTIM

    return apply


def link_file_to(name: str, target: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        path = victim_file(root, name)
        path.unlink()
        path.symlink_to(target)
        return VICTIM

    return apply


def link_file_inside(root: Path) -> str:
    """scenario.json a link to an identical file elsewhere under the source root: followed."""
    path = victim_file(root, "scenario.json")
    kept = root / "shared" / "scenario.json"
    kept.parent.mkdir()
    path.rename(kept)
    path.symlink_to(os.path.relpath(kept, path.parent))
    return VICTIM


def link_run_dir_outside(root: Path) -> str:
    """The run's folder a link to a valid copy of the run outside the source."""
    run_dir = root / "runs" / SUITE / VICTIM
    shutil.rmtree(run_dir)
    run_dir.symlink_to(plant_outside_copy(root), target_is_directory=True)
    return VICTIM


def fifo(name: str) -> Callable[[Path], str]:
    """A FIFO nobody writes to: opening or reading it for real would block forever."""

    def apply(root: Path) -> str:
        path = victim_file(root, name)
        path.unlink()
        os.mkfifo(path)
        return VICTIM

    return apply


def device(name: str) -> Callable[[Path], str]:
    """A character device node like /dev/zero (1, 5) inside the run (needs root, as CI is)."""

    def apply(root: Path) -> str:
        path = victim_file(root, name)
        path.unlink()
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        return VICTIM

    return apply


def unix_socket(name: str) -> Callable[[Path], str]:
    def apply(root: Path) -> str:
        path = victim_file(root, name)
        path.unlink()
        here = os.getcwd()
        os.chdir(path.parent)  # a socket's path must be short: bind the bare name
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(name)
        finally:
            os.chdir(here)
        return VICTIM

    return apply


def negative_count(name: str) -> Callable[[Path], str]:
    """The first stat's count made negative (HELM never writes one)."""

    def apply(root: Path) -> str:
        path = victim_file(root, name)
        text = path.read_text()
        at = text.index('"count": ') + len('"count": ')
        path.write_text(text[:at] + "-" + text[at:])
        return VICTIM

    return apply


@dataclass(frozen=True)
class Case:
    """How to break the tree, and the outcome: ``file`` None = the run converts (and, with
    ``same_rows``, to exactly the reference rows); else it fails with ``file: ...problem``."""

    break_tree: Callable[[Path], str]
    file: str | None = None
    problems: tuple[str, ...] = ()
    same_rows: bool = False
    max_file_bytes: int | None = None
    group: str = ""  # its reason's group in `status` (failures_by_reason)


CASES = {
    # half of scenario_state.json: the JSON ends mid-value
    "truncated-json": Case(
        truncate("scenario_state.json"),
        "scenario_state.json",
        ("malformed JSON", "truncated"),
        group="scenario_state.json: malformed JSON",
    ),
    # a zero-byte stats.json (an interrupted copy)
    "empty-file": Case(
        empty("stats.json"),
        "stats.json",
        ("malformed JSON: empty file (0 bytes)",),
        group="stats.json: malformed JSON",
    ),
    # a raw 0xff byte inside a string of scenario.json (HELM writes ASCII-escaped JSON)
    "invalid-utf8": Case(
        replace_bytes("scenario.json", b'"name": "', b'"name": "\xff'),
        "scenario.json",
        ("malformed JSON: not valid UTF-8 (byte ", "invalid start byte"),
        group="scenario.json: malformed JSON",
    ),
    # bare NaN in stats.json and per_instance_stats.json (HELM < v0.2.4 wrote it): converts
    "bare-nan": Case(nan_stats),
    # a string where per_instance_stats.json has an int
    "wrong-type-field": Case(
        replace_bytes(
            "per_instance_stats.json", b'"train_trial_index": 0', b'"train_trial_index": "0"'
        ),
        "per_instance_stats.json",
        ("unexpected shape", "Expected `int`, got `str`", "$[0].train_trial_index"),
        group="per_instance_stats.json: unexpected shape",
    ),
    # stats.json an object where HELM writes an array
    "wrong-type-top-level": Case(
        replace_bytes("stats.json", b"[", b'{"stats": [', 1),
        "stats.json",
        ("unexpected shape",),
        group="stats.json: unexpected shape",
    ),
    # a required helm-run file absent (a run that died before writing it)
    "missing-required-file": Case(
        remove("per_instance_stats.json"),
        "per_instance_stats.json",
        ("missing",),
        group="per_instance_stats.json: missing",
    ),
    # the index lists a run whose directory is not there
    "missing-run-dir": Case(
        remove_run_dir,
        f"runs/{SUITE}/{VICTIM}",
        ("run directory is missing from the source",),
        group="<run>: run directory is missing from the source",
    ),
    # unknown extra fields everywhere (a newer HELM): ignored, rows unchanged
    "unknown-extra-fields": Case(add_unknown_fields, same_rows=True),
    # a file over --max-file-bytes: refused before it is read, with its size and the limit
    "over-max-file-bytes": Case(
        oversize,
        "scenario_state.json",
        # the fixture's scenario_state.json is 34761 bytes
        (f"larger than --max-file-bytes ({34761 + LIMIT + 1} bytes > {LIMIT})",),
        max_file_bytes=LIMIT,
        group="scenario_state.json: larger than --max-file-bytes",
    ),
    # the index repeats a key with the same suite: one run, converted once
    "index-duplicate-key-same-suite": Case(
        index_entries(lambda root: [(r, SUITE) for r in (VICTIM, *RUNS)], VICTIM),
        same_rows=True,
    ),
    # the index lists the run under two suites (duplicate key): ambiguous, so it fails
    "index-run-under-two-suites": Case(
        index_entries(lambda root: [(VICTIM, RELEASE), *[(r, SUITE) for r in RUNS]], VICTIM),
        "runs_to_run_suites.json",
        (f"lists the run under 2 suites ('{RELEASE}', '{SUITE}')",),
        group="runs_to_run_suites.json: lists the run under 2 suites",
    ),
    # a run name climbing out of the source with ../ (to a valid run outside)
    "index-name-with-dotdot": Case(
        index_entries(escaping_name, f"../../../outside/{VICTIM}"),
        "runs_to_run_suites.json",
        ("unsafe run path (part '..' of 'runs/", "nothing read"),
        group="runs_to_run_suites.json: unsafe run path",
    ),
    # an absolute path as the run name
    "index-absolute-name": Case(
        index_entries(absolute_name, "<absolute>"),
        "runs_to_run_suites.json",
        ("unsafe run path (part '' of 'runs/",),
        group="runs_to_run_suites.json: unsafe run path",
    ),
    # a suite climbing out of the source with ../
    "index-suite-with-dotdot": Case(
        index_entries(escaping_suite, VICTIM),
        "runs_to_run_suites.json",
        ("unsafe run path (part '..' of 'runs/",),
        group="runs_to_run_suites.json: unsafe run path",
    ),
    # an absolute path as the suite
    "index-absolute-suite": Case(
        index_entries(absolute_suite, VICTIM),
        "runs_to_run_suites.json",
        ("unsafe run path (part '' of 'runs/",),
        group="runs_to_run_suites.json: unsafe run path",
    ),
}


TOO_DEEP = "malformed JSON: nested too deeply"
NOT_READ = "a link leading outside the source: not read"
CASES |= {
    **{
        f"deep-nesting-{name.split('.')[0]}": Case(
            deeply_nested(name), name, (TOO_DEEP,), group=f"{name}: malformed JSON"
        )
        for name in (
            "run_spec.json",
            "scenario.json",
            "stats.json",
            "per_instance_stats.json",
            "scenario_state.json",
        )
    },
    # a file linked to a valid copy outside the source: refused, not read
    "file-link-outside-root": Case(
        link_file_outside("scenario.json"),
        "scenario.json",
        (NOT_READ,),
        group="scenario.json: a link leading outside the source",
    ),
    "file-link-to-etc-passwd": Case(
        link_file_to("scenario.json", "/etc/passwd"),
        "scenario.json",
        (NOT_READ,),
        group="scenario.json: a link leading outside the source",
    ),
    # /dev/zero: st_size 0 would pass --max-file-bytes; refused as a link out of the root
    "file-link-to-dev-zero": Case(
        link_file_to("scenario_state.json", "/dev/zero"),
        "scenario_state.json",
        (NOT_READ,),
        max_file_bytes=LIMIT,
        group="scenario_state.json: a link leading outside the source",
    ),
    # a link that stays inside the source root is followed: the run converts unchanged
    "file-link-inside-root": Case(link_file_inside, same_rows=True),
    # the run folder a link to a valid run outside the source
    "run-dir-link-outside-root": Case(
        link_run_dir_outside,
        f"runs/{SUITE}/{VICTIM}",
        ("the run folder is a link leading outside the source: not read",),
        group="<run>: the run folder is a link leading outside the source",
    ),
    "fifo": Case(
        fifo("scenario_state.json"),
        "scenario_state.json",
        ("a FIFO, not a regular file: not read",),
        group="scenario_state.json: a FIFO, not a regular file",
    ),
    "fifo-run-spec": Case(
        fifo("run_spec.json"),
        "run_spec.json",
        ("a FIFO, not a regular file: not read",),
        group="run_spec.json: a FIFO, not a regular file",
    ),
    "char-device": Case(
        device("stats.json"),
        "stats.json",
        ("a character device, not a regular file: not read",),
        max_file_bytes=LIMIT,
        group="stats.json: a character device, not a regular file",
    ),
    "socket": Case(
        unix_socket("per_instance_stats.json"),
        "per_instance_stats.json",
        ("a socket, not a regular file: not read",),
        group="per_instance_stats.json: a socket, not a regular file",
    ),
    # a negative count: the stat would be dropped silently, so the run fails instead
    "negative-count-stats": Case(
        negative_count("stats.json"),
        "stats.json",
        ("unexpected shape: Expected `float` >= 0.0", ".count"),
        group="stats.json: unexpected shape",
    ),
    "negative-count-per-instance": Case(
        negative_count("per_instance_stats.json"),
        "per_instance_stats.json",
        ("unexpected shape: Expected `float` >= 0.0", ".count"),
        group="per_instance_stats.json: unexpected shape",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input(tmp_path: Path, reference: dict, case: Case) -> None:
    src = make_tree(tmp_path / "src")
    victim = case.break_tree(src)
    if victim == "<absolute>":
        victim = str(tmp_path / "outside" / VICTIM)
    outside_before = files_outside(tmp_path)

    report, config = run_job(DirSource(src), tmp_path, case.max_file_bytes)

    assert report["done"] is True  # the job went on to the end
    assert config.get("max_file_bytes") == case.max_file_bytes  # recorded with the job
    rows = rows_by_run(tmp_path / "out")
    for table in TABLES:  # the other runs are intact, row for row
        for run in OTHERS:
            assert rows[table].get(run) == reference[table].get(run), (table, run)
    runs_table = [row["helm_run"] for run_rows in rows["runs"].values() for row in run_rows]
    assert sorted(runs_table) == sorted({victim, *OTHERS})  # every run exactly once
    [victim_row] = rows["runs"][victim]
    if case.file is None:
        assert report["runs"] == {"ok": 3, "failed": 0}
        assert victim_row["outcome"] == "ok"
        assert len(rows["instances"][victim]) == len(reference["instances"][VICTIM])
        if case.same_rows:
            assert rows["instances"][victim] == reference["instances"][VICTIM]
            assert rows["evaluations"][victim] == reference["evaluations"][VICTIM]
    else:
        assert report["runs"] == {"ok": 2, "failed": 1}
        [failure] = report["failures"]
        assert failure["run"].endswith("/" + victim)  # the run
        assert failure["reason"].startswith(case.file + ": ")  # the file
        for problem in case.problems:  # the problem
            assert problem in failure["reason"], failure["reason"]
        assert (victim_row["outcome"], victim_row["error"]) == ("failed", failure["reason"])
        assert victim not in rows["instances"] and victim not in rows["evaluations"]
        [group] = report["failures_by_reason"]
        assert (group["reason"], group["runs"]) == (case.group, [failure["run"]])
    assert files_outside(tmp_path) == outside_before  # nothing written outside


@pytest.mark.parametrize("gzip_at_rest", [False, True], ids=["identity", "gzip-at-rest"])
def test_max_file_bytes_over_http_stops_the_download(tmp_path: Path, gzip_at_rest: bool) -> None:
    """Through the bucket source the limit holds while downloading: with a declared length
    nothing is fetched; gzip at rest (length of the compressed bytes only) stops the stream."""
    src = make_tree(tmp_path / "src")
    oversize(src)
    size = victim_file(src, "scenario_state.json").stat().st_size
    with BucketServer(gzip_at_rest=gzip_at_rest) as server:
        server.mount("lite/benchmark_output", src)
        source = HttpSource(server.base_url, project="lite", release=RELEASE, client=FAST)
        report, config = run_job(source, tmp_path, max_file_bytes=LIMIT)
    assert config["max_file_bytes"] == LIMIT
    assert report["done"] is True and report["runs"] == {"ok": 2, "failed": 1}
    [failure] = report["failures"]
    assert failure["run"] == f"lite/{SUITE}/{VICTIM}"
    got = "download stopped" if gzip_at_rest else f"{size} bytes"
    assert failure["reason"] == (
        f"scenario_state.json: larger than --max-file-bytes ({got} > {LIMIT})"
    )
    downloaded = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= LIMIT for p in downloaded)


def test_status_groups_failures_by_reason(tmp_path: Path) -> None:
    """`helmproc status` (text and --json) after a job with failures of two kinds."""
    src = make_tree(tmp_path / "src")
    for run in RUNS[:2]:  # two runs fail the same way
        (src / "runs" / SUITE / run / "stats.json").unlink()
    big = src / "runs" / SUITE / RUNS[2] / "scenario_state.json"  # and one another way
    with big.open("ab") as fh:
        fh.write(b" " * (1 << 20))
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)

    def helmproc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "helmproc.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    run = helmproc("run", "--source", str(src), "--to", "out", "--max-file-bytes", "1M")
    assert run.returncode == 0, run.stderr
    assert "done: 0 runs converted, 3 failed" in run.stdout
    assert "2 failed: stats.json: missing" in run.stderr
    assert "helmproc resume --retry-failed" in run.stderr

    data = json.loads(helmproc("status", "--json").stdout)
    missing = sorted(f"local/{SUITE}/{run}" for run in RUNS[:2])
    too_big = f"local/{SUITE}/{RUNS[2]}"
    assert sorted(f["run"] for f in data["failures"]) == sorted([*missing, too_big])  # kept
    size = big.stat().st_size
    example = f"scenario_state.json: larger than --max-file-bytes ({size} bytes > {1 << 20})"
    assert [
        (g["reason"], g["count"], sorted(g["runs"]), g["example"])
        for g in data["failures_by_reason"]
    ] == [
        ("stats.json: missing", 2, missing, "stats.json: missing"),
        ("scenario_state.json: larger than --max-file-bytes", 1, [too_big], example),
    ]

    text = helmproc("status").stdout
    assert "failed runs (3) by reason:" in text
    assert "  stats.json: missing: 2 runs\n    local/" in text
    assert all(f"\n    {run}\n" in text for run in missing)
    assert (
        "  scenario_state.json: larger than --max-file-bytes: 1 run\n"
        f"    {too_big}\n    e.g. {example}\n"
    ) in text


def test_status_text_shows_a_few_runs_per_reason() -> None:
    failures = tuple(
        RunFailure(f"p/s/r{i}", f"stats.json: malformed JSON: bad at byte {i}") for i in range(5)
    )
    report = StatusReport(
        job_id="j",
        done=True,
        n_chunks=1,
        n_runs=5,
        chunks={s.value: 0 for s in ChunkState},
        runs={"ok": 0, "failed": 5},
        rows=0,
        shards=0,
        bytes=0,
        failures=failures,
        chunk_failures=(),
        started_at="t",
        updated_at="t",
    )
    lines = render_text(report).splitlines()
    start = lines.index("failed runs (5) by reason:")
    assert lines[start + 1 :] == [
        "  stats.json: malformed JSON: 5 runs",
        *[f"    p/s/r{i}" for i in range(MAX_RUNS_PER_REASON)],
        f"    ... and {5 - MAX_RUNS_PER_REASON} more",
        "    e.g. stats.json: malformed JSON: bad at byte 0",
    ]
    [group] = report.to_json()["failures_by_reason"]
    assert group["count"] == 5 and group["runs"] == [f.run for f in failures]  # --json: all


# -- no traceback reaches a user, whatever the input -----------------------------------------


def helmproc_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helmproc.cli", *args],
        cwd=cwd,
        env=dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH),
        capture_output=True,
        text=True,
        timeout=300,
    )


def deep_index(root: Path) -> None:
    (root / INDEX).write_text('{"x": ' + "[" * DEPTH + "]" * DEPTH + "}")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_no_command_prints_a_traceback(tmp_path: Path, case: Case) -> None:
    """`run` then `status` over each catalogue case: a clean outcome, never a traceback."""
    src = make_tree(tmp_path / "src")
    case.break_tree(src)
    limit = ["--max-file-bytes", str(case.max_file_bytes)] if case.max_file_bytes else []
    run = helmproc_cli(tmp_path, "run", "--source", str(src), "--to", "out", *limit)
    status = helmproc_cli(tmp_path, "status")
    for done in (run, status):
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        assert done.returncode == 0, done.stderr
    summary = "done: 2 runs converted, 1 failed" if case.file else "done: 3 runs converted"
    assert summary in run.stdout


def test_a_deeply_nested_release_index_is_a_clean_error_before_planning(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    deep_index(src)
    run = helmproc_cli(tmp_path, "run", "--source", str(src), "--to", "out")
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    assert run.returncode == 1
    assert "helmproc: cannot read the source: " in run.stderr
    assert f"{INDEX}: not valid JSON (nested too deeply)" in run.stderr
    assert "next: " in run.stderr
    assert not (tmp_path / "out").exists()  # nothing planned, nothing written


def test_a_deeply_nested_run_spec_in_a_bare_folder_fails_that_run(tmp_path: Path) -> None:
    """A bare folder's run names come from run_spec.json: an unreadable one plans the run under
    its folder's name, and converting it fails that run only, naming the file."""
    bare = tmp_path / "bare"
    for run in RUNS:
        shutil.copytree(FIXTURE / "runs" / SUITE / run, bare / run)
    spec = bare / VICTIM / "run_spec.json"
    text = spec.read_text()
    spec.write_text('{"zz": ' + "[" * DEPTH + "]" * DEPTH + ", " + text[text.index("{") + 1 :])
    report, _ = run_job(DirSource(bare), tmp_path)
    assert report["done"] is True and report["runs"] == {"ok": 2, "failed": 1}
    [failure] = report["failures"]
    assert failure["run"] == f"local/bare/{VICTIM}"
    assert failure["reason"].startswith(f"run_spec.json: {TOO_DEEP}")
    run = helmproc_cli(tmp_path, "run", "--source", str(bare), "--to", "out2")
    assert "Traceback" not in run.stdout + run.stderr and run.returncode == 0, run.stderr
