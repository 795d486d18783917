"""HubPublisher with the real huggingface_hub client against the fake Hub (tests/fake_hub.py).

Whole jobs publish the same files as a folder run; every crash window is built directly, then
resumed, and must end with no file missing, none committed twice and no re-send of a commit
that had landed; Hub faults (429, 5xx, lost responses, stale parents) are retried with the
waits the Hub asked for (sleeps are recorded, not slept); the token never shows up in output,
logs, the journal or errors; the dataset card's configs load with ``datasets``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from helmproc.engine.chunks.worker import w_process_chunk
from helmproc.engine.dataset_layout import shard_path
from helmproc.engine.errors import UnreachableError
from helmproc.engine.facts import ShardFact
from helmproc.engine.job.coordinator import Coordinator
from helmproc.engine.job.options import ExecOptions
from helmproc.engine.job.start import StartedJob, execute_job, start_job
from helmproc.engine.publish.committer import Committer
from helmproc.engine.publish.folder import DirPublisher
from helmproc.engine.publish.hub import HubPublisher
from helmproc.engine.publish.hub_failures import (
    HubAuthError,
    HubRequestError,
    HubUnavailableError,
    RetryPolicy,
    scrub,
)
from helmproc.engine.publish.ledger import read_ledger
from helmproc.engine.publish.pacer import CommitPacer
from helmproc.engine.sources.folder import DirSource
from helmproc.journal import Journal
from tests.fakes.fake_hub import FAKE_TOKEN, FakeHub, fake_hub_fixture, hub_env_fixture  # noqa: F401  (fixtures)
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE, helmproc

REPO = "org/helm-eee"
QUOTA_WAIT_S = 123.0
# Tests pace fast (the default 100/hour would hold the 9th commit back ~39 s).
FAST_PACE = ExecOptions(max_workers=2, commits_per_hour=36_000)


class Sleeps(list[float]):
    """A RetryPolicy.sleep that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def no_jitter() -> float:
    return 1.0


def make_publisher(hub: FakeHub, sleeps: Sleeps | None = None, **kw) -> HubPublisher:
    sleep = sleeps if sleeps is not None else Sleeps()
    # jitter pinned to 1: each backoff is its ceiling, so the expected sleeps are exact
    policy = RetryPolicy(
        base_delay_s=0.01, quota_wait_s=QUOTA_WAIT_S, sleep=sleep, jitter=no_jitter
    )
    kw.setdefault("retry", policy)
    return HubPublisher(kw.pop("repo_id", REPO), endpoint=hub.url, **kw)


def start(pub: HubPublisher, work: Path) -> StartedJob:
    return start_job(DirSource(FIXTURE), pub, chunk_size=3, work_root=work)


def coordinator(journal: Journal, started: StartedJob, pub, options=FAST_PACE) -> Coordinator:
    source = journal.job().config["source"]  # type: ignore[union-attr]
    return Coordinator(journal, started.paths, source, pub, options)


def hub_digest(hub: FakeHub, repo: str = REPO) -> dict[str, str]:
    """Path -> sha256 at the head, without the Hub's own and other people's files."""
    return {
        p: sha
        for p, sha in hub.files(repo).items()
        if p != ".gitattributes" and not p.startswith("other/")
    }


def times_added(hub: FakeHub, repo: str = REPO) -> Counter[str]:
    return Counter(p for c in hub.commits(repo) for p in c.added if p.endswith(".parquet"))


pytestmark = pytest.mark.usefixtures("fixed_epoch")



@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[ShardFact, ...]]:
    """Chunk 1's shards of the fixture job, processed once, sitting in a staging folder."""
    base = tmp_path_factory.mktemp("staged")
    mp = pytest.MonkeyPatch()
    mp.setenv("SOURCE_DATE_EPOCH", FIXED_EPOCH)
    try:
        started = start_job(
            DirSource(FIXTURE), DirPublisher(base / "out"), chunk_size=3, work_root=base / "w"
        )
        with started.journal as journal:
            coord = coordinator(journal, started, DirPublisher(base / "out"))
            result = w_process_chunk(coord._spec(1))
    finally:
        mp.undo()
    return started.paths.staging, result.shards


