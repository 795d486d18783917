"""Chaos: ``kill -9`` a helmproc job at seeded moments, resume until done, check nothing was lost.

How it works: ``Lab`` builds a corpus (the fixture's v1.1.0 runs copied ``copies`` times into
one release, run names keeping their ``:``, ``,`` and ``=``), serves it from the loopback
bucket (``tests/bucket_server.py``) and converts it once without interruption into a fake Hub
(``tests/fake_hub.py``): that repo is the reference, and its wall time sets the scale of the
timed kills. ``run_scenario`` then runs the same job as a subprocess (``helmproc run
--source <bucket> ... --repo-id``) into a fresh fake Hub, and for each ``KillPoint`` of its plan
``SIGKILL``s the whole process group (coordinator, pool, forkserver) when the point is reached
(or, with ``--coordinator-only``, the coordinator process alone, as the kernel's OOM killer
does: see "Coordinator-only kills" below):

    time           t seconds after launch (drawn over the reference run's duration)
    processed      right after the nth new ``processed`` event appears in the journal
    uploaded       right after the nth new ``uploaded`` event appears in the journal
    shard-write    while the nth shard of the invocation is being written (its temp file exists)
    lfs-upload     as the Hub receives the nth LFS upload (the upload is cut off)
    commit-sent    as the Hub receives the nth commit, before it is applied (it never lands)
    commit-landed  right after the Hub applied the nth commit, before the reply is sent
    final-commit-sent    as the Hub receives the job's final commit (releases table and card),
                         before it is applied (it never lands)
    final-commit-landed  right after the Hub applied the final commit, before the reply

then runs ``helmproc resume`` (``run`` again when the kill came before the job was recorded),
killing it at the plan's next point, and so on until an invocation finishes. ``check``
compares the outcome with the reference: the Hub repo's files (paths and sha256), empty local
staging and scratch, every run exactly once in the ``runs`` table, every chunk's journal
history a legal sequence ending ``cleaned``, the journaled commits exactly the Hub's commits
that carry shards (each holding its chunk's shards), and no shard path committed twice.

Coordinator-only kills (``--coordinator-only``): each kill is ``SIGKILL`` to the coordinator's
pid alone. The fork server and the workers must then go by themselves: right before the kill
the harness notes the coordinator's descendants, and within ``ORPHAN_GRACE_S`` of the kill
every one of them and every process of the job's process group must be gone; any left is an
orphan (reported, counted, then killed so the run goes on). With ``--runs R --instances I``
the corpus is ``bench/corpus.py``'s uniform MMLU-like runs instead of fixture copies, so the
job runs long enough (42-52 s on a shared 2-core machine with ``--runs 36 --instances 2000``)
for the Hub kill points (drawn over the reference run's counts of uploads and commits) to land
in the middle of publishing. The kinds of the kill points rotate through all of ``KINDS``.

Nothing persists across a crash of this script but its temporary folder (removed at the end
unless ``--keep``). Run: ``python bench/chaos.py [--points 50] [--seed 1]`` (or
``python bench/chaos.py --coordinator-only --runs 36 --instances 2000 --points 10``); it prints
``survived N/M`` where M counts the kill points that fired and N those whose job still ended
equal to the reference, then the orphans and the duplicates (a destination file committed
twice, a run twice in ``runs``) found. ``tests/end_to_end/test_chaos.py`` runs a few fixed
points of the same harness.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from corpus import uniform_plan, write_corpus  # noqa: E402 - bench/corpus.py

from helmproc.engine.chunks.hold_points import ENV as HOLD_ENV  # noqa: E402
from helmproc.engine.chunks.hold_points import gate  # noqa: E402
from helmproc.journal import LEGAL_TRANSITIONS, ChunkState, Journal  # noqa: E402
from tests.fakes.bucket_server import BucketServer  # noqa: E402 - lives in tests/
from tests.fakes.fake_hub import FakeHub, Fault  # noqa: E402
from tests.fakes.jobkit import FIXED_EPOCH, FIXTURE  # noqa: E402

PROJECT = "chaos"
RELEASE = "chaos"
SUITE = "chaos"
REPO = "org/chaos"
HELMPROC = [sys.executable, "-m", "helmproc.cli"]
POLL_S = 0.002
INVOCATION_TIMEOUT_S = 180.0
TIMED_KINDS = ("time",)
JOURNAL_KINDS = ("processed", "uploaded")
FINAL_KINDS = ("final-commit-sent", "final-commit-landed")
HUB_KINDS = ("lfs-upload", "commit-sent", "commit-landed", *FINAL_KINDS)
KINDS = (*TIMED_KINDS, *JOURNAL_KINDS, "shard-write", *HUB_KINDS)
# The title of the job's last commit (the releases table and the final card).
FINAL_COMMIT_TITLE = "helmproc: releases table and dataset card"
HUB_ROUTE = {"lfs-upload": "lfs-put", "commit-sent": "commit", "commit-landed": "commit"}
# How long the fork server and workers may take to go after the coordinator was killed alone
# (their watchdog polls every 0.2 s).
ORPHAN_GRACE_S = 5.0
# How ``check`` begins a problem that is a file or a run present twice.
DUPLICATE_PREFIXES = ("duplicate:",)


@dataclass(frozen=True)
class KillPoint:
    """When to kill one invocation: ``kind`` (see the module docstring) and its nth/time."""

    kind: str
    nth: int = 1
    at_s: float = 0.0

    def describe(self) -> str:
        if self.kind == "time":
            return f"time {self.at_s:.2f}s"
        if self.kind in FINAL_KINDS:
            return self.kind
        return f"{self.kind} #{self.nth}"


def draw_plan(rng: random.Random, reference_s: float, max_kills: int = 3) -> tuple[KillPoint, ...]:
    """1..``max_kills`` kill points: half timed (spread over the job), half at named moments."""
    plan: list[KillPoint] = []
    for _ in range(rng.randint(1, max_kills)):
        kind = "time" if rng.random() < 0.5 else rng.choice(KINDS[1:])
        if kind == "time":
            plan.append(KillPoint("time", at_s=round(rng.uniform(0.02, 1.0) * reference_s, 3)))
        else:
            plan.append(KillPoint(kind, nth=rng.randint(1, 3)))
    return tuple(plan)


def draw_spread_plan(
    rng: random.Random, lab: Lab, kinds: list[str], max_kills: int = 2
) -> tuple[KillPoint, ...]:
    """Kill points for a long job, one per kind taken from the front of ``kinds`` (the caller
    rotates them), each drawn over the whole job: a time within the reference run, the nth of
    its events (processed/uploaded, shards written, LFS uploads, commits) up to half what the
    reference counted, so the kill lands anywhere in the job, mid-publish included."""
    plan: list[KillPoint] = []
    for _ in range(rng.randint(1, max_kills)):
        kind = kinds.pop(0)
        kinds.append(kind)
        if kind == "time":
            plan.append(KillPoint("time", at_s=round(rng.uniform(0.05, 0.7) * lab.reference_s, 3)))
        else:
            top = max(1, lab.reference_counts[kind] // 2)
            plan.append(KillPoint(kind, nth=rng.randint(1, top)))
    return tuple(plan)


# -- the world: corpus, bucket, reference ------------------------------------------------


def make_corpus(dest: Path, copies: int) -> list[str]:
    """``dest`` = a benchmark_output with one release of ``copies`` x the v1.1.0 runs."""
    runs = sorted(p for p in (FIXTURE / "runs" / "v1.1.0").iterdir() if p.is_dir())
    index: dict[str, str] = {}
    for i in range(copies):
        for run in runs:
            spec = json.loads((run / "run_spec.json").read_text())
            name = f"{spec['name']},copy={i}"
            target = dest / "runs" / SUITE / name
            shutil.copytree(run, target)
            spec["name"] = name
            (target / "run_spec.json").write_text(json.dumps(spec, indent=2))
            index[name] = SUITE
    (dest / "releases" / RELEASE).mkdir(parents=True)
    (dest / "releases" / RELEASE / "runs_to_run_suites.json").write_text(json.dumps(index))
    return sorted(index)


def hub_env(hub: FakeHub, home: Path) -> dict[str, str]:
    """The environment of a helmproc subprocess that publishes to ``hub``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
        and k != "HF_TOKEN_PATH"
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        SOURCE_DATE_EPOCH=FIXED_EPOCH,
        HF_ENDPOINT=hub.url,
        HF_TOKEN=hub.token,
        HF_HOME=str(home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env


class Lab:
    """The bucket serving the corpus, and the reference (uninterrupted) run's Hub repo."""

    def __init__(
        self,
        root: Path,
        copies: int = 3,
        chunk_size: int = 2,
        workers: int = 2,
        upload_workers: int = 1,
        uniform: tuple[int, int] | None = None,
    ) -> None:
        self.root = root
        self.copies = copies
        self.chunk_size = chunk_size
        self.workers = workers
        self.upload_workers = upload_workers
        # (runs, instances per run): bench/corpus.py's uniform runs instead of fixture copies
        self.uniform = uniform
        self.bucket = BucketServer()
        self.names: list[str] = []
        self.reference_files: dict[str, str] = {}
        self.reference_s = 0.0
        # what the reference run did, by kill-point kind (events, shards, uploads, commits)
        self.reference_counts: Counter[str] = Counter()
        self.n_chunks = 0

    def __enter__(self) -> Lab:
        if self.uniform is None:
            self.names = make_corpus(self.root / "corpus", self.copies)
        else:
            runs, instances = self.uniform
            made = write_corpus(
                self.root / "corpus", uniform_plan(runs, instances), release=RELEASE
            )
            self.names = sorted(run.name for run in made.runs)
        self.bucket.mount(f"{PROJECT}/benchmark_output", self.root / "corpus")
        self.bucket.start()
        try:
            self._reference()
        except BaseException:
            self.bucket.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.bucket.stop()

    def run_args(self) -> list[str]:
        return [
            "run", "--source", self.bucket.base_url, "--benchmark", PROJECT,
            "--release", RELEASE, "--repo-id", REPO, "--chunk-size", str(self.chunk_size),
        ] + self.exec_args()  # fmt: skip

    def exec_args(self) -> list[str]:
        # a fast pace: the Hub's default (100/hour) would hold commits back for minutes
        return [
            "--max-workers", str(self.workers), "--upload-workers", str(self.upload_workers),
            "--commits-per-hour", "36000", "--quiet",
        ]  # fmt: skip

    def _reference(self) -> None:
        work = self.root / "reference"
        work.mkdir()
        hub = FakeHub().start()
        try:
            started = time.monotonic()
            proc = subprocess.run(
                [*HELMPROC, *self.run_args()],
                cwd=work,
                env=hub_env(hub, work / "hf_home"),
                capture_output=True,
                text=True,
                timeout=INVOCATION_TIMEOUT_S,
            )
            self.reference_s = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"reference run failed ({proc.returncode}):\n{proc.stderr}")
            self.reference_files = hub.files(REPO)
            self.reference_counts = event_counts(journal_of(work))
            with Journal.open(journal_of(work), readonly=True) as journal:  # type: ignore[arg-type]
                self.n_chunks = len(journal.plan())
            self.reference_counts["shard-write"] = sum(
                1 for p in self.reference_files if p.endswith(".parquet")
            )
            self.reference_counts["lfs-upload"] = hub.counts["lfs-put"]
            self.reference_counts["commit-sent"] = hub.counts["commit"]
            self.reference_counts["commit-landed"] = hub.counts["commit"]
            for kind in FINAL_KINDS:  # one final commit per job
                self.reference_counts[kind] = 1
        finally:
            hub.stop()


