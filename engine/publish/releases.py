"""The ``releases`` table: which runs each HELM release lists, one row per (project, release,
suite, run).

A job in release mode records, at planning, the rows of its release that the destination does
not hold yet (``release_rows`` in the journaled config); ``ReleasesShard.build`` writes them to
``releases/<job id>/releases.parquet`` in the staging folder, sorted, so the file is
byte-identical whenever it is built again (after a crash, or to rebuild a deleted dataset).
The coordinator publishes it with the final card, in one commit, after every chunk landed.
A crash before that commit leaves only the staged file (rebuilt identically on resume); a
destination that already holds the path gets nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helmproc.engine.chunks.shards import ShardWriter
from helmproc.engine.convert.schemas import RELEASES_SCHEMA, releases_table
from helmproc.engine.facts import ShardFact
from helmproc.engine.publish.ledger import RELEASES_TABLE, Ledger, ReleaseRow


def releases_path(job_id: str) -> str:
    return f"{RELEASES_TABLE}/{job_id}/{RELEASES_TABLE}.parquet"


@dataclass(frozen=True)
class ReleasesShard:
    rows: tuple[ReleaseRow, ...]
    fact: ShardFact

    @classmethod
    def build(
        cls, job_id: str, rows: Sequence[Sequence[str]], staging: Path, ledger: Ledger
    ) -> ReleasesShard | None:
        """The staged shard of ``rows``, or None when there are none or the destination
        already holds this job's file."""
        path = releases_path(job_id)
        if not rows or path in ledger.files:
            return None
        unique = tuple(sorted({(r[0], r[1], r[2], r[3]) for r in rows}))
        writer = ShardWriter(staging, path, RELEASES_TABLE, RELEASES_SCHEMA)
        try:
            writer.write(releases_table(unique))
            fact = writer.close()
        except BaseException:
            writer.abort()
            raise
        return cls(unique, fact)
