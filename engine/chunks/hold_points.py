"""Hold points: a test-only seam that keeps a worker at the start of a chunk until released.

Tests that interrupt a job (a signal, ``kill -9``, a worker killed on a cluster) must know that
the job is still running, and which worker holds which chunk, when the blow lands; waiting a
while and hoping is what a faster machine breaks. So a worker, right before it converts a
chunk (after announcing its pid, ``pid_files.py``), calls ``hold_at_chunk_start``:

- unless the environment variable ``HELMPROC_TEST_HOLD`` names a folder, it returns at once
  (one ``os.environ`` lookup: production never sets it, and nothing else reads it);
- otherwise, if that folder holds a *gate* file ``chunk-<chunk_id:06d>`` (made by the test), the
  worker writes ``chunk-<chunk_id:06d>.held-<pid>`` (its pid inside, written whole before it is
  renamed into place) and waits, polling every ``POLL_S``, until the gate is removed (or
  ``MAX_HOLD_S`` passed, so a forgotten gate cannot hang a process forever); then it converts
  the chunk as usual.

A chunk without a gate is not held, so a test gates the chunks it wants held (e.g. all but the
first: the job provably journals one chunk and then cannot finish until the test says so).
Nothing here is journaled or touches the job's files; across a crash a ``.held-`` file is just
what a killed worker left in the test's folder. The same holds under Dask: the variable and the
folder must reach the cluster's workers (a local cluster's workers inherit the environment).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "HELMPROC_TEST_HOLD"
POLL_S = 0.02
MAX_HOLD_S = 600.0


def gate(folder: Path, chunk_id: int) -> Path:
    """The file whose presence holds a worker at the start of chunk ``chunk_id``."""
    return folder / f"chunk-{chunk_id:06d}"


def held_marks(folder: Path, chunk_id: int) -> list[int]:
    """Pids of the workers that were held at chunk ``chunk_id`` (in the order they came)."""
    found: list[tuple[float, int]] = []
    for mark in folder.glob(f"{gate(folder, chunk_id).name}.held-*"):
        try:
            found.append((mark.stat().st_mtime, int(mark.read_text())))
        except (OSError, ValueError):
            continue  # removed since the listing
    return [pid for _, pid in sorted(found)]


def hold_at_chunk_start(chunk_id: int) -> None:
    """Wait here while the test's gate for ``chunk_id`` exists (see the module docstring)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    door = gate(Path(folder), chunk_id)
    if not door.exists():
        return
    pid = os.getpid()
    mark = door.with_name(f"{door.name}.held-{pid}")
    part = door.with_name(f"{door.name}.writing-{pid}")  # not a mark until renamed
    part.write_text(str(pid))
    os.replace(part, mark)
    deadline = time.monotonic() + MAX_HOLD_S
    while door.exists() and time.monotonic() < deadline:
        time.sleep(POLL_S)
