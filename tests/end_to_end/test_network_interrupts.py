"""The first Ctrl-C ends a wait on the network that the server stalls, within seconds.

A real ``helmproc run`` reads the loopback fake bucket, which holds one request open without
a byte (before its headers, or after half its body) for far longer than the client's read
timeout (``ClientSettings.read_timeout_s``, 60 s), or writes to the fake Hub, which holds a
request open (the Hub client has no read timeout at all). Once the server's log shows the
stalled request, a real SIGINT goes to the command's process group, as a terminal's Ctrl-C
does. The command must exit with the interrupted code well before the read timeout could have
ended the read, print no traceback, and leave what a later command needs: the same dataset as
an uninterrupted job, by ``resume`` (the job was recorded) or by running the command again (a
stall while discovering the runs or reading the destination's ledger: no job was recorded).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helmproc.cli.errors import EXIT_INTERRUPTED
from helmproc.engine.sources.http_client import ClientSettings
from tests.fakes.bucket_server import BucketServer
from tests.fakes.fake_hub import FakeHub, fake_hub_fixture, hub_env_fixture  # noqa: F401
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, HELMPROC, folder_digest

READ_TIMEOUT_S = ClientSettings().read_timeout_s
STALL_S = 10 * READ_TIMEOUT_S  # the server would hold the request this long
BOUND_S = 10.0  # SIGINT to exit; the read timeout alone would take READ_TIMEOUT_S
REACH_S = 120.0  # time for the command to reach the stalled request


def env() -> dict[str, str]:
    return dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)


@pytest.fixture(scope="module")
def bucket() -> Iterator[BucketServer]:
    with BucketServer() as server:
        server.mount("lite/benchmark_output", FIXTURE)
        yield server


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HELMPROC, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=300
    )


_references: dict[tuple[str, ...], dict[str, str]] = {}


def reference(tmp_path: Path, args: list[str]) -> dict[str, str]:
    """The dataset of the same command, uninterrupted (once per command and module)."""
    if tuple(args) not in _references:
        cwd = tmp_path / "reference"
        cwd.mkdir()
        done = run(cwd, *args, "--quiet")
        assert done.returncode == 0, done.stderr
        _references[tuple(args)] = folder_digest(cwd / "out")
    return _references[tuple(args)]


def interrupt_at_stall(
    server: BucketServer, cwd: Path, args: list[str], match: str, kind: str
) -> tuple[int, str, float]:
    """Run ``helmproc`` with the first request matching ``match`` stalled (``kind``: the
    bucket's ``stall`` or ``stall_body``), SIGINT its process group once the bucket has the
    stalled request; (exit code, stderr, seconds from the signal to the exit)."""

    def stalled() -> int:
        return len([e for e in server.requests_for(match) if e.fault == kind])

    before = stalled()
    getattr(server.faults, kind)(match, STALL_S)
    try:
        return interrupt_when(cwd, args, lambda: stalled() > before)
    finally:
        server.faults.clear()


def interrupt_when(
    cwd: Path, args: list[str], reached: Callable[[], bool]
) -> tuple[int, str, float]:
    """Run ``helmproc``, SIGINT its process group once ``reached()`` (a server's log shows
    the stalled request); (exit code, stderr, seconds from the signal to the exit)."""
    proc = subprocess.Popen(
        [*HELMPROC, *args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the signal reaches it as Ctrl-C does
    )
    try:
        deadline = time.monotonic() + REACH_S
        while not reached():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the stalled request never came"
            time.sleep(0.01)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            pytest.fail(f"still running {BOUND_S:.0f} s after SIGINT; stderr:\n{err}")
        return proc.returncode, err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("kind", ["stall", "stall_body"])
def test_a_stalled_download_in_a_worker_ends_on_the_first_ctrl_c(
    bucket: BucketServer, tmp_path: Path, kind: str
) -> None:
    """A run file's download (a worker's prefetch) that the server stalls."""
    args = ["run", "--source", bucket.base_url, "--benchmark", "lite", "--release", "v1.1.0"]
    args += ["--to", "out", "--max-workers", "1", "--chunk-size", "3"]
    expected = reference(tmp_path, args)
    cwd = tmp_path / "interrupted"
    cwd.mkdir()
    code, err, seconds = interrupt_at_stall(bucket, cwd, args, "scenario_state.json", kind)
    assert code == EXIT_INTERRUPTED, err
    assert seconds < BOUND_S < READ_TIMEOUT_S
    assert "Traceback" not in err, err
    assert "SIGINT: finishing the chunks in flight" in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("helmproc: interrupted (stopped on request"), err
    assert "`helmproc resume` continues" in last, err

    status = run(cwd, "status", "--json")
    assert json.loads(status.stdout)["done"] is False, status.stderr
    resumed = run(cwd, "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert folder_digest(cwd / "out") == expected


@pytest.mark.parametrize(
    ("what", "extra", "match", "kind"),
    [
        # discovering the latest release: the bucket's listing, read by the main thread
        ("listing", [], "/storage/v1/", "stall"),
        # --model: each run's run_spec.json, read by parallel threads
        ("run specs", ["--suite", "v1.1.0", "--model", "simple/model1"], "run_spec.json",
         "stall_body"),
    ],
)
def test_a_stalled_read_while_discovering_runs_ends_on_the_first_ctrl_c(
    bucket: BucketServer, tmp_path: Path, what: str, extra: list[str], match: str, kind: str
) -> None:
    args = ["run", "--source", bucket.base_url, "--benchmark", "lite", *extra, "--to", "out"]
    args += ["--max-workers", "1"]
    expected = reference(tmp_path, args)
    cwd = tmp_path / "interrupted"
    cwd.mkdir()
    code, err, seconds = interrupt_at_stall(bucket, cwd, args, match, kind)
    assert code == EXIT_INTERRUPTED, err
    assert seconds < BOUND_S < READ_TIMEOUT_S
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "helmproc: interrupted before any job was recorded; nothing to resume"
    ), err
    assert not (cwd / "out").exists()  # a source being read touches no destination

    again = run(cwd, *args, "--quiet")
    assert again.returncode == 0, again.stderr
    assert folder_digest(cwd / "out") == expected


REPO = "org/interrupted"
HUB_ARGS = ["--commits-per-hour", "36000", "--max-workers", "1", "--chunk-size", "3"]


def hub_dataset(hub: FakeHub, repo: str) -> dict[str, str]:
    """Path -> sha256 of the repo's files (the dataset as published)."""
    return hub.files(repo)


