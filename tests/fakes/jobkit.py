"""Shared test helpers: run a job in-process, fingerprint a dataset folder, grow a corpus."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helmproc.engine.job.coordinator import Coordinator
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import StartedJob, execute_job, start_job
from helmproc.engine.publish.folder import LOCK_PATH, DirPublisher
from helmproc.engine.sources.folder import DirSource
from helmproc.journal import StatusReport

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "benchmark_output"
FIXED_EPOCH = "1790000000"
HELMPROC = [sys.executable, "-m", "helmproc.cli"]


def helmproc(
    cwd: Path, *args: str, check: bool = False, epoch: str = FIXED_EPOCH, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """``helmproc ARGS`` as a user runs it: a fresh process in ``cwd`` (made if missing), this
    environment with ``SOURCE_DATE_EPOCH=epoch``, output captured. ``check``: fail the test
    unless it exits 0 (the output in the message)."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [*HELMPROC, *args], cwd=cwd, env=dict(os.environ, SOURCE_DATE_EPOCH=epoch),
        capture_output=True, text=True, timeout=300, **kw,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helmproc {args} -> {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def folder_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file of the dataset under ``root`` (not the writer
    lock, which is no part of the dataset)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != LOCK_PATH
    }


def start(source_root: Path, dest: Path, work_root: Path, chunk_size: int = 3, **kw) -> StartedJob:
    return start_job(
        DirSource(source_root, **kw),
        DirPublisher(dest),
        chunk_size=chunk_size,
        work_root=work_root,
    )


def run_to_end(
    source_root: Path,
    dest: Path,
    work_root: Path,
    chunk_size: int = 3,
    workers: int = 2,
    executor: str = "local",
    **kw,
) -> StatusReport:
    started = start(source_root, dest, work_root, chunk_size, **kw)
    with started.journal as journal:
        return execute_job(journal, ExecOptions(max_workers=workers, executor=executor))


def reference_job(base: Path) -> Path:
    """An uninterrupted job over ``FIXTURE`` (chunk size 3, 2 workers) into ``base/out``, work
    in ``base/work``, at ``FIXED_EPOCH``, from a module-scoped fixture (no ``monkeypatch``
    there); returns ``base``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    try:
        assert run_to_end(FIXTURE, base / "out", base / "work").to_json()["done"]
    finally:
        mp.undo()
    return base


def coordinator(started: StartedJob, dest: Path, **options: Any) -> Coordinator:
    """A coordinator over a started job's journal (open), publishing to ``dest``; keyword
    arguments go to ``Coordinator`` (e.g. ``pool_factory``) or ``ExecOptions``."""
    journal = started.journal
    extra = {k: options.pop(k) for k in list(options) if k == "pool_factory"}
    options.setdefault("max_workers", 1)
    return Coordinator(
        journal,
        started.paths,
        journal.job().config["source"],  # type: ignore[union-attr]
        DirPublisher(dest),
        ExecOptions(**options),
        **extra,
    )


def processed_events(journal: Path | None) -> int:
    """``processed`` events in a journal a running job holds, read-only (0 if not there yet)."""
    if journal is None or not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            query = "SELECT count(*) FROM events WHERE state='processed'"
            return int(db.execute(query).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 120
) -> None:
    """Poll ``condition`` until it holds; fail if ``proc`` ended first or after ``timeout``
    (a bound for a broken job, not a timing assumption: the conditions are journal events)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the job ended ({proc.returncode}) first"
        assert time.monotonic() < deadline, "the job never got there"
        time.sleep(0.01)


def grow_corpus(dest: Path, copies: int) -> list[str]:
    """A bare folder of ``copies`` x the v1.1.0 runs, each copy a distinct run name."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    runs = sorted(p for p in (FIXTURE / "runs" / "v1.1.0").iterdir() if p.is_dir())
    for i in range(copies):
        for run in runs:
            target = dest / f"{run.name.replace(':', '-')}-copy{i}"
            shutil.copytree(run, target)
            spec_path = target / "run_spec.json"
            spec = json.loads(spec_path.read_text())
            spec["name"] = f"{spec['name']},copy={i}"
            spec_path.write_text(json.dumps(spec, indent=2))
            names.append(spec["name"])
    return sorted(names)


def inflate_run(run: Path, target: Path, factor: int, name_suffix: str = "big") -> Path:
    """A copy of ``run`` with every instance repeated ``factor`` times under new ids."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("run_spec.json", "scenario.json", "stats.json"):
        shutil.copyfile(run / name, target / name)
    spec = json.loads((run / "run_spec.json").read_text())
    spec["name"] = f"{spec['name']},{name_suffix}=1"
    (target / "run_spec.json").write_text(json.dumps(spec))
    state = json.loads((run / "scenario_state.json").read_text())
    stats = json.loads((run / "per_instance_stats.json").read_text())
    states, entries = [], []
    for i in range(factor):
        for rs in state["request_states"]:
            copy = json.loads(json.dumps(rs))
            copy["instance"]["id"] = f"{copy['instance']['id']}-{i}"
            states.append(copy)
        for entry in stats:
            copy = dict(entry, instance_id=f"{entry['instance_id']}-{i}")
            entries.append(copy)
    state["request_states"] = states
    (target / "scenario_state.json").write_text(json.dumps(state))
    (target / "per_instance_stats.json").write_text(json.dumps(entries))
    return target
