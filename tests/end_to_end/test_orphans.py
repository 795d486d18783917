"""No orphans: killing the coordinator alone (``kill -9``, as the OOM killer does) leaves no
helmproc process behind, and ``resume`` then finishes the job byte-identically."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from helmproc.engine.chunks.hold_points import ENV as HOLD_ENV
from helmproc.engine.chunks.hold_points import gate, held_marks
from tests.fakes.jobkit import (
    FIXED_EPOCH,
    HELMPROC,
    folder_digest,
    grow_corpus,
    processed_events,
    wait_for,
)

# How long the fork server and workers may take to notice (the watchdog polls every 0.2 s).
GRACE_S = 5.0


def env() -> dict[str, str]:
    return dict(os.environ, SOURCE_DATE_EPOCH=FIXED_EPOCH)


def journal_in(cwd: Path) -> Path | None:
    found = list(cwd.glob(".helmproc/jobs/*/journal.sqlite"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("orphans")
    grow_corpus(root / "corpus", copies=8)
    ref = root / "ref"
    ref.mkdir()
    args = ["run", "--source", str(root / "corpus"), "--to", "out", "--chunk-size", "2"]
    subprocess.run([*HELMPROC, *args, "--quiet"], cwd=ref, env=env(), check=True, timeout=300)
    return root / "corpus", folder_digest(ref / "out")


def test_sigkill_of_the_coordinator_leaves_no_process_and_resume_is_identical(
    tmp_path: Path, corpus: tuple[Path, dict[str, str]]
) -> None:
    source, reference = corpus
    # chunks 1.. are held at their start (engine/chunks/hold_points.py): when the coordinator
    # is killed, chunk 0 is journaled and both workers are alive, each holding a chunk
    hold = tmp_path / "hold"
    hold.mkdir()
    for cid in range(1, 28):
        gate(hold, cid).touch()
    args = ["run", "--source", str(source), "--to", "out", "--chunk-size", "2"]
    proc = subprocess.Popen(
        [*HELMPROC, *args, "--max-workers", "2", "--quiet"],
        cwd=tmp_path,
        env=dict(env(), **{HOLD_ENV: str(hold)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: processed_events(journal_in(tmp_path)) == 1, proc)
        wait_for(lambda: held_marks(hold, 1) != [] and held_marks(hold, 2) != [], proc)
        helpers = psutil.Process(proc.pid).children(recursive=True)
        # the fork server and the two workers holding chunks 1 and 2
        assert {*held_marks(hold, 1), *held_marks(hold, 2)} < {p.pid for p in helpers}, helpers
        os.kill(proc.pid, signal.SIGKILL)  # the coordinator only, not its process group
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(helpers, timeout=GRACE_S)
        assert alive == []
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, so the suite goes on
        except ProcessLookupError:
            pass
    resumed = subprocess.run(
        [*HELMPROC, "resume", "--quiet"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert folder_digest(tmp_path / "out") == reference
