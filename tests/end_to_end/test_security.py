"""Security: paths stay inside their folders, the token stays secret, the job's files stay
private, and a bad journal file is refused with a clear error.

- **Paths.** Run names and suites from a release index (or a bucket listing) become path parts
  of a run's location; ``check_location`` (``engine/sources.py``, rules in
  ``engine/safe_paths.py``) refuses any that could leave the source or name more than one
  folder, so such a run fails with a reason naming it and the problem, and its neighbours
  convert. Both sources get the same hostile index; a real run planted wherever a naive join
  would land proves nothing was read there (it would have converted), the bucket's log proves
  no request named it, and a snapshot proves nothing was written outside the work folder and
  the destination. Shard, scratch and pid paths are built from numbers only (property below);
  the journal refuses any other shard path (``test_journal.py::test_shard_path_must_be_relative``).
  More bad-index cases, one run each: ``test_bad_input.py``.
- **Token.** Output of every command (log lines, live bars on a pseudo-terminal), the journal,
  status, the work folder, the published repo and the exceptions of a failing job are searched
  for the token, with a run that fails and a Hub that echoes the token in an error.
- **Modes.** The work root, the job folder, staging, scratch (0700) and the journal, its lock,
  ``-wal`` and ``-shm`` (0600) are private whatever the umask.
- **Bad journal files** (random bytes, truncated, a garbled record, another program's SQLite
  database): ``status`` and ``resume`` exit 1 naming the file, no traceback, file unchanged.
- **Two coordinators on one journal**: the second is refused, in
  ``test_journal.py::test_second_coordinator_in_another_process_is_refused`` and
  ``test_cli.py::test_second_coordinator_is_refused`` (not repeated here).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pty
import random
import shutil
import sqlite3
import stat
import subprocess
import threading
import traceback
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helmproc.engine.chunks.pid_files import pid_file
from helmproc.engine.dataset_layout import TABLES, shard_path
from helmproc.engine.errors import HelmprocError, RunConversionError
from helmproc.engine.facts import RunRef
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.progress import LogProgress
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.publish.hub import HubPublisher
from helmproc.engine.safe_paths import (
    create_private_file,
    make_private_dir,
    name_problem,
    unsafe_part,
)
from helmproc.engine.sources import filters as run_filters
from helmproc.engine.sources.bucket import HttpSource
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import DirSource, Source, check_location
from helmproc.engine.sources.http_client import ClientSettings
from helmproc.journal import Journal
from tests.fakes.bucket_server import BucketServer
from tests.fakes.fake_hub import FAKE_TOKEN, FakeHub, fake_hub_fixture, hub_env_fixture  # noqa: F401  (fixtures)
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, HELMPROC, helmproc, reference_job

FAST = ClientSettings(
    connect_timeout_s=2.0, read_timeout_s=2.0, deadline_s=10.0, max_attempts=2,
    base_delay_s=0.001, max_delay_s=0.01,
)  # fmt: skip
SUITE = "v1.1.0"
GOOD = (
    "simple_mcqa:model=simple_model1",
    "simple_mcqa:model=simple_model1,data_augmentation=lower",
)
DECOY_RUN = FIXTURE / "runs" / SUITE / GOOD[0]

# (run name, suite) in the release index, where a naive join under the root lands, and the
# problem the run's failure must name.
HOSTILE = [
    # a run name climbing out of the source root
    ("../../../decoy-out", SUITE, "../decoy-out", "part '..' of"),
    # an absolute path as the run name
    ("/decoy-abs", SUITE, f"runs/{SUITE}/decoy-abs", "part '' of"),
    # a suite named ..
    ("decoy-up", "..", "decoy-up", "part '..' of"),
    # a run name holding / (HELM writes run names verbatim as one directory name)
    ("decoy/nested", SUITE, f"runs/{SUITE}/decoy/nested", "run name 'decoy/nested' holds '/'"),
    # a suite holding /
    ("decoy-sub", f"{SUITE}/decoy", f"runs/{SUITE}/decoy/decoy-sub", "holds '/'"),
    # Windows separators climbing out
    ("..\\..\\decoy-win", SUITE, f"runs/{SUITE}/..\\..\\decoy-win", "part '..\\\\..\\\\decoy-win'"),
]


pytestmark = pytest.mark.usefixtures("fixed_epoch")



def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_under(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Path -> (size, mtime_ns) of every file under ``root`` outside ``skip``."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not any(p.is_relative_to(s) for s in skip)
    }


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("simple_mcqa:model=simple_model1,data_augmentation=lower", None),  # HELM's , : =
        ("...", None),  # dots are fine, only . and .. are special
        ("", "is empty"),
        (".", "is '.'"),
        ("..", "is '..'"),
        ("a/b", "holds '/'"),
        ("/etc", "holds '/'"),
        ("a\\b", "holds a backslash"),
        ("a\0b", "holds a NUL byte"),
    ],
)
def test_name_problem(name: str, problem: str | None) -> None:
    assert name_problem(name) == problem


@pytest.mark.parametrize(
    ("location", "bad"),
    [
        ("runs/v1/simple_mcqa:model=m", None),
        ("lite/benchmark_output/runs/v1/r", None),
        ("runs/v1/../../etc", ".."),
        ("/etc/passwd", ""),  # absolute: an empty first part
        ("runs//etc", ""),
        ("runs/./r", "."),
        ("runs/v1/..\\..\\r", "..\\..\\r"),
        ("runs/v1/r\0", "r\0"),
    ],
)
def test_unsafe_part(location: str, bad: str | None) -> None:
    assert unsafe_part(location) == bad


PART = st.sampled_from(["..", ".", "", "a", "b:c=d,e", "/", "\\", "\0", "%2e%2e", " "])
NAME = st.lists(PART, min_size=1, max_size=4).map("".join)


@given(suite=NAME, name=NAME)
def test_an_accepted_location_stays_inside_its_root_and_names_one_folder_each(
    suite: str, name: str
) -> None:
    root = Path("/srv/source")
    for location in (f"runs/{suite}/{name}", f"lite/benchmark_output/runs/{suite}/{name}"):
        ref = RunRef("p", suite, name, "r", location)
        try:
            check_location(ref)
        except RunConversionError as exc:
            assert exc.file == "runs_to_run_suites.json" and "unsafe run path" in exc.reason
            continue
        joined = Path(os.path.normpath(root / location))
        assert joined.is_relative_to(root)
        assert (joined.parent.name, joined.name) == (suite, name)


@given(
    table=st.sampled_from(TABLES),
    job_id=st.text("0123456789abcdef", min_size=12, max_size=12),
    chunk_id=st.integers(0, 10**9),
    part=st.text("01", max_size=8),
)
def test_shard_and_pid_paths_are_built_from_numbers_only(
    table: str, job_id: str, chunk_id: int, part: str
) -> None:
    rel = shard_path(table, job_id, chunk_id, part)
    assert unsafe_part(rel) is None and rel.startswith(f"{table}/{job_id}/")
    assert pid_file(Path("/w/running"), chunk_id, part).parent == Path("/w/running")


def hostile_tree(base: Path) -> Path:
    """A benchmark_output with two good runs, a release index listing them and ``HOSTILE``,
    and a real run planted wherever a hostile entry would land if joined naively."""
    root = base / "src" / "benchmark_output"
    for name in GOOD:
        shutil.copytree(FIXTURE / "runs" / SUITE / name, root / "runs" / SUITE / name)
    for _, _, lands, _ in HOSTILE:
        shutil.copytree(DECOY_RUN, root / lands)
    index = {name: SUITE for name in GOOD} | {name: suite for name, suite, _, _ in HOSTILE}
    (root / "releases" / "hostile").mkdir(parents=True)
    (root / "releases" / "hostile" / "runs_to_run_suites.json").write_text(json.dumps(index))
    return root


def run_job(source: Source, base: Path) -> dict:
    started = start_job(source, DirPublisher(base / "out"), chunk_size=3, work_root=base / "work")
    with started.journal as journal:
        return execute_job(journal, ExecOptions(max_workers=2)).to_json()


@pytest.mark.parametrize("kind", ["dir", "http"])
def test_hostile_index_entries_fail_their_runs_and_nothing_outside_is_touched(
    tmp_path: Path, kind: str
) -> None:
    root = hostile_tree(tmp_path)
    before = files_under(tmp_path, (tmp_path / "work", tmp_path / "out"))
    bucket = BucketServer()
    bucket.mount("lite/benchmark_output", root)
    bucket.mount("lite/decoy-out", root / "../decoy-out")  # the bucket's "outside"
    with bucket:
        if kind == "dir":
            source: Source = DirSource(root, project="lite", release="hostile")
        else:
            source = HttpSource(bucket.base_url, project="lite", release="hostile", client=FAST)
        report = run_job(source, tmp_path)

    assert report["done"] is True
    assert report["runs"] == {"ok": len(GOOD), "failed": len(HOSTILE)}
    reasons = {f["run"]: f["reason"] for f in report["failures"]}
    for name, suite, _, problem in HOSTILE:
        key = f"lite/{suite}/{name}"  # the failure names the run
        assert "unsafe run path" in reasons[key] and "nothing read" in reasons[key], key
        assert problem in reasons[key], (key, reasons[key])
        assert reasons[key].startswith("runs_to_run_suites.json: ")
    assert not bucket.requests_for("decoy"), "a hostile location was requested"
    # nothing written outside the work folder and the destination, nothing changed
    assert files_under(tmp_path, (tmp_path / "work", tmp_path / "out")) == before
    assert not [p for p in (tmp_path / "work").rglob("scratch/**/*") if p.is_file()]
    runs = pq.read_table(sorted((tmp_path / "out").glob("runs/**/*.parquet")))
    failed = [r for r in runs.to_pylist() if r["helm_run"] not in GOOD]
    assert len(failed) == len(HOSTILE)


def test_spec_filters_never_read_a_run_spec_outside_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = hostile_tree(tmp_path)
    read: list[Path] = []
    real_read = run_filters._read_spec

    def spy(path: Path, root: Path):  # _read_spec(path, root) since the containment change
        read.append(path)
        return real_read(path, root)

    monkeypatch.setattr(run_filters, "_read_spec", spy)
    filters = RunFilters.build(models=["simple/model1"])
    refs = FilteredSource(DirSource(root, project="lite", release="hostile"), filters).discover()
    assert read, "the filter did not read run specs"
    for path in read:
        assert unsafe_part(str(path.relative_to(root))) is None, path
    # the escaping entries were not read, so they cannot match the model filter
    assert {r.run_name for r in refs} == {*GOOD, "decoy/nested", "decoy-sub"}


def test_a_bucket_listing_naming_dotdot_fails_that_run_without_a_request(
    tmp_path: Path,
) -> None:
    bucket = BucketServer()
    bucket.mount(f"lite/benchmark_output/runs/s/{GOOD[0]}", FIXTURE / "runs" / SUITE / GOOD[0])
    # an object whose name makes the listing of runs/s/ show a sub-prefix named ".."
    bucket.objects["lite/benchmark_output/runs/s/../decoy/run_spec.json"] = (
        DECOY_RUN / "run_spec.json"
    )
    with bucket:
        source = HttpSource(bucket.base_url, project="lite", suite="s", client=FAST)
        assert sorted(r.run_name for r in source.discover()) == sorted(["..", GOOD[0]])
        report = run_job(source, tmp_path)
    assert report["runs"] == {"ok": 1, "failed": 1}
    (failure,) = report["failures"]
    assert failure["run"] == "lite/s/.." and "part '..' of" in failure["reason"]
    assert not [e for e in bucket.log if "/../" in e.path or "decoy" in e.path]


# -- the token -------------------------------------------------------------------------------


def read_pty(fd: int, sink: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child side closed
            return
        if not data:
            return
        sink.append(data)


def run_on_a_terminal(cwd: Path, *args: str) -> tuple[int, str]:
    """Run helmproc with stderr on a pseudo-terminal (live bars); exit code and all output."""
    master, slave = pty.openpty()
    env = dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH, TERM="xterm", COLUMNS="120")
    proc = subprocess.Popen(
        [*HELMPROC, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    sink: list[bytes] = []
    reader = threading.Thread(target=read_pty, args=(master, sink))
    reader.start()
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out.decode() + b"".join(sink).decode(errors="replace")


def test_token_never_appears_in_progress_status_failures_files_or_exceptions(
    hub_env: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_env
    source = tmp_path / "source"
    shutil.copytree(FIXTURE, source)
    (source / "runs" / SUITE / GOOD[1] / "stats.json").unlink()  # a run that fails
    # the Hub echoes the token in an error body: the job fails, the message is scrubbed
    hub.fail("commit", 1, 400, body=f"rejected request authorized with {FAKE_TOKEN}")
    args = ["--source", str(source), "--repo-id", "org/secret", "--chunk-size", "3",
            "--max-workers", "2", "--commits-per-hour", "36000"]  # fmt: skip
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    failed = helmproc(cwd, "run", *args)  # periodic progress lines (stderr is not a TTY)
    assert failed.returncode == 1 and "<token>" in failed.stderr, failed.stderr
    assert "helmproc: chunks" in failed.stderr  # progress was printed
    code, terminal = run_on_a_terminal(cwd, "resume", "--commits-per-hour", "36000")
    assert code == 0, terminal
    assert "chunks published" in terminal  # the live bars were drawn
    outputs = [failed.stdout, failed.stderr, terminal]
    for command in (["status"], ["status", "--json"], ["verify"]):
        proc = helmproc(cwd, *command)
        outputs += [proc.stdout, proc.stderr]
    assert any("stats.json" in text for text in outputs)  # the failing run is reported
    for text in outputs:
        assert FAKE_TOKEN not in text
    for path in cwd.rglob("*"):  # journal, lock, staging, latest; and HF_HOME
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for path in (tmp_path / "hf_home").rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for blob in hub.repo("org/secret").contents.values():  # every file published
        assert FAKE_TOKEN.encode() not in blob

    # in-process: a whole job failing on the echoed token; its exception chain, the progress
    # stream and every log record
    caplog.set_level(logging.DEBUG)
    hub.fail("commit", hub.counts["commit"] + 2, 400, body=f"token {FAKE_TOKEN} refused")
    stream = io.StringIO()
    started = start_job(
        DirSource(source), HubPublisher("org/secret2"), chunk_size=3, work_root=tmp_path / "w"
    )
    with started.journal as journal, pytest.raises(HelmprocError) as info:
        execute_job(
            journal,
            ExecOptions(max_workers=2, commits_per_hour=36_000),
            LogProgress(stream, interval=0),
        )
    shown = "".join(traceback.format_exception(info.value))
    assert "<token>" in shown and FAKE_TOKEN not in shown
    assert "helmproc: chunks" in stream.getvalue() and FAKE_TOKEN not in stream.getvalue()
    # every log record, but httpcore's DEBUG trace of the reply the fake Hub sent (it echoes
    # the token by design here): nothing helmproc or the client sent or said holds it
    leaked = [
        record.getMessage()[:200]
        for record in caplog.records
        if FAKE_TOKEN in record.getMessage()
        and not record.getMessage().startswith("receive_response_headers.complete")
    ]
    assert leaked == []
    assert len(caplog.records) > 100  # the client's debug logging was on


# -- file modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_work_folders_journal_and_lock_are_private_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    proc = helmproc(
        tmp_path, "run", "--source", str(FIXTURE), "--to", "out", "--chunk-size", "4",
        "--quiet", umask=umask,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (work,) = tmp_path.glob(".helmproc/jobs/*")
    for folder in (tmp_path / ".helmproc", work.parent, work, work / "staging", work / "scratch"):
        assert mode(folder) == 0o700, folder
    for file in (work / "journal.sqlite", work / "journal.sqlite.lock"):
        assert mode(file) == 0o600, file


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], ids=["000", "022", "277"])
def test_private_modes_are_exact_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    # 0o277 also takes the owner's write bit: modes are set after creating, not asked of it
    parent = tmp_path / "existing"
    parent.mkdir()
    os.chmod(parent, 0o755)
    old = os.umask(umask)
    try:
        make_private_dir(parent / "a" / "b", own=True)
        assert create_private_file(parent / "a" / "b" / "f") is True
        assert create_private_file(parent / "a" / "b" / "f") is False  # exists: untouched
    finally:
        os.umask(old)
    assert mode(parent / "a") == mode(parent / "a" / "b") == 0o700
    assert mode(parent / "a" / "b" / "f") == 0o600
    assert mode(parent) == 0o755  # an existing parent keeps its mode


def test_wal_and_shm_follow_the_journal_and_a_users_folder_is_left_alone(
    tmp_path: Path,
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    old = os.umask(0)
    try:
        with Journal.open(mine / "job" / "journal.sqlite") as journal:
            journal.start_job("j", {}, "t", [])
            for suffix in ("", "-wal", "-shm", ".lock"):
                assert mode(mine / "job" / f"journal.sqlite{suffix}") == 0o600, suffix
        assert mode(mine / "job") == 0o700  # created by the open
    finally:
        os.umask(old)
    assert mode(mine) == 0o755  # existing: not ours to change

    proc = helmproc(
        tmp_path, "run", "--source", str(FIXTURE), "--to", "out", "--journal",
        "mine/journal.sqlite", "--quiet", umask=0,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert mode(mine) == 0o755
    assert mode(mine / "journal.sqlite") == 0o600
    assert mode(mine / "staging") == mode(mine / "scratch") == 0o700


# -- bad journal files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_journal(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    base = reference_job(tmp_path_factory.mktemp("finished"))
    (journal,) = (base / "work").glob("jobs/*/journal.sqlite")
    return journal.read_bytes()


def garbled_record(path: Path, good: bytes) -> None:
    path.write_bytes(good)
    with sqlite3.connect(path) as db:  # appending is allowed; the payload is not JSON
        db.execute(
            "INSERT INTO events (chunk_id, state, at, payload) VALUES (0, 'failed', 't', '{')"
        )
    db.close()


def foreign_database(path: Path, good: bytes) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users VALUES (1, 'ada')")
    db.close()


@pytest.mark.parametrize(
    ("make", "says"),
    [
        # random bytes
        (lambda p, good: p.write_bytes(random.Random(7).randbytes(8192)), "file is not a database"),
        # truncated to half: pages missing
        (lambda p, good: p.write_bytes(good[: len(good) // 2]), "malformed"),
        # the last 100 bytes cut: rows decode as NULLs
        (lambda p, good: p.write_bytes(good[:-100]), "damaged"),
        # a record whose payload is not JSON
        (garbled_record, "damaged: a record does not decode"),
        # another program's SQLite database
        (foreign_database, "not a helmproc journal (its tables: users)"),
    ],
    ids=["random-bytes", "truncated-half", "truncated-tail", "garbled-record", "foreign-sqlite"],
)
def test_bad_journal_file_is_a_clear_error_and_is_left_unchanged(
    tmp_path: Path, finished_journal: bytes, make, says: str
) -> None:
    path = tmp_path / "journal.sqlite"
    make(path, finished_journal)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for command in ("status", "resume"):
        proc = helmproc(tmp_path, command, "--journal", str(path))
        assert proc.returncode == 1, (command, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "helmproc: journal unreadable: " in proc.stderr
        assert str(path) in proc.stderr and says in proc.stderr, proc.stderr
        assert "next: " in proc.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    if make is foreign_database:
        with sqlite3.connect(path) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        db.close()
        assert tables == {"users"}  # no journal tables were added to it