# -- whole jobs ----------------------------------------------------------------------------


def test_whole_job_publishes_the_same_files_as_a_folder_run(
    hub_env: FakeHub, tmp_path: Path, reference: dict[str, str]
) -> None:
    hub = hub_env
    t0 = time.time()
    started = start(HubPublisher(REPO), tmp_path / "work")  # endpoint and token from the env
    with started.journal as journal:
        assert "token" not in json.dumps(journal.job().config).lower()  # type: ignore[union-attr]
        report = execute_job(journal, ExecOptions(max_workers=2)).to_json()  # default pace
        events = journal.events()
    assert report["done"] is True and report["runs"] == {"ok": 12, "failed": 0}
    assert hub_digest(hub) == reference  # same paths, same sha256, same final card
    assert set(times_added(hub).values()) == {1}  # no shard committed twice
    commits = hub.commits(REPO)
    oids = {c.oid for c in commits}
    assert {e["payload"]["commit_id"] for e in events if e["state"] == "uploaded"} <= oids
    ours = [c for c in commits if c.author == "client"]
    first_shard = min(c.at for c in ours if any(p.endswith(".parquet") for p in c.added))
    assert "README.md" in ours[0].added  # the card rides with the first commit
    print(
        f"\nfixture job: {len(ours)} commits, files per commit "
        f"{[len(c.added) for c in ours]}, first shard published {first_shard - t0:.2f} s "
        f"after start, job {time.time() - t0:.2f} s"
    )


def test_two_upload_workers_small_commits_and_periodic_cards(
    hub_env: FakeHub, tmp_path: Path, reference: dict[str, str]
) -> None:
    hub = hub_env
    pub = make_publisher(hub)
    started = start(pub, tmp_path / "work")
    options = ExecOptions(
        max_workers=2,
        commits_per_hour=36_000,
        upload_workers=2,  # commits race: the loser gets a 412, re-reads the head, retries
        publish_max_files=3,  # one chunk per commit
        card_interval_s=0,  # refresh the card on every loop: it rides with each commit
    )
    with started.journal as journal:
        assert coordinator(journal, started, pub, options).execute().done
    assert hub_digest(hub) == reference  # the final card is the last word
    assert set(times_added(hub).values()) == {1}
    ours = [c for c in hub.commits(REPO) if c.author == "client"]
    data = [  # chunk commits (the releases table rides with the final card)
        c for c in ours
        if any(p.endswith(".parquet") and not p.startswith("releases/") for p in c.added)
    ]
    assert len(data) == 5 and all(len(c.added) <= 4 for c in data)
    assert sum("README.md" in c.added for c in data) >= 2  # refreshed, not only the first


def test_card_configs_load_with_datasets_mid_job_and_at_the_end(
    hub_env: FakeHub, tmp_path: Path
) -> None:
    import datasets
    from huggingface_hub import snapshot_download

    hub = hub_env
    pub = make_publisher(hub)
    started = start(pub, tmp_path / "work")
    with started.journal as journal:  # crash right after the first commit (card riding along)
        coord = coordinator(journal, started, pub)
        result = w_process_chunk(coord._spec(0))
        journal.record_processed(0, result.shards, result.outcomes)
        card = coord._card_text(read_ledger(pub))
        pub.publish(coord.paths.staging, result.shards, "first", card=card)

    def load(config: str | None, name: str) -> datasets.Dataset:
        local = snapshot_download(
            REPO, repo_type="dataset", local_dir=tmp_path / name, endpoint=hub.url
        )
        return datasets.load_dataset(
            local, config, split="train", cache_dir=str(tmp_path / "cache" / name)
        )

    first_rows = sum(o.n_rows for o in result.outcomes)
    assert load("instances", "mid").num_rows == first_rows > 0
    with Journal.open(started.paths.journal) as journal:
        report = coordinator(journal, started, pub).execute().to_json()
    assert report["done"]
    assert load("instances", "end").num_rows == report["rows"]
    assert load(None, "end-default").num_rows == report["rows"]  # the default config
    assert load("runs", "end-runs").num_rows == 12
    assert load("releases", "end-releases").num_rows == 12
    assert load("evaluations", "end-evals").num_rows > 0


