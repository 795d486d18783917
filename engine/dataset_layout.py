"""The layout of a helmproc dataset: its tables, where each shard lives, the card's path.

One place for the names every stage agrees on: workers write shards at ``shard_path``,
publishers place them and the card at the same relative paths, ``export-eee`` and ``verify``
read the tables back. Shared vocabulary: imports nothing else from helmproc; pure names, so
nothing here touches disk or survives a crash.
"""

from __future__ import annotations

TABLES = ("instances", "evaluations", "runs")
# The dataset card, at the dataset's root (the Hub shows a repo's README.md as its card).
CARD_PATH = "README.md"
# Files per folder stay well under the Hub's 10,000 limit: chunks are bucketed by id.
CHUNKS_PER_FOLDER = 1000


def shard_path(table: str, job_id: str, chunk_id: int, part: str = "") -> str:
    """Dataset-relative path of one chunk's shard of ``table`` (POSIX separators).

    ``part`` names a piece of a chunk that was split after overrunning the memory budget
    ("0", "1", "10", ...: the path of halvings), empty for a whole chunk.
    """
    folder = chunk_id // CHUNKS_PER_FOLDER
    suffix = f"-p{part}" if part else ""
    return f"{table}/{job_id}/{folder:04d}/{table}-{chunk_id:06d}{suffix}.parquet"
