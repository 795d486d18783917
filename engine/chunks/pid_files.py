"""Worker pid files: how a worker announces which piece of which chunk it is converting.

A worker writes ``<chunk_id:06d>-<part or "all">.pid`` holding its pid into the job's
``running/`` folder while it works and removes it when done; the coordinator's memory watchdog
reads them to know whose memory to measure and whom to stop. This module is the one place that
writes and parses the format. Across a crash: a killed worker leaves its file behind; the
coordinator empties the folder on start and after replacing a broken pool, and a file whose
content is not a pid is ignored.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

SUFFIX = ".pid"
WHOLE_CHUNK = "all"


def pid_file(pid_dir: Path, chunk_id: int, part: str) -> Path:
    return pid_dir / f"{chunk_id:06d}-{part or WHOLE_CHUNK}{SUFFIX}"


@contextlib.contextmanager
def announced(pid_dir: Path, chunk_id: int, part: str) -> Iterator[None]:
    """This process's pid in its pid file for the duration of the block."""
    path = pid_file(pid_dir, chunk_id, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def running_workers(pid_dir: Path) -> dict[int, tuple[int, str]]:
    """pid -> (chunk id, part) of every worker that announced itself."""
    found: dict[int, tuple[int, str]] = {}
    for path in pid_dir.glob(f"*{SUFFIX}"):
        try:
            pid = int(path.read_text())
            cid_text, _, part = path.stem.partition("-")
            found[pid] = (int(cid_text), "" if part == WHOLE_CHUNK else part)
        except (OSError, ValueError):
            continue
    return found
