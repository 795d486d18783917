"""``helmproc verify``: every published shard in the journal checked against the destination.

Both destinations: a local folder (DirPublisher) and a Hub repo on the fake Hub. Each kind of
damage (missing, changed bytes, wrong size, wrong row count) is made on purpose and must be
reported with its path; an intact destination verifies clean with exit code 0.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from helmproc.cli.app import app
from helmproc.engine.chunks.worker import w_process_chunk
from helmproc.engine.facts import ShardFact
from helmproc.engine.job.coordinator import Coordinator
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import start_job
from helmproc.engine.job.verify import verify_journal
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.publish.hub import HubPublisher
from helmproc.engine.sources.folder import DirSource
from helmproc.journal import ChunkState, Journal
from tests.fakes.fake_hub import FAKE_TOKEN, FakeHub, fake_hub_fixture, hub_env_fixture  # noqa: F401  (fixtures)
from tests.fakes.jobkit import FIXTURE, run_to_end

REPO = "org/verify-me"
FAST = ExecOptions(max_workers=2, commits_per_hour=36_000)


pytestmark = pytest.mark.usefixtures("fixed_epoch")


def journal_of(work: Path) -> Path:
    return next((work / "jobs").iterdir()) / "journal.sqlite"


def published_shards(journal: Path) -> list[ShardFact]:
    with Journal.open(journal, readonly=True) as jr:
        return [
            fact
            for st in jr.chunk_statuses().values()
            if st.state in (ChunkState.UPLOADED, ChunkState.CLEANED)
            for fact in st.shards
        ]


def other_parquet(n_rows: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(n_rows))}), buf)
    return buf.getvalue()


def hub_job(hub: FakeHub, work: Path) -> Path:
    pub = HubPublisher(REPO, endpoint=hub.url)
    started = start_job(DirSource(FIXTURE), pub, chunk_size=3, work_root=work)
    with started.journal as journal:
        source = journal.job().config["source"]  # type: ignore[union-attr]
        assert Coordinator(journal, started.paths, source, pub, FAST).execute().done
    return started.paths.journal


# -- local folder --------------------------------------------------------------------------


def test_folder_verifies_clean_then_reports_each_damage(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    assert run_to_end(FIXTURE, out, work).to_json()["done"]
    journal = journal_of(work)
    clean = verify_journal(journal)
    assert clean.ok and clean.n_shards == 15 and clean.n_chunks == 5
    assert clean.destination == str(out.resolve())

    shards = published_shards(journal)
    missing, changed, truncated = shards[0], shards[1], shards[2]
    (out / missing.path).unlink()
    data = bytearray((out / changed.path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    (out / changed.path).write_bytes(bytes(data))
    (out / truncated.path).write_bytes((out / truncated.path).read_bytes()[:-5])

    report = verify_journal(journal)
    problems = {m.path: m.problem for m in report.mismatches}
    assert problems == {
        missing.path: "missing",
        changed.path: "sha256 differs from the journal",
        truncated.path: f"size {truncated.n_bytes - 5} != journaled {truncated.n_bytes}",
    }

    result = CliRunner().invoke(app, ["verify", "--journal", str(journal)])
    assert result.exit_code == 1
    assert result.stdout.count("MISMATCH") == 3 and "3 mismatch(es)" in result.stdout
    as_json = CliRunner().invoke(app, ["verify", "--journal", str(journal), "--json"])
    assert as_json.exit_code == 1
    data_json = json.loads(as_json.stdout)
    assert data_json["ok"] is False and len(data_json["mismatches"]) == 3


def test_row_count_comes_from_the_parquet_footer(tmp_path: Path, hub_env: FakeHub) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    run_to_end(FIXTURE, out, work)
    fact = next(f for f in published_shards(journal_of(work)) if f.n_rows > 1)
    wrong = dataclasses.replace(fact, n_rows=fact.n_rows + 1)
    expect = f"{fact.n_rows} rows != journaled {fact.n_rows + 1}"
    assert DirPublisher(out).check(wrong) == expect

    pub = HubPublisher(REPO, endpoint=hub_env.url)
    pub.publish(out, [fact], "one shard")
    assert pub.check(fact) is None
    assert pub.check(wrong) == expect  # two range requests for the footer, no download
    ranged = [c for c in hub_env.calls if c[1] == "resolve" and c[3] == 206]
    assert len(ranged) >= 2


# -- Hub -----------------------------------------------------------------------------------


def test_hub_verifies_clean_then_reports_remote_damage(hub_env: FakeHub, tmp_path: Path) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    journal = hub_job(hub_env, tmp_path / "work")
    clean = verify_journal(journal)
    assert clean.ok and clean.n_shards == 15
    assert clean.destination == f"hf://datasets/{REPO}@main"

    shards = published_shards(journal)
    gone, replaced = shards[0], shards[1]
    HfApi(endpoint=hub_env.url, token=FAKE_TOKEN).create_commit(
        REPO,
        [
            CommitOperationDelete(gone.path),
            CommitOperationAdd(replaced.path, other_parquet(3)),
        ],
        commit_message="someone broke it",
        repo_type="dataset",
    )
    report = verify_journal(journal)
    problems = {m.path: m.problem for m in report.mismatches}
    assert set(problems) == {gone.path, replaced.path}
    assert problems[gone.path] == "missing"
    assert problems[replaced.path].startswith("size ")

    proc = subprocess.run(
        [sys.executable, "-m", "helmproc.cli", "verify", "--journal", str(journal)],
        env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert f"MISMATCH chunk 0 {gone.path}: missing" in proc.stdout
    assert FAKE_TOKEN not in proc.stdout + proc.stderr


def test_hub_repo_that_does_not_exist_reports_every_shard(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    journal = hub_job(hub_env, tmp_path / "work")
    report = verify_journal(journal, HubPublisher("org/elsewhere", endpoint=hub_env.url))
    assert len(report.mismatches) == 15
    assert all(m.problem.startswith("missing (") for m in report.mismatches)
    assert "org/elsewhere" not in hub_env.repos  # verify never creates anything


def test_only_published_chunks_are_checked(hub_env: FakeHub, tmp_path: Path) -> None:
    pub = HubPublisher(REPO, endpoint=hub_env.url)
    started = start_job(DirSource(FIXTURE), pub, chunk_size=3, work_root=tmp_path / "work")
    with started.journal as journal:
        source = journal.job().config["source"]  # type: ignore[union-attr]
        coord = Coordinator(journal, started.paths, source, pub, FAST)
        for cid in (0, 1):
            result = w_process_chunk(coord._spec(cid))
            journal.record_processed(cid, result.shards, result.outcomes)
        commit = pub.publish(started.paths.staging, result.shards, "chunk 1 only")
        journal.record_uploaded(1, commit)
    report = verify_journal(started.paths.journal)  # readonly: fine while a job holds it
    assert report.ok and report.n_chunks == 1 and report.n_shards == 3


def test_verify_has_help() -> None:
    result = CliRunner().invoke(app, ["verify", "--help"])
    assert result.exit_code == 0 and "--journal" in result.stdout and "--json" in result.stdout
