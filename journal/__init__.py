"""helmproc.journal: the SQLite checkpoint journal and the status report read from it.

The coordinator records the plan and every chunk transition as append-only events in one
WAL-mode SQLite file (``store``), guarded by a flock so only one coordinator writes
(``locking``), with a schema evolved by recorded migrations (``migrations``). ``records`` holds
the plain values the events fold into; ``status`` derives the report from them alone. After any
crash, including ``kill -9``, the journal holds exactly the events committed before it, and
``helmproc resume`` continues from there.

Imports only the engine's shared vocabulary (``helmproc.engine.errors``, ``facts``,
``safe_paths``, ``durable``); the import-linter contracts in ``pyproject.toml`` enforce it.
"""

from helmproc.journal.records import (
    LEGAL_TRANSITIONS,
    RETRY_ONLY_FROM,
    ChunkPieces,
    ChunkState,
    ChunkStatus,
    JobRecord,
)
from helmproc.journal.status import StatusReport, render_text
from helmproc.journal.store import Journal

__all__ = [
    "LEGAL_TRANSITIONS",
    "RETRY_ONLY_FROM",
    "ChunkPieces",
    "ChunkState",
    "ChunkStatus",
    "JobRecord",
    "Journal",
    "StatusReport",
    "render_text",
]