# -- killing -----------------------------------------------------------------------------


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Killer:
    """How an invocation is killed: its whole process group, or (``coordinator_only``) the
    coordinator's pid alone, noting its descendants right before so ``orphans`` can tell
    whether they went by themselves."""

    def __init__(self, coordinator_only: bool = False) -> None:
        self.coordinator_only = coordinator_only
        self.family: list[psutil.Process] = []

    def kill(self, pid: int) -> None:
        if not self.coordinator_only:
            kill_group(pid)
            return
        try:
            self.family = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            self.family = []
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def orphans(self, pgid: int, grace_s: float = ORPHAN_GRACE_S) -> list[str]:
        """Processes of the killed coordinator still alive ``grace_s`` after its death: its
        descendants as they were at the kill, and any process left in its process group."""
        _, alive = psutil.wait_procs([*self.family, *group_members(pgid)], timeout=grace_s)
        left = {p.pid: p for p in alive}
        left.update({p.pid: p for p in group_members(pgid)})  # any the snapshot missed
        found = []
        for proc in left.values():
            try:
                found.append(f"pid {proc.pid} {' '.join(proc.cmdline())[:80]}")
            except psutil.Error:
                continue  # gone since
        return sorted(found)


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _quiet_handle_error(request: object, client_address: object) -> None:
    """Requests cut short by a kill (reset connections, half bodies) are expected here."""
    if not isinstance(sys.exc_info()[1], ConnectionError | ValueError):
        traceback.print_exc()


