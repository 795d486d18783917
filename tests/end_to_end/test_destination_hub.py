"""The destination is the ledger, on the fake Hub with the real huggingface_hub client: real
`helmproc` processes across jobs, concurrent writers, and compaction in one commit."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helmproc.engine.errors import DestinationConflictError
from helmproc.engine.job.coordinator import ExecOptions
from helmproc.engine.job.start import execute_job, start_job
from helmproc.engine.publish.compaction import compact
from helmproc.engine.publish.hub import HubPublisher
from helmproc.engine.sources.folder import DirSource
from tests.end_to_end.test_destination import release_runs, suite_runs
from tests.fakes.fake_hub import FakeHub, fake_hub_fixture, hub_env_fixture  # noqa: F401
from tests.fakes.jobkit import FIXTURE, HELMPROC
from tests.fakes.jobkit import helmproc as run_helmproc

REPO = "org/nightly"
FAST = ["--commits-per-hour", "36000"]

pytestmark = pytest.mark.usefixtures("fixed_epoch")


def helmproc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_helmproc(cwd, *args, check=check)


def hub_table(hub: FakeHub, name: str, repo: str = REPO) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(hub.files(repo)):
        if path.startswith(name + "/") and path.endswith(".parquet"):
            rows += pq.read_table(io.BytesIO(hub.content(repo, path))).to_pylist()
    return rows


def ok_runs(hub: FakeHub, repo: str = REPO) -> Counter:
    rows = hub_table(hub, "runs", repo)
    return Counter((r["helm_suite"], r["helm_run"]) for r in rows if r["outcome"] == "ok")


def run_args(*extra: str, repo: str = REPO) -> list[str]:
    return ["run", "--source", str(FIXTURE), "--repo-id", repo, *FAST, *extra]


def test_suite_then_release_then_release_again_on_a_fresh_runner(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    hub = hub_env
    helmproc(tmp_path / "a", *run_args("--suite", "v1.0.0"))
    helmproc(tmp_path / "a", *run_args("--release", "v1.1.0", "--chunk-size", "4"))
    commits = len(hub.commits(REPO))
    files = hub.files(REPO)
    third = helmproc(tmp_path / "fresh", *run_args("--release", "v1.1.0", "--json"))
    summary = json.loads(third.stdout)
    listed = release_runs("v1.1.0")
    assert summary["new_runs"] == 0 and summary["already_present"] == len(listed)
    assert len(hub.commits(REPO)) == commits and hub.files(REPO) == files  # wrote nothing

    assert ok_runs(hub) == Counter(suite_runs("v1.0.0") | listed)
    releases = hub_table(hub, "releases")
    assert Counter((r["helm_release"], r["helm_suite"], r["helm_run"]) for r in releases) == \
        Counter(("v1.1.0", s, r) for s, r in listed)
    card = hub.content(REPO, "README.md").decode()
    rows = re.search(r"^- instance rows: (\d+)", card, re.M)
    assert rows and int(rows.group(1)) == len(hub_table(hub, "instances"))
    assert str(FIXTURE) not in card and str(tmp_path) not in card
    assert "default: true" in card and "license:" in card and "size_categories:" in card


def test_two_concurrent_jobs_on_one_repo_never_publish_a_run_twice(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    hub = hub_env
    procs = []
    for size in (1, 5):
        (tmp_path / f"job{size}").mkdir()
        procs.append(
            subprocess.Popen(
                [*HELMPROC, *run_args("--release", "v1.1.0", "--chunk-size", str(size), "-q")],
                cwd=tmp_path / f"job{size}", env=dict(os.environ), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )
        )
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        assert code in (0, 1), err
        if code == 1:
            assert "another job published" in err and "Traceback" not in err
    assert ok_runs(hub) == Counter(release_runs("v1.1.0"))


def test_the_guard_stops_a_job_whose_runs_another_job_published_meanwhile(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    hub = hub_env
    source = DirSource(FIXTURE)
    first = start_job(source, HubPublisher(REPO), chunk_size=2, work_root=tmp_path / "a")
    # another job (another chunk size, so other shard paths) publishes everything meanwhile
    other = start_job(source, HubPublisher(REPO), chunk_size=5, work_root=tmp_path / "b")
    with other.journal as journal:
        assert execute_job(journal, ExecOptions(max_workers=1, commits_per_hour=36_000)).done
    with first.journal as journal, pytest.raises(DestinationConflictError):
        execute_job(
            journal,
            ExecOptions(max_workers=1, commits_per_hour=36_000),
            ledger=first.ledger,  # what it read before the other job published (stale)
        )
    assert ok_runs(hub) == Counter(release_runs("v1.1.0"))


def test_compaction_on_the_hub_is_one_commit_and_keeps_every_row(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    hub = hub_env
    helmproc(tmp_path, *run_args("--release", "v1.1.0", "--chunk-size", "1"))
    before = {t: Counter(map(json.dumps, hub_table(hub, t), )) for t in ("instances", "runs")}
    files_before = hub.files(REPO)
    n_commits = len(hub.commits(REPO))
    report = compact(HubPublisher(REPO), tmp_path / "work", target_bytes=1 << 30)
    assert report.batches >= 1
    commits = hub.commits(REPO)
    assert len(commits) == n_commits + 1  # new files and deletions: one commit
    after = hub.files(REPO)
    assert len([p for p in after if p.endswith(".parquet")]) < len(
        [p for p in files_before if p.endswith(".parquet")]
    )
    assert {t: Counter(map(json.dumps, hub_table(hub, t))) for t in before} == before
    again = compact(HubPublisher(REPO), tmp_path / "work", target_bytes=1 << 30)
    assert again.batches == 0 and len(hub.commits(REPO)) == n_commits + 1


def test_verify_a_hub_repo_without_a_journal(hub_env: FakeHub, tmp_path: Path) -> None:
    hub = hub_env
    helmproc(tmp_path / "a", *run_args("--release", "v1.1.0", "--chunk-size", "4"))
    ok = helmproc(tmp_path / "fresh", "verify", "--repo-id", REPO, "--json")
    assert json.loads(ok.stdout)["ok"] is True
    shards = sorted(p for p in hub.files(REPO) if p.startswith("instances/"))
    # someone deletes a shard through the client
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=hub.token).delete_file(shards[0], REPO, repo_type="dataset")
    bad = helmproc(tmp_path / "fresh", "verify", "--repo-id", REPO, "--json", check=False)
    assert bad.returncode == 1
    assert "instances file missing" in bad.stdout
    helmproc(tmp_path / "fresh", "verify", "--repo-id", REPO, "--repair")
    helmproc(tmp_path / "fresh", *run_args("--release", "v1.1.0"))  # converts them again
    assert ok_runs(hub) == Counter(release_runs("v1.1.0"))
    assert helmproc(tmp_path / "fresh", "verify", "--repo-id", REPO).returncode == 0
