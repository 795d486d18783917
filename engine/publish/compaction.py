"""Compaction: rewrite many small groups of a dataset into few large ones.

A group (``ledger.py``) is the ``instances``, ``evaluations`` and ``runs`` files of the same
runs. Compaction packs consecutive small groups (sorted by name) into batches of about
``target_bytes`` of ``instances``, and writes each batch as one new group named after a hash
of its input groups (``compacted-<hash>/0000/000000``): the rows of its inputs in input
order, with the shard writer's fixed options, so the same inputs give byte-identical outputs
and the row multiset is unchanged. All ``releases`` files are merged into one the same way.

Crash safety (journal: one JSON line per event, fsynced, in the work folder):
    1. outputs are built in the staging folder, then ``planned`` is journaled with the input
       paths and every output's sha256; a crash before that changed nothing at the destination.
    2. ``Publisher.replace_files`` adds the outputs and deletes the inputs: on the Hub one
       commit (readers never see rows twice or missing); in a folder every output is durable
       before the first input is deleted.
    3. ``done`` is journaled and staging removed.
Running ``compact`` again after a crash between 1 and 3 finishes that plan: outputs the
destination does not hold intact are placed again (rebuilt if the staged copy is gone, which
only happens before any input was deleted), then the inputs still present are deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from helmproc.engine.chunks.shards import ShardWriter, sha256_file
from helmproc.engine.convert.schemas import (
    EVALUATIONS_SCHEMA,
    INSTANCES_SCHEMA,
    RELEASES_SCHEMA,
    RUNS_SCHEMA,
)
from helmproc.engine.durable import fsync_dir
from helmproc.engine.errors import ConfigError
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.ledger import (
    GROUP_TABLES,
    RELEASES_TABLE,
    Ledger,
    _conform,
    group_path,
    parquet_source,
    read_ledger,
)
from helmproc.engine.safe_paths import make_private_dir

DEFAULT_TARGET_BYTES = 256 << 20
# `run` says so when a table holds more files than this (the Hub allows 10,000 per folder,
# 100,000 per repo; every file costs readers a request).
FILES_NOTICE = 1000
SCHEMAS: dict[str, pa.Schema] = {
    "instances": INSTANCES_SCHEMA,
    "evaluations": EVALUATIONS_SCHEMA,
    "runs": RUNS_SCHEMA,
    RELEASES_TABLE: RELEASES_SCHEMA,
}
JOURNAL_NAME = "compact.jsonl"
# Compaction outputs are named compacted-<hash of the inputs>/0000/000000 (a job's groups are
# <job id>/<chunk>/<piece>), and only groups under target / SMALL_SHARE are packed.
COMPACTED_PREFIX = "compacted-"
SMALL_SHARE = 4


def compaction_notice(publisher: Publisher) -> str | None:
    """A hint to compact when a table of the destination holds more than ``FILES_NOTICE``
    files, else None."""
    files = publisher.list_files()
    counts = {t: sum(1 for p in files if p.startswith(t + "/")) for t in GROUP_TABLES}
    big = {t: n for t, n in counts.items() if n > FILES_NOTICE}
    if not big:
        return None
    listed = ", ".join(f"{t}: {n} files" for t, n in big.items())
    return (
        f"helmproc: the dataset has many small files ({listed}; over {FILES_NOTICE}); "
        "`helmproc compact` with the same --to / --repo-id rewrites them into few large ones"
    )


@dataclass(frozen=True)
class Batch:
    """Input files (per table) that become one output file (per table)."""

    name: str  # the output group (or the releases file's folder)
    inputs: dict[str, tuple[str, ...]]  # table -> input paths, in order
    outputs: dict[str, str]  # table -> output path


def is_compacted(group: str) -> bool:
    """A group a compaction wrote (never packed again)."""
    return group.startswith(COMPACTED_PREFIX)


def plan_batches(ledger: Ledger, target_bytes: int) -> list[Batch]:
    """Deterministic batches: the small complete groups (``instances`` under a quarter of
    ``target_bytes``, not written by a compaction) in name order, packed while their
    ``instances`` bytes stay under ``target_bytes``; a batch of one group is left alone.

    Compacting twice is compacting once: outputs are never inputs again, and two small groups
    sum to under half the target, so only the last batch can be a lone group; the next
    compaction finds at most that one small group and leaves it alone."""
    small = target_bytes / SMALL_SHARE
    complete = sorted(
        g
        for g, m in ledger.groups.items()
        if len(m) == len(GROUP_TABLES)
        and not is_compacted(g)
        and ledger.files[m["instances"]].size < small
    )
    batches: list[list[str]] = []
    current: list[str] = []
    size = 0
    for group in complete:
        n = ledger.files[ledger.groups[group]["instances"]].size
        if current and size + n > target_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(group)
        size += n
    if current:
        batches.append(current)
    out: list[Batch] = []
    for groups in batches:
        if len(groups) < 2:
            continue
        digest = hashlib.sha256(
            "\n".join(f"{g}:{ledger.files[ledger.groups[g]['instances']].size}" for g in groups)
            .encode()
        ).hexdigest()[:12]
        name = f"{COMPACTED_PREFIX}{digest}/0000/000000"
        out.append(
            Batch(
                name,
                {t: tuple(ledger.groups[g][t] for g in groups) for t in GROUP_TABLES},
                {t: group_path(t, name) for t in GROUP_TABLES},
            )
        )
    releases = ledger.files_of(RELEASES_TABLE)
    if len(releases) > 1:
        digest = hashlib.sha256("\n".join(releases).encode()).hexdigest()[:12]
        folder = f"{COMPACTED_PREFIX}{digest}"
        out.append(
            Batch(
                folder,
                {RELEASES_TABLE: tuple(releases)},
                {RELEASES_TABLE: f"{RELEASES_TABLE}/{folder}/{RELEASES_TABLE}.parquet"},
            )
        )
    return out


def _read(publisher: Publisher, path: str, schema: pa.Schema) -> pa.Table:
    return _conform(pq.read_table(parquet_source(publisher, path)), schema)


def build_outputs(publisher: Publisher, batch: Batch, staging: Path) -> dict[str, dict[str, Any]]:
    """Write the batch's outputs into ``staging``; returns path -> {sha256, n_rows, n_bytes}."""
    facts: dict[str, dict[str, Any]] = {}
    for table, inputs in batch.inputs.items():
        out = batch.outputs[table]
        writer = ShardWriter(staging, out, table, SCHEMAS[table], coalesce_bytes=64 << 20)
        try:
            for path in inputs:
                writer.write(_read(publisher, path, SCHEMAS[table]))
            fact = writer.close()
        except BaseException:
            writer.abort()
            raise
        facts[out] = {"sha256": fact.sha256, "n_rows": fact.n_rows, "n_bytes": fact.n_bytes}
    return facts