def test_xet_upload_path_publishes_the_same_sha256(
    hub_env: FakeHub, tmp_path: Path, reference: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's default (Xet on): uploads go through hf_xet to a local:// CAS."""
    from huggingface_hub import constants
    from huggingface_hub.utils._runtime import is_xet_available

    hub = hub_env
    hub.xet_dir = str(tmp_path / "cas")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    if not is_xet_available():
        pytest.skip("hf_xet is not installed")
    pub = make_publisher(hub)
    started = start(pub, tmp_path / "work")
    with started.journal as journal:
        assert coordinator(journal, started, pub).execute().done
    assert hub_digest(hub) == reference
    assert not [c for c in hub.calls if c[1] in ("lfs-batch", "lfs-put")]  # no LFS traffic
    assert any(c[1] == "xet-token" for c in hub.calls)


# -- crash windows -------------------------------------------------------------------------
# Each builder leaves the state a crash at one boundary leaves; ``landed`` says whether chunk
# 0's commit reached the Hub before the crash (then resume must not send it again).


def crash_before_commit(coord: Coordinator, journal: Journal, hub: FakeHub) -> bool:
    """Chunks 0 and 1 processed and journaled; nothing sent."""
    for cid in (0, 1):
        result = w_process_chunk(coord._spec(cid))
        journal.record_processed(cid, result.shards, result.outcomes)
    return False


def crash_commit_landed_response_lost(coord: Coordinator, journal: Journal, hub: FakeHub) -> bool:
    """Chunk 0's commit was applied by the Hub, the reply never came, and the process died."""
    from huggingface_hub import CommitOperationAdd, HfApi

    result = w_process_chunk(coord._spec(0))
    journal.record_processed(0, result.shards, result.outcomes)
    api = HfApi(endpoint=hub.url, token=FAKE_TOKEN)
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    hub.lose_response("commit", nth=hub.counts["commit"] + 1)
    ops = [CommitOperationAdd(f.path, str(coord.paths.staging / f.path)) for f in result.shards]
    with pytest.raises(Exception, match="(?i)disconnect|protocol|closed"):
        api.create_commit(REPO, ops, commit_message="lost reply", repo_type="dataset")
    return True


def crash_after_commit_before_uploaded(
    coord: Coordinator, journal: Journal, hub: FakeHub
) -> bool:
    """Chunk 0 committed and confirmed, but `uploaded` never journaled."""
    result = w_process_chunk(coord._spec(0))
    journal.record_processed(0, result.shards, result.outcomes)
    coord.publisher.publish(coord.paths.staging, result.shards, "confirmed")
    return True


def crash_after_uploaded(coord: Coordinator, journal: Journal, hub: FakeHub) -> bool:
    """Chunk 0 committed and journaled `uploaded`; staging not cleaned."""
    result = w_process_chunk(coord._spec(0))
    journal.record_processed(0, result.shards, result.outcomes)
    commit = coord.publisher.publish(coord.paths.staging, result.shards, "journaled")
    journal.record_uploaded(0, commit)
    return True


@pytest.mark.parametrize(
    "crash",
    [
        crash_before_commit,
        crash_commit_landed_response_lost,
        crash_after_commit_before_uploaded,
        crash_after_uploaded,
    ],
)
def test_resume_after_crash_window(
    hub_env: FakeHub,
    tmp_path: Path,
    reference: dict[str, str],
    crash: Callable[[Coordinator, Journal, FakeHub], bool],
) -> None:
    hub = hub_env
    pub = make_publisher(hub)
    started = start(pub, tmp_path / "work")
    with started.journal as journal:
        landed = crash(coordinator(journal, started, pub), journal, hub)
        chunk0 = [f.path for f in journal.chunk_status(0).shards]
    landed_commit = hub.repo(REPO).log[-1] if landed else None
    preuploads_before = {p: hub.preuploads[p] for p in chunk0}

    resumed = make_publisher(hub)  # a new process: nothing cached
    with Journal.open(started.paths.journal) as journal:
        report = coordinator(journal, started, resumed).execute().to_json()
        events = [e for e in journal.events() if e["chunk_id"] == 0]
    assert report["done"] is True and report["runs"] == {"ok": 12, "failed": 0}
    assert hub_digest(hub) == reference  # nothing missing, nothing extra
    assert set(times_added(hub).values()) == {1}  # nothing committed twice
    assert not [p for p in started.paths.staging.rglob("*") if p.is_file()]
    states = [e["state"] for e in events]
    assert states.count("processed") == 1
    if landed:
        # recognised by sha256, journaled with the commit that landed, never sent again
        assert {p: hub.preuploads[p] for p in chunk0} == preuploads_before
        uploaded = [e["payload"]["commit_id"] for e in events if e["state"] == "uploaded"]
        assert uploaded == [landed_commit]


# -- faults inside one publish -------------------------------------------------------------

RATE_HEADERS = {
    "RateLimit": '"api";r=0;t=5',
    "RateLimit-Policy": '"fixed window";"api";q=1000;w=300',
}
QUOTA_TEXT = (
    "You have exceeded the rate limit for repository commits (128 per hour). "
    "You can retry this action in about 1 hour."
)


@pytest.mark.parametrize(
    ("arm", "sleeps_expected", "commit_posts"),
    [
        # a 503 on the commit: checked (not landed), then sent again after a backoff
        (lambda h: h.fail("commit", 1, 503), [0.01], 2),
        # a 500 on preupload: huggingface_hub's own retry (1 s), nothing for ours to do
        (lambda h: h.fail("preupload", 1, 500), [], 1),
        # 429 with Retry-After: wait what the Hub said (+1 s margin, like the client)
        (lambda h: h.rate_limit("commit", 1, retry_after=7), [8.0], 2),
        # 429 with only the RateLimit header: wait until its reset
        (lambda h: h.fail("commit", 1, 429, RATE_HEADERS), [6.0], 2),
        # 429 of the hourly commit quota, no header: the quota wait
        (lambda h: h.fail("commit", 1, 429, body=QUOTA_TEXT), [QUOTA_WAIT_S], 2),
        # commit applied, reply lost: found by sha256, not sent again
        (lambda h: h.lose_response("commit", 1), [], 1),
        # connection dropped before the commit was applied: checked, then sent again
        (lambda h: h.drop("commit", 1), [0.01], 2),
        # someone committed in between: 412, re-read the head, commit again at once
        (lambda h: h.foreign_commit_before(1), [], 2),
        # reply lost, and the first look at paths-info fails too: the read is retried
        (lambda h: (h.lose_response("commit", 1), h.fail("paths-info", 2, 502)), [0.01], 1),
    ],
    ids=[
        "503-commit",
        "500-preupload",
        "429-retry-after",
        "429-ratelimit-header",
        "429-hourly-quota",
        "response-lost",
        "connection-dropped",
        "412-stale-parent",
        "lost-then-paths-info-502",
    ],
)
def test_faults_are_retried_without_duplicates(
    hub_env: FakeHub,
    staged: tuple[Path, tuple[ShardFact, ...]],
    arm: Callable[[FakeHub], object],
    sleeps_expected: list[float],
    commit_posts: int,
) -> None:
    hub = hub_env
    staging, shards = staged
    sleeps = Sleeps()
    pub = make_publisher(hub, sleeps)
    arm(hub)
    commit = pub.publish(staging, shards, "helmproc: faults", card="---\nconfigs: []\n---\n")
    assert sleeps == sleeps_expected
    assert len(hub.statuses("commit")) == commit_posts
    files = hub.files(REPO)
    assert {f.path: f.sha256 for f in shards}.items() <= files.items()
    assert "README.md" in files
    assert set(times_added(hub).values()) == {1}
    assert pub.published_commit(shards) == commit


def test_retries_give_up_with_a_clear_error(hub_env: FakeHub, staged) -> None:
    hub = hub_env
    staging, shards = staged
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=3, base_delay_s=1, sleep=sleeps, jitter=no_jitter)
    pub = make_publisher(hub, retry=policy)
    for nth in (1, 2, 3):
        hub.fail("commit", nth, 503)
    with pytest.raises(HubUnavailableError) as info:
        pub.publish(staging, shards, "doomed")
    text = str(info.value)
    assert REPO in text and "HTTP 503" in text and "helmproc resume" in text
    assert sleeps == [1, 2]  # exponential backoff between the three attempts
    assert pub.published_commit(shards) is None


