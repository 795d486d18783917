"""The destination is the ledger: real `helmproc` processes against one dataset across jobs.

Expected runs come from the HELM fixture itself (suite directories, the release's
runs_to_run_suites.json), never from helmproc's output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from helmproc.engine.publish.folder import LOCK_PATH
from tests.fakes.jobkit import FIXTURE, HELMPROC, folder_digest
from tests.fakes.jobkit import helmproc as run_helmproc

SRC = ["--source", str(FIXTURE)]
SUITE = ["--suite", "v1.0.0"]
RELEASE = ["--release", "v1.1.0"]

pytestmark = pytest.mark.usefixtures("fixed_epoch")


def helmproc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_helmproc(cwd, *args, check=check)


def suite_runs(suite: str) -> set[tuple[str, str]]:
    runs = (FIXTURE / "runs" / suite).iterdir()
    return {(suite, p.name) for p in runs if (p / "run_spec.json").exists()}


def release_runs(release: str) -> set[tuple[str, str]]:
    index = json.loads((FIXTURE / "releases" / release / "runs_to_run_suites.json").read_text())
    return {(suite, run) for run, suite in index.items()}


def table(root: Path, name: str) -> list[dict]:
    if not (root / name).exists():
        return []
    return pads.dataset(str(root / name), format="parquet").to_table().to_pylist()


def ok_runs(root: Path) -> Counter:
    rows = table(root, "runs")
    return Counter((r["helm_suite"], r["helm_run"]) for r in rows if r["outcome"] == "ok")


def instance_keys(root: Path) -> Counter:
    return Counter(
        (r["helm_suite"], r["helm_run"], r["sample_id"], r["helm_perturbation"],
         r["helm_train_trial"], r["evaluation_result_id"])
        for r in table(root, "instances")
    )


def card_number(root: Path, label: str) -> int:
    match = re.search(rf"^- {label}: (\d+)", (root / "README.md").read_text(), re.M)
    assert match, label
    return int(match.group(1))


def mtimes(root: Path) -> dict[str, int]:
    """Modification times of the dataset's files (the writer lock is no part of it)."""
    return {
        str(p): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and p.name != LOCK_PATH
    }


