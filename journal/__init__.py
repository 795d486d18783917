"""helmproc.journal: the SQLite checkpoint journal and the status report read from it.

The coordinator records the plan and every chunk transition as append-only events in one
WAL-mode SQLite file (``store``), guarded by a flock so only one coordinator writes
(``locking``), with a schema evolved by recorded migrations (``migrations``). ``status``
derives the report from the journal alone. After any crash, including ``kill -9``, the
journal holds exactly the events committed before it, and ``helmproc resume`` continues from
there.
"""

from helmproc.journal.status import StatusReport, render_text
from helmproc.journal.store import (
    LEGAL_TRANSITIONS,
    ChunkPlan,
    ChunkState,
    ChunkStatus,
    JobRecord,
    Journal,
    ShardFact,
)

__all__ = [
    "LEGAL_TRANSITIONS",
    "ChunkPlan",
    "ChunkState",
    "ChunkStatus",
    "JobRecord",
    "Journal",
    "ShardFact",
    "StatusReport",
    "render_text",
]