class HubKiller:
    """Kills the armed invocation from inside the fake Hub, at an exact request.

    Wraps two methods of one ``FakeHub`` instance: ``_faults_for`` (called for every request
    before it is handled: kills on the nth LFS upload or commit and drops that request) and
    ``_apply_commit`` (kills right after the nth client commit was applied).
    """

    def __init__(self, hub: FakeHub) -> None:
        hub.server.handle_error = _quiet_handle_error  # type: ignore[method-assign]
        self.lock = threading.Lock()
        self.point: KillPoint | None = None
        self.pgid = 0
        self.killer = Killer()
        self.seen: Counter[str] = Counter()
        self.fired = threading.Event()
        faults_for = hub._faults_for
        apply_commit = hub._apply_commit

        def faults_hook(route: str, n: int) -> list[Fault]:
            faults = faults_for(route, n)
            if self._hit(route, ("lfs-upload", "commit-sent")):
                faults = [*faults, Fault(route, n, "drop")]
            return faults

        def apply_hook(*args: Any) -> Any:
            final = args[-1] == "client" and args[2] == FINAL_COMMIT_TITLE
            if final and self._hit_final("final-commit-sent"):
                raise ConnectionError("killed as the final commit arrived")  # never applied
            commit = apply_commit(*args)
            if args[-1] == "client":
                self._hit("commit", ("commit-landed",))
            if final:
                self._hit_final("final-commit-landed")
            return commit

        hub._faults_for = faults_hook  # type: ignore[method-assign]
        hub._apply_commit = apply_hook  # type: ignore[method-assign]

    def arm(self, point: KillPoint | None, pgid: int, killer: Killer | None = None) -> None:
        with self.lock:
            self.point = point if point is not None and point.kind in HUB_KINDS else None
            self.pgid = pgid
            self.killer = killer or Killer()
            self.seen.clear()
            self.fired.clear()

    def _hit_final(self, kind: str) -> bool:
        with self.lock:
            if self.point is None or self.point.kind != kind:
                return False
            self.point = None
            self.killer.kill(self.pgid)
            self.fired.set()
            return True

    def _hit(self, route: str, kinds: tuple[str, ...]) -> bool:
        with self.lock:
            point = self.point
            if point is None or point.kind not in kinds or HUB_ROUTE[point.kind] != route:
                return False
            self.seen[point.kind] += 1
            if self.seen[point.kind] < point.nth:
                return False
            self.point = None
            self.killer.kill(self.pgid)
            self.fired.set()
            return True