def test_suite_then_release_then_release_again_from_a_fresh_machine(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    to = ["--to", str(out)]
    first = json.loads(helmproc(tmp_path / "a", "run", *SRC, *SUITE, *to, "--json").stdout)
    assert first["new_runs"] == len(suite_runs("v1.0.0")) and first["already_present"] == 0
    second = json.loads(helmproc(tmp_path / "a", "run", *SRC, *RELEASE, *to, "--json",
                                 "--chunk-size", "4").stdout)
    listed = release_runs("v1.1.0")
    overlap = listed & suite_runs("v1.0.0")
    assert overlap, "the fixture release must list runs of the suite"
    assert second["already_present"] == len(overlap)
    assert second["new_runs"] == len(listed - overlap)

    before, stamps = folder_digest(out), mtimes(out)
    # a fresh working directory: no journal at all
    third = helmproc(tmp_path / "fresh", "run", *SRC, *RELEASE, *to, "--json", "--chunk-size", "2")
    summary = json.loads(third.stdout)
    assert summary["new_runs"] == 0 and summary["already_present"] == len(listed)
    assert folder_digest(out) == before and mtimes(out) == stamps  # wrote nothing

    expected = suite_runs("v1.0.0") | listed
    assert ok_runs(out) == Counter(expected)  # every run exactly once
    keys = instance_keys(out)
    assert keys and max(keys.values()) == 1
    releases = table(out, "releases")
    assert Counter((r["helm_release"], r["helm_suite"], r["helm_run"]) for r in releases) == \
        Counter(("v1.1.0", s, r) for s, r in listed)
    # the card describes the dataset: its counts are the tables' counts
    assert card_number(out, "instance rows") == len(table(out, "instances"))
    assert card_number(out, "evaluation rows") == len(table(out, "evaluations"))
    assert re.search(rf"^- runs: {len(expected)} converted", (out / "README.md").read_text(), re.M)
    assert str(FIXTURE) not in (out / "README.md").read_text()
    status = json.loads(helmproc(tmp_path / "fresh", "status", "--json").stdout)
    assert status["already_present"] == len(listed)


def test_rm_rf_then_the_same_run_rebuilds_byte_identical_shards(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    args = ["run", *SRC, *SUITE, "--to", str(out), "--chunk-size", "2"]
    helmproc(tmp_path, *args)
    before = folder_digest(out)
    shutil.rmtree(out)
    helmproc(tmp_path, *args)
    assert folder_digest(out) == before


def test_verify_without_a_journal_finds_damage_and_repair_plus_run_restores_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dataset"
    args = ["run", *SRC, *SUITE, "--to", str(out), "--chunk-size", "2"]
    helmproc(tmp_path / "a", *args)
    rows = instance_keys(out)
    assert helmproc(tmp_path / "elsewhere", "verify", "--to", str(out)).returncode == 0
    instances = sorted((out / "instances").rglob("*.parquet"))
    evaluations = sorted((out / "evaluations").rglob("*.parquet"))
    instances[0].unlink()
    evaluations[-1].write_bytes(b"not parquet")
    (out / "runs" / "stray.bin").write_bytes(b"x")
    bad = helmproc(tmp_path / "elsewhere", "verify", "--to", str(out), "--json", check=False)
    assert bad.returncode == 1
    problems = json.loads(bad.stdout)["problems"]
    text = json.dumps(problems)
    assert "instances file missing" in text and "unreadable" in text
    assert "runs/stray.bin" in text
    repaired = helmproc(tmp_path / "elsewhere", "verify", "--to", str(out), "--repair")
    assert "removed" in repaired.stdout
    helmproc(tmp_path / "b", *args)  # the same command, another directory: converts them again
    assert instance_keys(out) == rows
    (out / "runs" / "stray.bin").unlink()  # a foreign file is reported, never deleted
    assert helmproc(tmp_path, "verify", "--to", str(out)).returncode == 0


def test_two_concurrent_jobs_on_one_folder_never_publish_a_run_twice(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    for size in (1, 5):
        (tmp_path / f"job{size}").mkdir()
    procs = [
        subprocess.Popen(
            [*HELMPROC, "run", *SRC, *RELEASE, "--to", str(out), "--chunk-size", str(size),
             "--json", "-q"],
            cwd=tmp_path / f"job{size}", env=dict(os.environ), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for size in (1, 5)
    ]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0, results
    for code, _, err in results:
        assert code in (0, 3), err
        if code == 3:
            assert "destination in use" in err and "next:" in err
    assert ok_runs(out) == Counter(release_runs("v1.1.0"))
    assert max(instance_keys(out).values()) == 1


def test_a_held_folder_lock_stops_the_second_writer_before_it_writes(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from helmproc.engine.publish.folder import DirPublisher\n"
         f"with DirPublisher({str(out)!r}).lock('test holder'):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        busy = helmproc(tmp_path, "run", *SRC, *SUITE, "--to", str(out), check=False)
        assert busy.returncode == 3, busy.stderr
        assert "test holder" in busy.stderr and "Traceback" not in busy.stderr
        assert not (out / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
    helmproc(tmp_path, "run", *SRC, *SUITE, "--to", str(out))  # the kernel dropped the lock
    assert ok_runs(out) == Counter(suite_runs("v1.0.0"))


def test_changed_source_is_reported_and_not_converted_again(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(FIXTURE, src)
    out = tmp_path / "dataset"
    args = ["run", "--source", str(src), *SUITE, "--to", str(out), "--json"]
    helmproc(tmp_path / "a", *args)
    before = folder_digest(out)
    run_dir = sorted((src / "runs" / "v1.0.0").iterdir())[0]
    with open(run_dir / "stats.json", "a") as fh:
        fh.write("\n")
    summary = json.loads(helmproc(tmp_path / "b", *args).stdout)
    assert summary["changed"] == [f"local/v1.0.0/{run_dir.name}"]
    assert summary["new_runs"] == 0
    assert folder_digest(out) == before


def test_strict_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    none = helmproc(tmp_path, "run", *SRC, *SUITE, "--to", str(out), "--include", "^no-such-run$",
                    "--strict", "--json", check=False)
    assert none.returncode == 4, none.stderr
    assert json.loads(none.stdout)["matched"] == 0
    lenient = helmproc(tmp_path, "run", *SRC, *SUITE, "--to", str(out), "--include",
                       "^no-such-run$", check=False)
    assert lenient.returncode == 0, lenient.stderr
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURE / "runs" / "v1.0.0", broken / "runs" / "v1.0.0")
    for run_dir in (broken / "runs" / "v1.0.0").iterdir():
        (run_dir / "stats.json").write_text("{ not json")
    failed = helmproc(tmp_path / "b", "run", "--source", str(broken), "--to",
                      str(tmp_path / "d2"), "--strict", check=False)
    assert failed.returncode == 5, failed.stderr


def rows_multiset(root: Path) -> dict[str, Counter]:
    return {
        name: Counter(json.dumps(r, sort_keys=True, default=str) for r in table(root, name))
        for name in ("instances", "evaluations", "runs", "releases")
    }


def test_compaction_killed_at_random_points_then_resumed_keeps_every_row(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    helmproc(tmp_path, "run", *SRC, *SUITE, "--to", str(out), "--chunk-size", "1")
    helmproc(tmp_path, "run", *SRC, *RELEASE, "--to", str(out), "--chunk-size", "1")
    rows = rows_multiset(out)
    n_files = len(list(out.rglob("*.parquet")))
    reference = tmp_path / "reference"
    shutil.copytree(out, reference)
    helmproc(tmp_path / "ref", "compact", "--to", str(reference), "--target-size", "200K")
    assert len(list(reference.rglob("*.parquet"))) < n_files
    assert rows_multiset(reference) == rows
    once = folder_digest(reference)
    helmproc(tmp_path / "ref", "compact", "--to", str(reference), "--target-size", "200K")
    assert folder_digest(reference) == once  # compacting twice is compacting once

    work = tmp_path / "killed"
    work.mkdir()
    kills = 0
    for delay in (0.05, 0.4, 0.8, 1.2, 1.6, 2.0):
        proc = subprocess.Popen(
            [*HELMPROC, "compact", "--to", str(out), "--target-size", "200K"],
            cwd=work, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode == 0:
            break
    helmproc(work, "compact", "--to", str(out), "--target-size", "200K")  # resume / no-op
    assert kills >= 1
    assert folder_digest(out) == folder_digest(reference)  # the same end state, byte for byte
    assert rows_multiset(out) == rows
    assert helmproc(work, "verify", "--to", str(out)).returncode == 0