def test_terminal_refusal_is_not_retried(hub_env: FakeHub, staged) -> None:
    hub = hub_env
    staging, shards = staged
    sleeps = Sleeps()
    pub = make_publisher(hub, sleeps)
    hub.fail("commit", 1, 422, body="unprocessable")
    with pytest.raises(HubRequestError, match="HTTP 422"):
        pub.publish(staging, shards, "refused")
    assert sleeps == [] and len(hub.statuses("commit")) == 1


# -- credentials ---------------------------------------------------------------------------


def test_missing_or_wrong_token_is_an_auth_error_without_the_token(
    hub_env: FakeHub, staged, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_env
    staging, shards = staged
    wrong = "hf_wrongWRONGwrong0123456789"
    with pytest.raises(HubAuthError) as info:
        make_publisher(hub, token=wrong).publish(staging, shards, "x")
    assert wrong not in str(info.value) and "HF_TOKEN" in str(info.value)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubAuthError, match="no Hugging Face token"):
        make_publisher(hub).publish(staging, shards, "x")
    assert REPO not in hub.repos  # nothing was created without credentials


def test_scrub_removes_tokens() -> None:
    text = f"401 for Bearer {FAKE_TOKEN} and hf_AnotherTokenLike123456 and {FAKE_TOKEN}"
    out = scrub(text, FAKE_TOKEN)
    assert FAKE_TOKEN not in out and "hf_Another" not in out and "Bearer" not in out