def journal_of(work: Path) -> Path | None:
    found = sorted(work.glob(".helmproc/jobs/*/journal.sqlite"))
    return found[0] if found else None


def event_counts(journal: Path | None) -> Counter[str]:
    """Events per state, read without a lock (as ``helmproc status`` does); empty if unreadable."""
    if journal is None:
        return Counter()
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return Counter()
    try:
        rows = db.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall()
    except sqlite3.Error:
        return Counter()
    finally:
        db.close()
    return Counter({state: n for state, n in rows})


def temp_shards(work: Path) -> set[str]:
    return {str(p) for p in work.glob(".helmproc/jobs/*/staging/**/*.tmp-*")}


@dataclass
class Invocation:
    command: str
    point: KillPoint | None
    fired: bool
    returncode: int
    seconds: float
    stderr: str
    orphans: list[str] = field(default_factory=list)


def invoke(
    args: list[str],
    work: Path,
    env: dict[str, str],
    point: KillPoint | None,
    hub: HubKiller,
    coordinator_only: bool = False,
    hold_last: int | None = None,
) -> Invocation:
    """Run one helmproc command, killing its process group (or its coordinator alone) when
    ``point`` is reached; after a coordinator-only kill, list the orphans left.

    ``hold_last`` (the job's last chunk id): a timed point holds that chunk at its start until
    the kill (``engine/chunks/hold_points.py``), so the invocation cannot end before its time
    however fast the machine is."""
    killer = Killer(coordinator_only)
    orphans: list[str] = []
    door: Path | None = None
    if hold_last is not None and point is not None and point.kind == "time":
        (work / "hold").mkdir(exist_ok=True)
        door = gate(work / "hold", hold_last)
        door.touch()
        env = dict(env, **{HOLD_ENV: str(work / "hold")})
    err_path = work / f"stderr-{len(list(work.glob('stderr-*')))}.txt"
    journal = journal_of(work)
    base = event_counts(journal)
    seen_temps: set[str] = set()
    started = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [*HELMPROC, *args],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group: the kill takes the whole tree
        )
    hub.arm(point, proc.pid, killer)
    fired = False
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if elapsed > INVOCATION_TIMEOUT_S:
                kill_group(proc.pid)
                proc.wait()
                raise TimeoutError(f"helmproc {args[0]} ran over {INVOCATION_TIMEOUT_S:.0f} s")
            if point is not None and not fired and point.kind not in HUB_KINDS:
                if point.kind == "time":
                    fired = elapsed >= point.at_s
                elif point.kind in JOURNAL_KINDS:
                    journal = journal or journal_of(work)
                    fired = event_counts(journal)[point.kind] - base[point.kind] >= point.nth
                elif point.kind == "shard-write":
                    seen_temps |= temp_shards(work)
                    fired = len(seen_temps) >= point.nth
                if fired:
                    killer.kill(proc.pid)
            time.sleep(POLL_S)
        proc.wait()
        # a kill that came as the process was exiting on its own does not count
        fired = (fired or hub.fired.is_set()) and proc.returncode == -signal.SIGKILL
        if fired and coordinator_only:
            orphans = killer.orphans(proc.pid)
    finally:
        hub.arm(None, 0)
        kill_group(proc.pid)  # leftovers of a group whose leader exited on its own
        if door is not None:
            door.unlink(missing_ok=True)
    return Invocation(
        args[0],
        point,
        fired,
        proc.returncode,
        time.monotonic() - started,
        err_path.read_text(),
        orphans,
    )


