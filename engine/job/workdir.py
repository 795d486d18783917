"""Where a job lives on disk, and how a job is started or found again.

Layout under the work root (default ``./.helmproc`` in the working directory):

    .helmproc/latest                   journal key of the last job ``run`` started here
    .helmproc/jobs/<key>/journal.sqlite
    .helmproc/jobs/<key>/staging/      shards processed but not yet cleaned
    .helmproc/jobs/<key>/scratch/      per-chunk downloads (removed after each chunk)
    .helmproc/jobs/<key>/runtime.json  the runtime options `run` was given (--max-workers, ...)

The key hashes the job id (source + plan) together with the destination, so asking for the
same job again finds the same journal and continues it, while the same source sent to another
destination is a separate job. ``latest`` is replaced atomically; losing it only means
``resume``/``status`` need ``--journal``. ``runtime.json`` is replaced atomically too; it holds
only the options ``run`` was given (not part of the job's identity), which ``resume`` reuses
unless overridden; without it ``resume`` uses the defaults.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helmproc.engine.errors import NoJobError
from helmproc.engine.safe_paths import make_private_dir

DEFAULT_WORK_ROOT = Path(".helmproc")
LATEST_FILE = "latest"
JOURNAL_FILE = "journal.sqlite"


@dataclass(frozen=True)
class JobPaths:
    """A job's files. With ``--journal DIR/NAME.sqlite`` the journal keeps its own name and
    its staging/scratch folders are named after it, so two journals in one folder never share
    files; the default layout uses ``journal.sqlite``, ``staging/`` and ``scratch/``."""

    work_dir: Path
    journal_name: str = JOURNAL_FILE

    @property
    def journal(self) -> Path:
        return self.work_dir / self.journal_name

    def _beside(self, name: str) -> Path:
        if self.journal_name == JOURNAL_FILE:
            return self.work_dir / name
        return self.work_dir / f"{Path(self.journal_name).stem}-{name}"

    @property
    def staging(self) -> Path:
        return self._beside("staging")

    @property
    def scratch(self) -> Path:
        return self._beside("scratch")

    @property
    def runtime_options(self) -> Path:
        """The runtime options ``run`` was given (JSON), reused by ``resume``."""
        return self._beside("runtime.json")

    @property
    def running(self) -> Path:
        """Where workers announce their pids while they work (for the budget's watchdog)."""
        return self._beside("running")

    @classmethod
    def for_journal(cls, journal: Path) -> JobPaths:
        resolved = journal.resolve()
        return cls(resolved.parent, resolved.name)


def record_runtime_options(paths: JobPaths, options: dict[str, Any]) -> None:
    """Keep the options given on the command line (None: not given), atomically."""
    target = paths.runtime_options
    part = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    part.write_text(json.dumps(options, sort_keys=True, indent=1) + "\n")
    os.replace(part, target)


def recorded_runtime_options(paths: JobPaths) -> dict[str, Any]:
    """The options ``record_runtime_options`` kept, or {} (never recorded, or unreadable)."""
    try:
        data = json.loads(paths.runtime_options.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def journal_key(job_id: str, destination: dict[str, Any]) -> str:
    text = job_id + "|" + repr(sorted(destination.items()))
    return f"{job_id}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def job_paths(work_root: Path, key: str) -> JobPaths:
    return JobPaths((work_root / "jobs" / key).resolve())


def remember_latest(work_root: Path, key: str) -> None:
    make_private_dir(work_root)
    temp = work_root / f"{LATEST_FILE}.tmp"
    temp.write_text(key + "\n")
    os.replace(temp, work_root / LATEST_FILE)


def find_journal(work_root: Path, journal: Path | None) -> Path:
    """The journal named by ``--journal``, else the one ``run`` last started in ``work_root``."""
    if journal is not None:
        if not journal.exists():
            raise NoJobError(f"no journal at {journal}")
        return journal
    latest = work_root / LATEST_FILE
    try:
        key = latest.read_text().strip()
    except FileNotFoundError:
        raise NoJobError(
            f"no helmproc job was started from this directory ({work_root.resolve()} is empty)"
        ) from None
    path = job_paths(work_root, key).journal
    if not path.exists():
        raise NoJobError(f"the last job's journal is missing: {path}")
    return path


def job_timestamp() -> str:
    """Job-level timestamp (Unix seconds as text), fixed at plan time.

    Honours ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) so two separate jobs
    over the same input can produce byte-identical shards.
    """
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    if fixed and fixed.strip().isdigit():
        return fixed.strip()
    return str(int(time.time()))