def test_token_never_appears_in_output_logs_journal_or_errors(
    hub_env: FakeHub, tmp_path: Path, staged, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_env
    # the Hub echoes the token in an error body: the message must come out scrubbed
    hub.fail("commit", 1, 400, body=f"rejected request authorized with {FAKE_TOKEN}")
    args = ["--source", str(FIXTURE), "--repo-id", "org/leak", "--chunk-size", "3",
            "--max-workers", "2", "--commits-per-hour", "36000"]
    failed = helmproc(tmp_path, "run", *args)
    assert failed.returncode == 1, failed.stderr
    assert "publishing failed" in failed.stderr and "org/leak" in failed.stderr
    assert "<token>" in failed.stderr  # the echoed token was there, and was scrubbed
    outputs = [failed]
    outputs.append(helmproc(tmp_path, "resume", "--commits-per-hour", "36000"))
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    outputs.append(helmproc(tmp_path, "status", "--json"))
    assert json.loads(outputs[-1].stdout)["done"] is True
    outputs.append(helmproc(tmp_path, "verify"))
    assert outputs[-1].returncode == 0, outputs[-1].stdout + outputs[-1].stderr
    for proc in outputs:
        assert FAKE_TOKEN not in proc.stdout and FAKE_TOKEN not in proc.stderr
    work = list((tmp_path / ".helmproc").rglob("*"))
    assert any(p.name == "journal.sqlite" for p in work)
    for path in work:
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path

    # in-process: debug logs of helmproc and huggingface_hub, and error text
    caplog.set_level(logging.DEBUG)
    staging, shards = staged
    hub.fail("commit", hub.counts["commit"] + 1, 403, body="forbidden")
    pub = make_publisher(hub)
    with pytest.raises(HubAuthError) as info:
        pub.publish(staging, shards, "x")
    pub.publish(staging, shards, "y")
    assert FAKE_TOKEN not in str(info.value) and FAKE_TOKEN not in repr(pub)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert FAKE_TOKEN not in caplog.text
    assert FAKE_TOKEN not in json.dumps(pub.config)


def test_cli_without_a_token_says_what_to_do(
    hub_env: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from helmproc.cli.app import app
    from helmproc.cli.errors import describe

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--source", str(FIXTURE), "--repo-id", "org/none"])
    described = describe(result.exception) if result.exception else None
    assert described is not None
    message, code = described
    assert code == 1
    assert "no Hugging Face token" in message and "hf auth login" in message
    assert "the Hub was not contacted" in message and "refused" not in message
    assert "helmproc resume" not in message  # no job was recorded: nothing to resume
    assert not (tmp_path / ".helmproc").exists()  # refused before planning anything
    assert "org/none" not in hub_env.repos
    assert hub_env.calls == []  # indeed not contacted


def test_an_unreachable_hub_fails_at_once_without_retrying(tmp_path: Path) -> None:
    """Connection refused before any byte (the endpoint's port is closed): no retry, no wait,
    one line naming the host; with the default policy this took minutes of silent retries."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    sleeps, said = Sleeps(), []
    policy = RetryPolicy(base_delay_s=0.01, sleep=sleeps, notify=said.append)
    pub = HubPublisher(REPO, endpoint=dead, token=FAKE_TOKEN, retry=policy)
    with pytest.raises(UnreachableError) as caught:
        pub.prepare()
    assert str(caught.value) == (
        "cannot reach 127.0.0.1: offline? use --to DIR to write a local folder instead"
    )
    assert sleeps == [] and said == []


def test_an_unresolvable_hub_fails_before_the_job_is_planned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline (the resolver is faked: no DNS query leaves the machine): `run --repo-id` stops
    before planning, with one line and no `resume` hint, and records nothing."""
    from helmproc.cli.app import app
    from helmproc.cli.errors import describe

    def no_such_name(*args: object, **kwargs: object) -> NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    monkeypatch.chdir(tmp_path)
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["run", "--source", str(FIXTURE), "--repo-id", "org/x"])
    described = describe(result.exception, job_recorded=False) if result.exception else None
    assert described is not None
    message, code = described
    assert code == 1
    assert message.splitlines()[0] == (
        "helmproc: cannot reach hub.example: offline? use --to DIR to write a local folder "
        "instead"
    )
    assert "resume" not in message
    assert not (tmp_path / ".helmproc").exists()


def test_hub_retries_say_a_line_each(hub_env: FakeHub, staged) -> None:
    hub = hub_env
    staging, shards = staged
    said: list[str] = []
    policy = RetryPolicy(base_delay_s=0.01, sleep=Sleeps(), notify=said.append)
    pub = HubPublisher(REPO, endpoint=hub.url, retry=policy)
    hub.fail("commit", 1, 503)
    hub.fail("commit", 2, 503)
    pub.publish(staging, shards, "after two 503s")
    assert len(said) == 2 and all("server error" in line for line in said)


# -- repo setup ----------------------------------------------------------------------------


def test_repo_created_private_on_a_new_branch_with_parquet_in_lfs(
    hub_env: FakeHub, staged
) -> None:
    hub = hub_env
    hub.gitattributes = "*.bin filter=lfs diff=lfs merge=lfs -text\n"  # no parquet rule
    staging, shards = staged
    pub = make_publisher(hub, revision="dev", private=True)
    pub.publish(staging, shards, "on dev")
    repo = hub.repo(REPO)
    assert repo.private is True
    assert set(hub.files(REPO, "dev")) >= {f.path for f in shards}
    assert not any(p.endswith(".parquet") for p in hub.files(REPO, "main"))
    head = repo.head("dev")
    assert head is not None and all(head.files[f.path].lfs for f in shards)
    assert "*.parquet filter=lfs" in hub.content(REPO, ".gitattributes", "dev").decode()


# -- pacing and batching -------------------------------------------------------------------


def test_pacer_keeps_every_hour_under_the_limit() -> None:
    now = [0.0]
    pacer = CommitPacer(100, clock=lambda: now[0])
    starts: list[float] = []
    for _ in range(400):
        now[0] += pacer.wait_s()
        pacer.take()
        starts.append(now[0])
    assert starts[: pacer.burst] == [0.0] * pacer.burst  # the first commits go at once
    window = max(sum(1 for t in starts if s <= t < s + 3600) for s in starts)
    assert window <= 100
    assert starts[-1] < 400 * 3600 / 90  # and the pace is not much slower than asked
    assert CommitPacer(None).wait_s() == 0.0


class RecordingPublisher:
    max_commits_per_hour: float | None = None

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], str | None]] = []
        self.cards: list[str] = []

    @property
    def config(self) -> dict:
        return {"kind": "recording"}

    def publish(self, staging, shards, message, card=None) -> str:
        self.batches.append(([s.path for s in shards], card))
        return f"c{len(self.batches)}"

    def write_card(self, text: str) -> None:
        self.cards.append(text)

    def prepare(self) -> None:
        pass

    def published_commit(self, shards) -> None:
        return None

    def check(self, shard) -> None:
        return None


