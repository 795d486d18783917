"""Chaos resume in CI: a few kill points of the harness in ``bench/chaos.py``, and its checker.

Each case runs the HTTP-source → fake-Hub job as a subprocess, ``SIGKILL``s its whole process
group at the plan's points (one per invocation: ``run``, then each ``resume``), resumes until
an invocation finishes, and requires the destination, the local staging, the ``runs`` table and
the journal's story to equal an uninterrupted run's (``chaos.check``). Every point must have
fired, so a case cannot pass by finishing before its kill. ``python bench/chaos.py`` runs 50
seeded points of the same harness. One case kills the coordinator alone (``--coordinator-only``
in the bench) and requires that no process of the job outlives it by more than a few seconds.
The checker is itself checked: a tampered Hub file, a leftover staged file and an illegal
journal event are each reported.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_hub import FakeHub

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from chaos import REPO, KillPoint, Lab, check, draw_plan, journal_of, run_scenario  # noqa: E402

CHAOS_SEED = 20240501


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """21 runs in 11 chunks on the loopback bucket, and their uninterrupted conversion."""
    with Lab(tmp_path_factory.mktemp("chaos")) as lab:
        yield lab


def describe(outcome) -> str:
    return f"{outcome.describe()}\n" + "\n".join(outcome.problems)


@pytest.mark.parametrize(
    "plan",
    [
        # mid shard write (temp files open) of the first run; then right after the resume
        # journals a chunk processed, before the committer could publish it
        (KillPoint("shard-write", 2), KillPoint("processed", 1)),
        # a commit applied by the Hub whose reply never comes back (landed, not journaled);
        # then a commit cut off as it reaches the Hub (never lands)
        (KillPoint("commit-landed", 1), KillPoint("commit-sent", 1)),
        # right after `uploaded` is journaled (staged files not yet cleaned); then mid LFS
        # upload of the next batch
        (KillPoint("uploaded", 1), KillPoint("lfs-upload", 2)),
    ],
    ids=["shard-write+processed", "commit-landed+commit-sent", "uploaded+lfs-upload"],
)
def test_killed_at_named_moments_resume_equals_uninterrupted(
    lab: Lab, tmp_path: Path, plan: tuple[KillPoint, ...]
) -> None:
    outcome = run_scenario(lab, plan, tmp_path / "job")
    assert outcome.survived, describe(outcome)
    assert outcome.fired == list(plan), describe(outcome)  # every kill happened


def test_killed_during_the_final_commit_resume_publishes_it(lab: Lab, tmp_path: Path) -> None:
    # the job's last commit (releases table and card) cut off as it reaches the Hub; then the
    # resume's only commit (the same) applied but its reply lost: the journal must not say
    # "done" before the final commit landed, or resume would skip it
    plan = (KillPoint("final-commit-sent"), KillPoint("final-commit-landed"))
    outcome = run_scenario(lab, plan, tmp_path / "job")
    assert outcome.survived, describe(outcome)
    assert outcome.fired == list(plan), describe(outcome)


def test_killed_at_seeded_times_resume_equals_uninterrupted(lab: Lab, tmp_path: Path) -> None:
    # timed kills spread over the uninterrupted run's duration, plus seeded named moments; an
    # invocation with a timed kill holds its last chunk until the kill (hold_timed), so the
    # job cannot finish first on a machine faster (or less loaded) than the reference's
    rng = random.Random(CHAOS_SEED)
    plan = (KillPoint("time", at_s=0.6 * lab.reference_s), *draw_plan(rng, lab.reference_s, 2))
    outcome = run_scenario(lab, plan, tmp_path / "job", hold_timed=True)
    assert outcome.survived, describe(outcome)
    assert outcome.fired[:1] == [plan[0]], describe(outcome)


def test_coordinator_killed_alone_leaves_no_orphan_and_resume_equals_uninterrupted(
    lab: Lab, tmp_path: Path
) -> None:
    # the coordinator alone (as the OOM killer does), mid shard write and as a commit reaches
    # the Hub: its fork server and workers must be gone within a few seconds each time
    plan = (KillPoint("shard-write", 3), KillPoint("commit-sent", 1))
    outcome = run_scenario(lab, plan, tmp_path / "job", coordinator_only=True)
    assert outcome.orphans == [], describe(outcome)
    assert outcome.survived, describe(outcome)
    assert outcome.fired == list(plan), describe(outcome)


def test_the_checker_sees_a_wrong_destination_staging_or_journal(
    lab: Lab, tmp_path: Path
) -> None:
    hub = FakeHub().start()
    try:
        work = tmp_path / "job"
        outcome = run_scenario(lab, (), work, hub)  # uninterrupted: nothing to report
        assert outcome.survived, describe(outcome)

        # a shard path committed again with other bytes (the Hub now differs, too)
        repo = hub.repo(REPO)
        runs_shard = next(p for p in hub.files(REPO) if p.startswith("runs/"))
        with hub.lock:
            hub._apply_commit(repo, "main", "tamper", "", {runs_shard: b"PAR1 no"}, {}, [], "x")
        problems = "\n".join(check(lab, hub, work))
        assert "different bytes" in problems and runs_shard in problems
        assert "committed with different content" in problems
        assert "runs table" in problems  # the tampered shard lists no runs

        # a staged file left behind, and an event no legal history has (raw SQL appends)
        staging = next(work.glob(".helmproc/jobs/*/staging"))
        (staging / "leftover.parquet").write_bytes(b"x")
        journal = journal_of(work)
        assert journal is not None
        with sqlite3.connect(journal) as db:
            db.execute(
                "INSERT INTO events (chunk_id, state, at, payload) VALUES (0, 'uploaded', 't', "
                "'{\"commit_id\": \"nope\"}')"
            )
        db.close()
        problems = "\n".join(check(lab, hub, work))
        assert "local staging/scratch not empty" in problems
        assert "chunk 0: illegal history" in problems
    finally:
        hub.stop()