@dataclass(frozen=True)
class CompactionReport:
    batches: int
    files_before: int
    files_after: int
    bytes_read: int
    resumed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "files_removed": self.files_before,
            "files_written": self.files_after,
            "bytes_read": self.bytes_read,
            "resumed": self.resumed,
        }


class CompactionJournal:
    """Append-only JSON lines, each fsynced: ``planned`` (with the plan) then ``done``."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.path = work_dir / JOURNAL_NAME

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # a torn last line: the event was never journaled
        return out

    def pending(self) -> dict[str, Any] | None:
        """The plan of an unfinished compaction, or None."""
        plan = None
        for event in self.events():
            if event["event"] == "planned":
                plan = event
            elif event["event"] == "done":
                plan = None
        return plan

    def append(self, event: dict[str, Any]) -> None:
        make_private_dir(self.work_dir)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.work_dir)


def compaction_dir(work_root: Path, destination: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(destination, sort_keys=True).encode()).hexdigest()[:16]
    return work_root / "compact" / key


def compact(
    publisher: Publisher, work_root: Path, target_bytes: int = DEFAULT_TARGET_BYTES
) -> CompactionReport:
    """Compact the destination (or finish the compaction a crash interrupted)."""
    if target_bytes < 1:
        raise ConfigError(f"--target-size must be at least 1 byte, got {target_bytes}")
    work = compaction_dir(work_root, publisher.config)
    journal = CompactionJournal(work)
    staging = work / "staging"
    with publisher.lock("helmproc compact"):
        pending = journal.pending()
        resumed = pending is not None
        if pending is None:
            ledger = read_ledger(publisher, pin=True)
            batches = plan_batches(ledger, target_bytes)
            if not batches:
                return CompactionReport(0, 0, 0, 0, False)
            shutil.rmtree(staging, ignore_errors=True)
            outputs: dict[str, dict[str, Any]] = {}
            for batch in batches:
                outputs.update(build_outputs(publisher, batch, staging))
            inputs = sorted(p for b in batches for paths in b.inputs.values() for p in paths)
            pending = {
                "event": "planned",
                "inputs": inputs,
                "input_bytes": sum(ledger.files[p].size for p in inputs),
                "outputs": outputs,
                "batches": [
                    {"name": b.name, "inputs": b.inputs, "outputs": b.outputs} for b in batches
                ],
            }
            journal.append(pending)
        _finish(publisher, pending, staging)
        journal.append({"event": "done"})
        shutil.rmtree(staging, ignore_errors=True)
    return CompactionReport(
        len(pending["batches"]),
        len(pending["inputs"]),
        len(pending["outputs"]),
        int(pending.get("input_bytes", 0)),
        resumed,
    )


def _finish(publisher: Publisher, plan: dict[str, Any], staging: Path) -> None:
    """Make the destination hold the plan's outputs and none of its inputs."""
    files = publisher.list_files()
    outputs: dict[str, dict[str, Any]] = plan["outputs"]
    missing = [p for p, fact in outputs.items() if not _holds(publisher, files, p, fact)]
    inputs_left = [p for p in plan["inputs"] if p in files]
    if missing:
        for batch in plan["batches"]:
            wanted = [p for p in batch["outputs"].values() if p in missing]
            if wanted and not all(_staged_ok(staging, p, outputs[p]) for p in wanted):
                b = Batch(
                    batch["name"],
                    {t: tuple(v) for t, v in batch["inputs"].items()},
                    dict(batch["outputs"]),
                )
                build_outputs(publisher, b, staging)
        for p in missing:
            if not _staged_ok(staging, p, outputs[p]):
                raise ConfigError(
                    f"compaction output {p} rebuilt with different bytes; the destination "
                    "changed under the compaction"
                )
    if not missing and not inputs_left:
        return
    publisher.replace_files(
        [(p, staging / p) for p in sorted(missing)],
        inputs_left,
        f"helmproc: compact {len(plan['inputs'])} files into {len(outputs)}",
    )


def _staged_ok(staging: Path, path: str, fact: dict[str, Any]) -> bool:
    local = staging / path
    return local.exists() and sha256_file(local) == fact["sha256"]


def _holds(publisher: Publisher, files: dict[str, Any], path: str, fact: dict[str, Any]) -> bool:
    entry = files.get(path)
    if entry is None or entry.size != fact["n_bytes"]:
        return False
    if entry.sha256 is not None:
        return bool(entry.sha256 == fact["sha256"])
    local = publisher.local_path(path)
    if local is not None:
        return sha256_file(local) == fact["sha256"]
    return hashlib.sha256(publisher.read_bytes(path)).hexdigest() == fact["sha256"]