def test_committer_fills_batches_while_the_pace_holds_commits_back(tmp_path: Path) -> None:
    now = [0.0]
    pacer = CommitPacer(2, burst=1, clock=lambda: now[0])  # one commit now, then one an hour
    rec = RecordingPublisher()
    committer = Committer(rec, tmp_path, max_files=9, pacer=pacer)

    def shards(cid: int) -> list[ShardFact]:
        return [ShardFact(t, f"{t}/{cid}.parquet", 1, 1, "x") for t in ("a", "b", "c")]

    def next_reports() -> list:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if got := committer.reports(timeout=0.2):
                return got
        raise AssertionError("no commit")

    committer.submit_card("card v1")
    committer.submit(0, shards(0))
    assert next_reports()[0].chunk_ids == (0,)  # the first shard goes out at once
    for cid in range(1, 6):
        committer.submit(cid, shards(cid))
    committer.submit_card("card v2")
    time.sleep(0.4)
    assert len(rec.batches) == 1  # held back by the pace, gathering
    now[0] += 3600
    assert next_reports()[0].chunk_ids == (1, 2, 3)  # up to 9 files
    time.sleep(0.3)
    now[0] += 3600
    assert next_reports()[0].chunk_ids == (4, 5)
    committer.submit_card("final", alone=True)
    now[0] += 3600
    closer = threading.Thread(target=committer.close, kwargs={"drain": True})
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive()
    assert [len(paths) for paths, _ in rec.batches] == [3, 9, 6]
    assert [card for _, card in rec.batches] == ["card v1", "card v2", None]
    assert rec.cards == ["final"]
    assert committer.commits == 4


def test_shard_folders_stay_under_the_hub_limit() -> None:
    per_folder = Counter(
        shard_path(table, "job", cid).rsplit("/", 1)[0]
        for table in ("instances", "runs")
        for cid in range(25_000)
    )
    assert max(per_folder.values()) <= 10_000