# -- one scenario --------------------------------------------------------------------------


@dataclass
class Outcome:
    plan: tuple[KillPoint, ...]
    invocations: list[Invocation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def fired(self) -> list[KillPoint]:
        return [i.point for i in self.invocations if i.fired and i.point is not None]

    @property
    def survived(self) -> bool:
        return not self.problems

    @property
    def orphans(self) -> list[str]:
        return [o for i in self.invocations for o in i.orphans]

    @property
    def duplicates(self) -> list[str]:
        return [p for p in self.problems if p.startswith(DUPLICATE_PREFIXES)]

    def describe(self) -> str:
        steps = ", ".join(
            f"{i.command}" + (f" killed at {i.point.describe()}" if i.fired and i.point else "")
            + ("" if i.fired or i.returncode == 0 else f" -> exit {i.returncode}")
            for i in self.invocations
        )
        return f"[{steps}]"


def run_scenario(
    lab: Lab,
    plan: tuple[KillPoint, ...],
    work: Path,
    hub: FakeHub | None = None,
    coordinator_only: bool = False,
    hold_timed: bool = False,
) -> Outcome:
    """Run the lab's job under ``plan`` until an invocation finishes, then ``check`` it.

    The job publishes to ``hub`` if given (the caller starts and stops it), else to a fake
    Hub of its own. ``coordinator_only``: each kill takes the coordinator alone, and the
    processes it leaves behind are orphans (problems of the outcome). ``hold_timed``: an
    invocation with a timed point cannot finish before it (its last chunk is held until then).
    """
    work.mkdir(parents=True)
    outcome = Outcome(plan)
    own_hub = hub is None
    remote = FakeHub().start() if hub is None else hub
    try:
        killer = HubKiller(remote)
        env = hub_env(remote, work / "hf_home")
        # each invocation is killed at its point or ends: after the last point, one must finish
        for i in range(len(plan) + 1):
            point = plan[i] if i < len(plan) else None
            started = (work / ".helmproc" / "latest").exists()
            args = ["resume", *lab.exec_args()] if started else lab.run_args()
            try:
                hold_last = lab.n_chunks - 1 if hold_timed else None
                inv = invoke(args, work, env, point, killer, coordinator_only, hold_last)
            except TimeoutError as exc:
                outcome.problems.append(str(exc))
                return outcome
            outcome.invocations.append(inv)
            if inv.orphans:
                outcome.problems.append(
                    f"orphans {ORPHAN_GRACE_S:.0f} s after the coordinator was killed at "
                    f"{inv.point.describe() if inv.point else '?'}: {inv.orphans}"
                )
            if inv.fired:
                continue
            if inv.returncode != 0:
                tail = "\n".join(inv.stderr.strip().splitlines()[-8:])
                outcome.problems.append(
                    f"helmproc {inv.command} exited {inv.returncode} without being killed:\n{tail}"
                )
                return outcome
            break  # finished (the last invocation has no kill point)
        outcome.problems.extend(check(lab, remote, work))
    finally:
        if own_hub:
            remote.stop()
    return outcome


# -- the verdict ---------------------------------------------------------------------------


def _legal(states: list[str]) -> bool:
    if not states or states[0] != ChunkState.PLANNED.value:
        return False
    for prev, nxt in zip(states, states[1:], strict=False):
        if ChunkState(nxt) not in LEGAL_TRANSITIONS[ChunkState(prev)]:
            return False
    return states[-1] == ChunkState.CLEANED.value


def check(lab: Lab, hub: FakeHub, work: Path) -> list[str]:
    """Everything that must hold after the job finished; empty when it all does."""
    problems: list[str] = []
    files = hub.files(REPO) if REPO in hub.repos else {}
    ref = lab.reference_files
    missing = sorted(set(ref) - set(files))
    extra = sorted(set(files) - set(ref))
    differ = sorted(p for p in set(ref) & set(files) if ref[p] != files[p])
    for label, paths in (("missing", missing), ("extra", extra), ("different bytes", differ)):
        if paths:
            problems.append(f"destination vs reference: {label}: {paths[:5]}")

    leftovers = [
        str(p.relative_to(work))
        for p in work.glob(".helmproc/jobs/*/*/**/*")
        if p.is_file() and p.relative_to(work).parts[3] in ("staging", "scratch")
    ]
    if leftovers:
        problems.append(f"local staging/scratch not empty: {leftovers[:5]}")

    run_names: Counter[str] = Counter()
    for path in files:
        if path.startswith("runs/") and path.endswith(".parquet"):
            try:
                table = pq.read_table(pa.BufferReader(hub.content(REPO, path)))
            except (pa.ArrowException, OSError) as exc:
                problems.append(f"runs table: {path} does not read: {exc}")
                continue
            run_names.update(table.column("helm_run").to_pylist())
    twice = sorted(n for n, k in run_names.items() if k > 1)
    if twice:
        problems.append(f"duplicate: {len(twice)} runs twice in the runs table: {twice[:3]}")
    if sorted(run_names) != lab.names:
        problems.append(
            f"runs table: {len(run_names)} distinct of {len(lab.names)} runs, "
            f"missing: {sorted(set(lab.names) - set(run_names))[:3]}"
        )

    problems.extend(check_journal(lab, hub, work))
    return problems


def check_journal(lab: Lab, hub: FakeHub, work: Path) -> list[str]:
    """The journal's events against the Hub's history: the same story, told twice."""
    journal_path = journal_of(work)
    if journal_path is None:
        return ["no journal"]
    with Journal.open(journal_path, readonly=True) as journal:
        events = journal.events()
        n_chunks = len(journal.plan())
    problems: list[str] = []
    by_chunk: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        by_chunk.setdefault(event["chunk_id"], []).append(event)
    if sorted(by_chunk) != list(range(n_chunks)):
        problems.append(f"events cover chunks {sorted(by_chunk)}, plan has {n_chunks}")

    commits = {c.oid: c for c in hub.commits(REPO)} if REPO in hub.repos else {}
    outcome_runs: Counter[str] = Counter()
    journaled: set[str] = set()
    for cid, chunk_events in sorted(by_chunk.items()):
        states = [e["state"] for e in chunk_events]
        if not _legal(states):
            problems.append(f"chunk {cid}: illegal history {states}")
            continue
        processed = [e for e in chunk_events if e["state"] == "processed"][-1]["payload"]
        outcome_runs.update(o["run"]["run_name"] for o in processed["outcomes"] if o["ok"])
        for event in (e for e in chunk_events if e["state"] == "uploaded"):
            oid = event["payload"].get("commit_id")
            journaled.add(oid)
            commit = commits.get(oid)
            if commit is None:
                problems.append(f"chunk {cid}: journaled commit {oid} is not on the Hub")
                continue
            for shard in processed["shards"]:
                entry = commit.files.get(shard["path"])
                if entry is None or entry.sha256 != shard["sha256"]:
                    problems.append(f"chunk {cid}: commit {oid[:8]} lacks {shard['path']}")
    if sorted(outcome_runs) != lab.names or max(outcome_runs.values(), default=1) != 1:
        problems.append("journaled run outcomes do not list every run exactly once")

    added: dict[str, list[str]] = {}
    shard_commits: set[str] = set()
    for commit in commits.values():
        for path in commit.added:
            if path.endswith(".parquet"):
                added.setdefault(path, []).append(commit.files[path].sha256)
                if not path.startswith("releases/"):  # releases ride with the final card
                    shard_commits.add(commit.oid)
    for path, shas in sorted(added.items()):
        if len(set(shas)) > 1:
            problems.append(
                f"duplicate: {path} committed with different content {len(shas)} times"
            )
        elif len(shas) > 1:
            problems.append(f"duplicate: {path} committed {len(shas)} times (sent again)")
    if journaled != shard_commits:
        problems.append(
            f"journaled commits {sorted(o[:8] for o in journaled)} != the Hub's commits with "
            f"shards {sorted(o[:8] for o in shard_commits)}"
        )
    return problems


# -- the bench -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=50, help="kill points to fire")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--copies", type=int, default=3, help="copies of the 7 fixture runs")
    parser.add_argument("--runs", type=int, default=0, help="uniform corpus: runs (0: copies)")
    parser.add_argument("--instances", type=int, default=3000, help="uniform: instances per run")
    parser.add_argument("--chunk-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--upload-workers", type=int, default=1)
    parser.add_argument("--max-kills", type=int, default=3, help="most kills in one scenario")
    parser.add_argument(
        "--coordinator-only", action="store_true", help="kill the coordinator alone (OOM-style)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="helmproc-chaos-"))
    fired = survived = failed = 0
    orphans: list[str] = []
    duplicates: list[str] = []
    by_kind: Counter[str] = Counter()
    failures: list[str] = []
    uniform = (args.runs, args.instances) if args.runs else None
    lab_args = (args.copies, args.chunk_size, args.workers, args.upload_workers, uniform)
    try:
        with Lab(tmp, *lab_args) as lab:
            print(
                f"corpus: {len(lab.names)} runs, chunk size {args.chunk_size}, "
                f"{args.workers} workers, {args.upload_workers} upload workers; uninterrupted "
                f"run {lab.reference_s:.2f} s ("
                + ", ".join(f"{k} {lab.reference_counts[k]}" for k in KINDS[1:])
                + ")",
                file=sys.stderr,
            )
            rng = random.Random(args.seed)
            kinds = list(KINDS)
            rng.shuffle(kinds)
            scenario = 0
            while fired < args.points and scenario < 3 * args.points:  # bounded if none fire
                scenario += 1
                if args.coordinator_only:
                    plan = draw_spread_plan(rng, lab, kinds, min(args.max_kills, 2))
                else:
                    plan = draw_plan(rng, lab.reference_s, args.max_kills)
                outcome = run_scenario(
                    lab, plan, tmp / f"s{scenario:03d}", coordinator_only=args.coordinator_only
                )
                n = len(outcome.fired)
                fired += n
                orphans.extend(outcome.orphans)
                duplicates.extend(outcome.duplicates)
                by_kind.update(p.kind for p in outcome.fired)
                if outcome.survived:
                    survived += n
                    if not args.keep:
                        shutil.rmtree(tmp / f"s{scenario:03d}", ignore_errors=True)
                else:
                    failed += 1
                    failures.append(f"scenario {scenario}: {outcome.describe()}")
                    failures.extend(f"  {p}" for p in outcome.problems)
                print(
                    f"scenario {scenario:3d}: {'ok  ' if outcome.survived else 'FAIL'} "
                    f"{outcome.describe()}",
                    file=sys.stderr,
                )
        for line in failures:
            print(line)
        kinds_fired = ", ".join(f"{k} {by_kind[k]}" for k in KINDS if by_kind[k])
        print(f"kill points fired by kind: {kinds_fired}")
        who = "the coordinator alone" if args.coordinator_only else "the process group"
        print(
            f"survived {survived}/{fired} kill points of {who} ({scenario} scenarios, "
            f"{failed} failed; seed {args.seed}); orphans found: {len(orphans)}; "
            f"duplicates found: {len(duplicates)}"
        )
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if survived != fired or failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