def hub_run(repo: str, *extra: str) -> list[str]:
    return ["run", "--source", str(FIXTURE), "--repo-id", repo, *HUB_ARGS, *extra]


def test_a_stalled_commit_to_the_hub_ends_on_the_first_ctrl_c(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    """The coordinator's committer thread waits for a commit the Hub holds open."""
    hub = hub_env
    done = run(tmp_path, *hub_run("org/reference"), "--quiet")
    assert done.returncode == 0, done.stderr
    hub.stall("commit", nth=hub.counts["commit"] + 1, seconds=STALL_S)
    before = hub.stalled("commit")
    code, err, seconds = interrupt_when(
        tmp_path, hub_run(REPO), lambda: hub.stalled("commit") > before
    )
    assert code == EXIT_INTERRUPTED, err
    assert seconds < BOUND_S
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("helmproc: interrupted (stopped on request"), err
    assert "`helmproc resume` continues" in last, err

    resumed = run(tmp_path, "resume")
    assert resumed.returncode == 0, resumed.stderr
    mine, theirs = hub_dataset(hub, REPO), hub_dataset(hub, "org/reference")
    assert mine.keys() == theirs.keys()
    assert {p: s for p, s in mine.items() if p != "README.md"} == {
        p: s for p, s in theirs.items() if p != "README.md"
    }


def test_a_stalled_ledger_read_at_planning_ends_on_the_first_ctrl_c(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    """Planning a second job reads the dataset's runs tables (threads in parallel): one of
    those downloads is held open."""
    hub = hub_env
    first, second = ["--suite", "v1.0.0"], ["--release", "v1.1.0"]
    for repo in ("org/reference", REPO):
        done = run(tmp_path, *hub_run(repo, *first), "--quiet")
        assert done.returncode == 0, done.stderr
    done = run(tmp_path, *hub_run("org/reference", *second), "--quiet")
    assert done.returncode == 0, done.stderr

    hub.stall("resolve", nth=hub.counts["resolve"] + 1, seconds=STALL_S)
    before = hub.stalled("resolve")
    code, err, seconds = interrupt_when(
        tmp_path, hub_run(REPO, *second), lambda: hub.stalled("resolve") > before
    )
    assert code == EXIT_INTERRUPTED, err
    assert seconds < BOUND_S
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (
        "helmproc: interrupted before any job was recorded; nothing to resume"
    ), err

    again = run(tmp_path, *hub_run(REPO, *second), "--quiet")
    assert again.returncode == 0, again.stderr
    mine, theirs = hub_dataset(hub, REPO), hub_dataset(hub, "org/reference")
    assert {p: s for p, s in mine.items() if p != "README.md"} == {
        p: s for p, s in theirs.items() if p != "README.md"
    }
