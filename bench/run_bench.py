"""One command: ``helmproc run`` against the floor and the peer, on one generated HELM corpus.

    python bench/run_bench.py            # default sizes: a few minutes on 2 cores
    python bench/run_bench.py --full     # lite's instance counts (1.2M instances, 15 GB)

What runs, side by side in one invocation (``bench/corpus.py`` generates every corpus, once,
cached under ``bench/out/corpus/``; the corpus is served by the test suite's fake GCS bucket,
``tests/bucket_server.py``, on 127.0.0.1):

1. **helmproc**: ``helmproc run --source http://127.0.0.1:PORT/<bucket> --benchmark bench
   --release R --to OUT`` as a subprocess, ``--max-workers`` and ``--memory-budget`` as given.
2. **floor**: the same release index and the same five files per run fetched with plain
   ``requests`` (one session per process) and decoded, nothing converted or written, in a pool
   of the same number of processes, also a subprocess; twice, once decoding with
   ``msgspec.json.decode`` (into plain Python objects, the fastest general decoder here) and
   once with the stdlib ``json`` (what ``bench/http_bench.py`` used); ``--floor-decoders``.
3. **peer**: every-eval-ever 0.3.0's HELM converter (``bench/peer_convert.py``, in a Python
   3.12 venv made on first use) on a sample of the same runs read from local files, and
   helmproc's converter (the pool function ``w_process_chunk``, one process) on that sample
   too: converter throughput per core is instances per CPU second of each.
4. **memory flatness**: ``helmproc run`` over HTTP on 500 and on 5,000 runs (run names mapped
   onto a pool of generated runs of ``--flat-instances`` each, so disk stays small).
5. **cost per instance**: helmproc's converter on runs of 1,000 and of 20,000 instances, CPU
   per instance in steady state (each measured on a second pass over its runs in one process;
   the big run takes the streaming path and spools its rows).

Measured for each process tree (psutil, sampled every 0.1 s): wall time, CPU seconds of every
process, peak RSS summed over the tree (a page shared by several processes counts in each, so
this bounds the budget's USS measure from above), peak disk (destination + staging + scratch
+ journal, or the peer's output + staging), and time to first shard: from process start until
a ``*.parquet`` (the peer: any ``*.json``) appears in the destination. The loopback server
runs in this process and shares the machine's cores with whoever it serves; its CPU is
reported too. The load average of the machine is recorded before and after each. Results
are printed and written to ``bench/out/report.json``; the targets of issue 6 are checked at
the end. Work folders are deleted after each measurement; corpora are kept for the next
invocation (``--clean`` drops them). Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from helmproc.engine.job.budget import dir_bytes

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import corpus  # noqa: E402 - bench/corpus.py
import peer_convert  # noqa: E402 - bench/peer_convert.py
import reader_bench  # noqa: E402 - bench/reader_bench.py

from tests.fakes.bucket_server import BucketServer  # noqa: E402 - tests/bucket_server.py

MAIN_PROJECT = "bench"
GEN_PROJECT = "gen"
FLAT_PROJECT = "flat{n}"
RUN_FILES = corpus.RUN_FILES
SAMPLE_S = 0.1
FIRST_SHARD_POLL_S = 0.02
DISK_EVERY = 5  # samples between two disk walks
TARGETS = {
    "converter_per_core_vs_peer": 40.0,  # at least
    "end_to_end_vs_decode_floor": 1.3,  # at most
    "gen_vs_json_floor": 0.8,  # at most, on the generation-heavy subset
    "reader_vs_jsonl": 10.0,  # at least, each query, same engine
    "flatness": 1.15,  # at most
    "cost_per_instance": 1.3,  # at most
    "first_shard_s": 5.0,  # at most
}


# --- measuring a process tree -----------------------------------------------------------------


@dataclass
class Measured:
    label: str
    wall_s: float
    cpu_s: float
    peak_rss: int
    peak_disk: int | None
    first_output_s: float | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    root_cpu_s: float = 0.0  # the process started (helmproc: the coordinator)
    bench_cpu_s: float = 0.0  # this process meanwhile: the loopback server and the sampler
    stdout: str = field(default="", repr=False)


def _first_file(root: Path, suffix: str) -> bool:
    for _folder, _dirs, files in os.walk(root, onerror=lambda _err: None):
        if any(f.endswith(suffix) and ".tmp-" not in f for f in files):
            return True
    return False


class TreeWatch(threading.Thread):
    """Samples a process and its descendants: summed RSS, per-process CPU, disk, first output."""

    def __init__(
        self,
        pid: int,
        started: float,
        disk_dirs: Sequence[Path],
        output_dir: Path | None,
        output_suffix: str,
    ) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.started = started
        self.disk_dirs = list(disk_dirs)
        self.output_dir = output_dir
        self.output_suffix = output_suffix
        self.peak_rss = 0
        self.peak_disk = 0
        self.first_output_s: float | None = None
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()

    def _sample_tree(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            self.cpu[proc.pid] = max(self.cpu.get(proc.pid, 0.0), times.user + times.system)
        self.peak_rss = max(self.peak_rss, rss)

    def run(self) -> None:
        tick = 0
        next_sample = 0.0
        while not self._halt.is_set():
            now = time.perf_counter()
            if self.first_output_s is None and self.output_dir is not None:
                if _first_file(self.output_dir, self.output_suffix):
                    self.first_output_s = now - self.started
            if now >= next_sample:
                self._sample_tree()
                if tick % DISK_EVERY == 0 and self.disk_dirs:
                    self.sample_disk()
                tick += 1
                next_sample = now + SAMPLE_S
            self._halt.wait(FIRST_SHARD_POLL_S if self.first_output_s is None else SAMPLE_S)

    def sample_disk(self) -> None:
        self.peak_disk = max(self.peak_disk, sum(dir_bytes(d) for d in self.disk_dirs))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def measure(
    label: str,
    command: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    disk_dirs: Sequence[Path] = (),
    output_dir: Path | None = None,
    output_suffix: str = ".parquet",
) -> Measured:
    """Run ``command`` to completion while sampling its process tree."""
    load_before = os.getloadavg()
    bench_cpu = time.process_time()
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watch = TreeWatch(proc.pid, started, disk_dirs, output_dir, output_suffix)
    watch.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    watch.stop()
    if watch.disk_dirs:
        watch.sample_disk()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    result = Measured(
        label=label,
        wall_s=wall,
        cpu_s=sum(watch.cpu.values()),
        peak_rss=watch.peak_rss,
        peak_disk=watch.peak_disk if disk_dirs else None,
        first_output_s=watch.first_output_s,
        load_before=load_before,
        load_after=os.getloadavg(),
        root_cpu_s=watch.cpu.get(proc.pid, 0.0),
        bench_cpu_s=time.process_time() - bench_cpu,
        stdout=stdout,
    )
    say(
        f"  {label}: {wall:.1f} s wall, {result.cpu_s:.1f} s CPU, peak RSS "
        f"{mib(result.peak_rss)}, load {load_before[0]:.1f} -> {result.load_after[0]:.1f}"
    )
    return result


# --- the three contenders ---------------------------------------------------------------------


def helmproc_command(base_url: str, project: str, release: str, out: Path, args: Any) -> list[str]:
    command = [
        sys.executable, "-m", "helmproc.cli", "run",
        "--source", base_url, "--benchmark", project, "--release", release,
        "--to", str(out), "--max-workers", str(args.workers),
        "--memory-budget", args.memory_budget, "--quiet", "--json",
    ]  # fmt: skip
    if args.chunk_size:
        command += ["--chunk-size", str(args.chunk_size)]
    return command


def run_helmproc(
    label: str, base_url: str, project: str, release: str, args: Any, keep: Path | None = None
) -> Measured:
    """``helmproc run`` into a fresh folder; its dataset is moved to ``keep`` if given."""
    work = OUT / "work" / label.replace(" ", "-").replace("(", "").replace(")", "")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out = work / "dataset"
    measured = measure(
        label,
        helmproc_command(base_url, project, release, out, args),
        cwd=work,
        disk_dirs=(out, work / ".helmproc"),
        output_dir=out,
    )
    status = json.loads(measured.stdout)
    if not status.get("done") or status["runs"].get("failed"):
        raise SystemExit(f"{label}: helmproc did not convert every run: {status['runs']}")
    if keep is not None:
        shutil.rmtree(keep, ignore_errors=True)
        keep.parent.mkdir(parents=True, exist_ok=True)
        out.rename(keep)
    shutil.rmtree(work, ignore_errors=True)
    return measured


def _floor_chunk(job: tuple[dict[str, Any], tuple[Any, ...], str, str]) -> tuple[int, int]:
    """One chunk of a floor: fetch its runs exactly as a helmproc worker does (the job's source,
    the same prefetching and crc32c checks, files written to scratch), then decode them as
    ``mode`` says; nothing is built or written. (runs, bytes fetched)."""
    config, refs, scratch_root, mode = job
    from helmproc.engine.chunks.worker import run_input_bytes
    from helmproc.engine.sources.prefetch import Prefetcher
    from helmproc.engine.sources.registry import source_from_config

    source = source_from_config(config)
    scratch = Path(scratch_root) / f"floor-{os.getpid()}"
    n_bytes = 0
    prefetch = Prefetcher(source, refs, scratch)
    try:
        for ref in refs:
            run_dir = prefetch.take(ref)
            n_bytes += run_input_bytes(run_dir)
            if mode == "decode":
                typed_decode(run_dir)
            elif mode == "json":
                for file in RUN_FILES:
                    json.loads((run_dir / file).read_bytes())
    finally:
        prefetch.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return len(refs), n_bytes


def typed_decode(run_dir: Path) -> None:
    """Decode exactly what helmproc's converter decodes, with its typed msgspec decoders and
    its choice per file between decoding whole and streaming element by element."""
    from helmproc.engine.convert.converter import STREAM_THRESHOLD_BYTES
    from helmproc.engine.helm import file_names as fn
    from helmproc.engine.helm import run_files as rf
    from helmproc.engine.helm.array_stream import iter_array_elements

    rf.load_json(run_dir / fn.RUN_SPEC_FILE, rf.RunSpec)
    rf.load_json(run_dir / fn.SCENARIO_FILE, rf.Scenario)
    rf.load_json(run_dir / fn.STATS_FILE, list[rf.Stat])
    big: list[tuple[str, Any, Any, str | None]] = [
        (fn.PER_INSTANCE_STATS_FILE, list[rf.PerInstanceStats], rf.PerInstanceStats, None),
        (fn.SCENARIO_STATE_FILE, rf.ScenarioState, rf.RequestState, "request_states"),
    ]
    for file, whole, element, key in big:
        path = run_dir / file
        if path.stat().st_size <= STREAM_THRESHOLD_BYTES:
            rf.load_json(path, whole)
            continue
        for _offset, data in iter_array_elements(path, key):
            rf.decode_json(data, element, file)


def floor_child(base_url: str, project: str, release: str, workers: int, mode: str) -> None:
    from helmproc.engine.job.plan import plan_chunks
    from helmproc.engine.job.start import DEFAULT_CHUNK_SIZE
    from helmproc.engine.sources.bucket import HttpSource

    source = HttpSource(base_url, project=project, release=release)
    chunks = plan_chunks(source.discover(), DEFAULT_CHUNK_SIZE)
    scratch = OUT / "work" / f"floor-{mode}"
    jobs = [(source.config, chunk.runs, str(scratch), mode) for chunk in chunks]
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        done = list(pool.imap_unordered(_floor_chunk, jobs, chunksize=1))
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"n_runs": sum(d[0] for d in done), "n_bytes": sum(d[1] for d in done)}))


def run_floor(base_url: str, project: str, release: str, n_runs: int, mode: str, args: Any
              ) -> Measured:
    command = [
        sys.executable, __file__, "_floor", base_url, project, release, str(args.workers), mode,
    ]  # fmt: skip
    measured = measure(f"{mode} floor ({project})", command, cwd=OUT)
    if json.loads(measured.stdout)["n_runs"] != n_runs:
        raise SystemExit(f"{mode} floor fetched {measured.stdout}, expected {n_runs} runs")
    return measured


def convert_child(root: str, work: str, passes: int) -> None:
    """helmproc's pool function on every run under ``root`` in this one process, ``passes``
    times; the last pass is measured (earlier ones warm the process up)."""
    import resource

    from helmproc.engine.chunks.worker import ChunkSpec, w_process_chunk
    from helmproc.engine.sources.folder import DirSource

    def spec(source: DirSource, chunk_id: int, runs: Sequence[Any]) -> ChunkSpec:
        return ChunkSpec(
            job_id="bench",
            chunk_id=chunk_id,
            runs=tuple(runs),
            source_config=source.config,
            staging_root=str(Path(work) / "staging"),
            scratch_root=str(Path(work) / "scratch"),
            job_timestamp="1800000000",
        )

    warm = DirSource(corpus.FIXTURE_RUN.parent, project="warm-up")
    w_process_chunk(spec(warm, 999_999, warm.discover()[:1]))  # imports, first-call setup
    source = DirSource(root, project="bench")
    refs = source.discover()
    for chunk_id in range(1, passes):
        w_process_chunk(spec(source, chunk_id, refs))
        shutil.rmtree(Path(work) / "staging", ignore_errors=True)
    cpu = time.process_time()
    wall = time.perf_counter()
    result = w_process_chunk(spec(source, 0, refs))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    failed = [o.error for o in result.outcomes if not o.ok]
    print(
        json.dumps(
            {
                "n_runs": len(refs),
                "n_failed": len(failed),
                "failures": failed[:3],
                "n_instances": sum(o.n_instances for o in result.outcomes),
                "n_rows": sum(o.n_rows for o in result.outcomes),
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


def run_converter(label: str, root: Path, passes: int = 1) -> dict[str, Any]:
    work = OUT / "work" / label.replace(" ", "-")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    command = [sys.executable, __file__, "_convert", str(root), str(work), str(passes)]
    measured = measure(label, command, cwd=OUT)
    shutil.rmtree(work, ignore_errors=True)
    report = json.loads(measured.stdout)
    if report["n_failed"]:
        raise SystemExit(f"{label}: runs failed: {report['failures']}")
    report["load_before"] = measured.load_before
    report["load_after"] = measured.load_after
    return report


def run_peer(runs_dir: Path, n_runs: int) -> tuple[Measured, dict[str, Any]]:
    python = peer_convert.setup()
    work = OUT / "work" / "peer"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tmp").mkdir(parents=True)
    command = [
        str(python), str(BENCH / "peer_convert.py"),
        "--log-dir", str(runs_dir), "--out", str(work / "out"),
    ]  # fmt: skip
    env = dict(os.environ, TMPDIR=str(work / "tmp"))
    measured = measure(
        "peer (EEE 0.3.0)",
        command,
        cwd=work,
        env=env,
        disk_dirs=(work,),
        output_dir=work / "out",
        output_suffix=".json",
    )
    report = json.loads(measured.stdout.strip().splitlines()[-1])
    if report["n_converted"] != n_runs or report["error"]:
        raise SystemExit(f"peer converted {report['n_converted']}/{n_runs}: {report['error']}")
    shutil.rmtree(work, ignore_errors=True)
    return measured, report


# --- corpora ----------------------------------------------------------------------------------


def cached_corpus(name: str, plans: list[corpus.RunPlan], processes: int) -> corpus.Corpus:
    """The corpus of ``plans`` under ``bench/out/corpus/<name>``, generated unless cached."""
    root = OUT / "corpus" / name
    key = hashlib.sha256(
        json.dumps([asdict(p) for p in plans]).encode()
        + (corpus.FIXTURE_RUN / "per_instance_stats.json").read_bytes()
        + Path(corpus.__file__).read_bytes()
    ).hexdigest()
    marker = root / "corpus.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved["key"] == key:
            runs = tuple(corpus.GeneratedRun(**r) for r in saved["runs"])
            return corpus.Corpus(root, saved["release"], runs)
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    made = corpus.write_corpus(root, plans, processes=processes)
    say(
        f"generated {name}: {len(made.runs)} runs, {made.n_instances:,} instances, "
        f"{made.n_bytes / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s"
    )
    marker.write_text(
        json.dumps({"key": key, "release": made.release, "runs": [asdict(r) for r in made.runs]})
    )
    return made


def serve_aliases(
    server: BucketServer, project: str, pool: corpus.Corpus, n_runs: int, release: str
) -> None:
    """Publish ``n_runs`` run names in ``project``, each backed by a run of ``pool``."""
    base = f"{project}/benchmark_output"
    index = {}
    for i in range(n_runs):
        run = pool.runs[i % len(pool.runs)]
        name = f"mmlu:subject=flat_{i:05d},method=multiple_choice_joint,model=bench_model-{i % 91}"
        index[name] = run.suite
        for file in RUN_FILES:
            server.objects[f"{base}/runs/{run.suite}/{name}/{file}"] = pool.run_dir(run) / file
    index_path = OUT / "work" / f"{project}-runs_to_run_suites.json"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps(index))
    server.objects[f"{base}/releases/{release}/runs_to_run_suites.json"] = index_path


def peer_sample(main: corpus.Corpus, min_instances: int) -> list[corpus.GeneratedRun]:
    """Runs spread over the whole corpus (every kind of its mix, not the big run: the peer
    holds a whole file in memory), deterministic."""
    runs = [r for r in main.runs if "model-big" not in r.name]
    n = len(runs)
    stride = next(s for s in (11, 13, 17, 19, 23, 29, 31) if math.gcd(s, n) == 1 or n == 1)
    picked: list[corpus.GeneratedRun] = []
    total = 0
    for i in range(n):
        run = runs[(i * stride) % n]
        picked.append(run)
        total += run.n_instances
        if total >= min_instances:
            break
    return picked


def link_runs(corpus_: corpus.Corpus, runs: Sequence[corpus.GeneratedRun], folder: Path) -> Path:
    """A folder of ``runs`` (a bare folder of run directories, as the peer reads), their files
    hard-linked: no copy, and no symlink (local sources do not follow links out of the root)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for run in runs:
        (folder / run.name).mkdir()
        for file in corpus_.run_dir(run).iterdir():
            os.link(file, folder / run.name / file.name)
    return folder


# --- reporting --------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mib(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def row(m: Measured, n_runs: int, n_instances: int) -> str:
    first = f"{m.first_output_s:.2f} s" if m.first_output_s is not None else "-"
    return (
        f"{m.label:<24} {m.wall_s:8.1f} {n_runs / m.wall_s * 60:9.0f} {n_instances / m.wall_s:9.0f}"
        f" {m.cpu_s:8.1f} {first:>11} {mib(m.peak_rss):>10} {mib(m.peak_disk):>10}"
        f"   {m.load_before[0]:.1f}->{m.load_after[0]:.1f}"
    )


HEADER = (
    f"{'':<24} {'wall s':>8} {'runs/min':>9} {'inst/s':>9} {'CPU s':>8} {'first shard':>11} "
    f"{'peak RSS':>10} {'peak disk':>10}   load"
)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def machine() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    python = platform.python_version()
    return f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GiB RAM, Python {python}"


# --- the benchmark ----------------------------------------------------------------------------


PARTS = ("main", "reader", "flat", "peer", "cost")


def main_bench(args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        raise SystemExit(f"--parts takes a comma list of {', '.join(PARTS)}")
    say(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    big_mb = 0.0 if args.no_big else args.big_mb
    main = cached_corpus(
        f"{args.profile}-{args.models}m-x{args.scale:g}-big{big_mb:g}",
        corpus.profile_plan(args.profile, args.models, args.scale, args.seed, big_mb=big_mb),
        args.processes,
    )
    n_runs, n_instances = len(main.runs), main.n_instances
    gen_runs = [r for r in main.runs if r.kind in GENERATION_KINDS and "model-big" not in r.name]
    gen_bytes = sum(r.n_bytes for r in gen_runs)
    lines = [
        f"machine: {machine()}",
        f"command: {' '.join(sys.argv)}",
        f"corpus: profile {args.profile}, {args.models} models, instances x{args.scale:g} of"
        f" HELM's, {n_runs:,} runs, {n_instances:,} instances, {main.n_bytes / 1e9:.2f} GB"
        f" ({corpus.describe(main)}); served on 127.0.0.1 by the bench process;"
        f" {args.workers} processes, --memory-budget {args.memory_budget}",
        f"generation-heavy subset (project gen: cot, translate, passage, summarize runs without"
        f" the big run): {len(gen_runs)} runs, {gen_bytes / 1e6:,.0f} MB",
    ]
    report: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "corpus": {"profile": args.profile, "models": args.models, "runs": n_runs,
                   "instances": n_instances, "bytes": main.n_bytes, "mix": corpus.describe(main),
                   "gen_runs": len(gen_runs), "gen_bytes": gen_bytes},
        "instance_scale": args.scale,
        "workers": args.workers,
        "memory_budget": args.memory_budget,
        "targets": TARGETS,
    }  # fmt: skip
    ratios: dict[str, float] = {}
    verdicts: list[str] = []
    budget = _parse_size(args.memory_budget)
    peaks: list[tuple[str, int]] = []
    table: list[str] = []
    dataset = OUT / "work" / "dataset"

    if parts & {"main", "flat"}:
        flat_pool = cached_corpus(
            f"flat-pool-{args.flat_pool}x{args.flat_instances}",
            corpus.uniform_plan(args.flat_pool, args.flat_instances, seed=args.seed + 3),
            args.processes,
        )
        flat_counts = (args.flat_small, args.flat_large)
        with BucketServer() as server:
            server.mount(f"{MAIN_PROJECT}/benchmark_output", main.root)
            serve_subset(server, GEN_PROJECT, main, gen_runs, main.release)
            for n in flat_counts:
                serve_aliases(server, FLAT_PROJECT.format(n=n), flat_pool, n, main.release)
            # GCS stores each object's hashes; the fake computes them on first use, which
            # would charge whichever contender runs first. So all of them now, unmeasured.
            hashing = time.perf_counter()
            n_objects = server.warm_hashes()
            say(f"x-goog-hash of {n_objects:,} objects in {time.perf_counter() - hashing:.0f} s"
                " (before measuring)")
            url = server.base_url
            if "main" in parts:
                rounds = run_rounds(url, main, gen_runs, dataset, args, parts)
                helm = median_run(rounds["helmproc"])
                peaks.append(("main", max(m.peak_rss for m in rounds["helmproc"])))
                for key in ("helmproc", "transport", "decode", "helmproc gen", "json gen"):
                    if rounds.get(key):
                        m = median_run(rounds[key])
                        is_gen = key.endswith("gen")
                        table.append(row(m, len(gen_runs) if is_gen else n_runs,
                                         sum(r.n_instances for r in gen_runs) if is_gen
                                         else n_instances))  # fmt: skip
                verdicts += ratio_verdicts(rounds, ratios)
                first = helm.first_output_s if helm.first_output_s is not None else math.inf
                ratios["first_shard_s"] = first
                verdicts.append(
                    f"  first shard          {first:.2f} s on {n_runs:,} runs (median round)"
                )
                report.update(rounds={k: [as_json(m) for m in v] for k, v in rounds.items()})
            if "flat" in parts:
                flats = {
                    n: run_helmproc(
                        f"helmproc {n} runs", url, FLAT_PROJECT.format(n=n), main.release, args
                    )
                    for n in flat_counts
                }
                small_peak, large_peak = (flats[n].peak_rss for n in flat_counts)
                flat_ratio = large_peak / small_peak
                ratios["flatness"] = flat_ratio
                peaks += [(f"{n} runs", m.peak_rss) for n, m in flats.items()]
                verdicts.append(
                    f"  flatness             {flat_counts[0]} runs {mib(small_peak)},"
                    f" {flat_counts[1]} runs {mib(large_peak)}: {flat_ratio:.2f}x"
                    f" (target <= 1.15x): {verdict(flat_ratio <= 1.15)}"
                )
                for n, m in flats.items():
                    table.append(row(m, n, n * args.flat_instances))
                report["flatness"] = {str(n): as_json(m) for n, m in flats.items()}
    if peaks:
        worst = max(p for _, p in peaks)
        verdicts.append(
            f"  peak memory          {', '.join(f'{mib(p)} ({label})' for label, p in peaks)}"
            f" vs --memory-budget {mib(budget)}: {verdict(worst <= budget)}"
        )
        ratios["peak_rss_max"] = worst

    if "reader" in parts and dataset.is_dir():
        say("reader: export-eee, then DuckDB and Polars on both")
        reader = reader_bench.bench(dataset, OUT / "work" / "export", args.reader_repeat)
        report["reader"] = reader
        verdicts += reader_bench.summary(reader)
        worst = min(e["speedup"] for e in reader["queries"].values())
        ratios["reader_vs_jsonl_min"] = worst
        goal = TARGETS["reader_vs_jsonl"]
        verdicts.append(f"  reader               slowest speedup over the same engine on JSONL:"
                        f" {worst:.1f}x (target >= {goal:g}x): {verdict(worst >= goal)}")
        shutil.rmtree(OUT / "work" / "export", ignore_errors=True)

    if "peer" in parts:
        sample = peer_sample(main, args.peer_instances)
        sample_instances = sum(r.n_instances for r in sample)
        sample_dir = link_runs(main, sample, OUT / "work" / "peer-runs")
        peer, peer_report = run_peer(sample_dir, len(sample))
        ours = run_converter("helmproc converter (sample)", sample_dir)
        table.append(row(peer, len(sample), sample_instances))
        peer_rate = sample_instances / peer_report["cpu_s"]
        our_rate = ours["n_instances"] / ours["cpu_s"]
        per_core = our_rate / peer_rate
        ratios["converter_per_core_vs_peer"] = per_core
        same = "same" if ours["n_rows"] == peer_report["n_rows"] else "DIFFERENT"
        verdicts += [
            f"  converter per core   helmproc {our_rate:,.0f} inst/CPU-s vs peer {peer_rate:,.0f}"
            f" on the same {len(sample)} runs ({sample_instances:,} instances, local files):"
            f" {per_core:.1f}x (target >= 40x): {verdict(per_core >= 40)}",
            f"                       rows written: helmproc {ours['n_rows']:,}, peer"
            f" {peer_report['n_rows']:,} ({same}); peer imports {peer_report['import_s']:.1f} s"
            " (in its wall time, not in its CPU figure)",
        ]
        report.update(peer=as_json(peer) | {"report": peer_report}, helmproc_converter=ours)

    if "cost" in parts:
        small = cached_corpus(
            f"cost-{args.cost_runs}x{args.cost_small}",
            corpus.uniform_plan(args.cost_runs, args.cost_small, seed=args.seed + 1),
            args.processes,
        )
        large = cached_corpus(
            f"cost-1x{args.cost_large}",
            corpus.uniform_plan(1, args.cost_large, seed=args.seed + 2),
            args.processes,
        )
        # Warm (a first pass over the same runs untimed): cost per instance in steady state.
        cost_small = run_converter(f"converter {args.cost_small}/run", small.root, passes=2)
        cost_large = run_converter(f"converter {args.cost_large}/run", large.root, passes=2)
        per_small = cost_small["cpu_s"] / cost_small["n_instances"]
        per_large = cost_large["cpu_s"] / cost_large["n_instances"]
        cost_ratio = per_large / per_small
        ratios["cost_per_instance"] = cost_ratio
        verdicts.append(
            f"  cost per instance    {per_small * 1e6:.0f} us at {args.cost_small:,}/run,"
            f" {per_large * 1e6:.0f} us at {args.cost_large:,}/run (converter, CPU, warm):"
            f" {cost_ratio:.2f}x (target <= 1.3x): {verdict(cost_ratio <= 1.3)}"
        )
        report["cost"] = {"small": cost_small, "large": cost_large}

    if table:
        lines += ["", HEADER, *table]
    lines += ["", "targets (ratios from this invocation):", *verdicts]
    print("\n".join(lines))
    report["ratios"] = ratios
    (OUT / "report.json").write_text(json.dumps(report, indent=2, default=str))
    shutil.rmtree(OUT / "work", ignore_errors=True)
    if args.clean:
        shutil.rmtree(OUT / "corpus", ignore_errors=True)


GENERATION_KINDS = frozenset({"cot", "translate", "passage", "summarize"})
ROUND_KEYS = ("helmproc", "transport", "decode", "helmproc gen", "json gen")
# (label, numerator, denominator, target: at most)
RATIOS = (
    ("vs transport floor", "helmproc", "transport", None),
    ("vs decode floor", "helmproc", "decode", TARGETS["end_to_end_vs_decode_floor"]),
    ("gen vs json floor", "helmproc gen", "json gen", TARGETS["gen_vs_json_floor"]),
)


def run_rounds(
    url: str,
    main: corpus.Corpus,
    gen_runs: Sequence[corpus.GeneratedRun],
    dataset: Path,
    args: Any,
    parts: set[str],
) -> dict[str, list[Measured]]:
    """``--repeat`` interleaved rounds: helmproc, its two floors, and on the generation-heavy
    subset helmproc and the ``json`` floor; the last round's dataset is kept for the readers."""
    rounds: dict[str, list[Measured]] = {key: [] for key in ROUND_KEYS}
    release = main.release
    for r in range(args.repeat):
        say(f"round {r + 1}/{args.repeat}")
        keep = dataset if "reader" in parts and r == args.repeat - 1 else None
        rounds["helmproc"].append(
            run_helmproc("helmproc", url, MAIN_PROJECT, release, args, keep=keep)
        )
        for mode in ("transport", "decode"):
            rounds[mode].append(run_floor(url, MAIN_PROJECT, release, len(main.runs), mode, args))
        if gen_runs and not args.no_gen:
            rounds["helmproc gen"].append(
                run_helmproc("helmproc gen", url, GEN_PROJECT, release, args)
            )
            rounds["json gen"].append(
                run_floor(url, GEN_PROJECT, release, len(gen_runs), "json", args)
            )
    return rounds


def ratio_verdicts(rounds: dict[str, list[Measured]], ratios: dict[str, float]) -> list[str]:
    """Median of per-round ratios, wall and CPU, each round's ratio listed."""
    lines = []
    for label, num, den, target in RATIOS:
        if not rounds.get(num) or not rounds.get(den):
            continue
        for what, attr in (("wall", "wall_s"), ("CPU", "cpu_s")):
            per = [
                getattr(a, attr) / getattr(b, attr)
                for a, b in zip(rounds[num], rounds[den], strict=True)
            ]
            median = statistics.median(per)
            ratios[f"{num} / {den} ({what})"] = median
            listed = ", ".join(f"{x:.2f}" for x in per)
            goal = "" if target is None else (
                f" (target <= {target}x): {verdict(median <= target)}")
            lines.append(f"  {label:<20} {what:>4}: {median:.2f}x, median of rounds"
                         f" {listed}{goal}")  # fmt: skip
    loads = ", ".join(f"{m.load_before[0]:.1f}" for m in rounds["helmproc"])
    lines.append(f"                       load average (1 min) before each helmproc round: {loads}")
    return lines


def serve_subset(
    server: BucketServer,
    project: str,
    main: corpus.Corpus,
    runs: Sequence[corpus.GeneratedRun],
    release: str,
) -> None:
    """Publish ``runs`` of ``main`` (same names, same files) as their own project."""
    base = f"{project}/benchmark_output"
    for run in runs:
        for file in RUN_FILES:
            server.objects[f"{base}/runs/{run.suite}/{run.name}/{file}"] = main.run_dir(run) / file
    index_path = OUT / "work" / f"{project}-runs_to_run_suites.json"
    index_path.parent.mkdir(parents=True, exist_ok=True)
    index_path.write_text(json.dumps({run.name: run.suite for run in runs}))
    server.objects[f"{base}/releases/{release}/runs_to_run_suites.json"] = index_path


def median_run(runs: list[Measured]) -> Measured:
    """The round with the median wall time (the first of two middles)."""
    ordered = sorted(runs, key=lambda m: m.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def as_json(m: Measured) -> dict[str, Any]:
    return asdict(m) | {"stdout": None}


def _parse_size(text: str) -> int:
    from helmproc.cli.option_checks import parse_size

    return parse_size(text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_floor"]:
        base_url, project, release, workers, decoder = argv[1:6]
        floor_child(base_url, project, release, int(workers), decoder)
        return
    if argv[:1] == ["_convert"]:
        convert_child(argv[1], argv[2], int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(corpus.PROFILES), default="lite")
    parser.add_argument("--models", type=int, default=8, help="models in the corpus")
    parser.add_argument("--scale", type=float, default=0.5, help="instances x HELM's")
    parser.add_argument("--big-mb", type=float, default=1100, help="the one big run's states")
    parser.add_argument("--no-big", action="store_true", help="leave the big run out")
    parser.add_argument("--no-gen", action="store_true", help="skip the gen-vs-json rounds")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--memory-budget", default="2G", help="helmproc --memory-budget")
    parser.add_argument("--chunk-size", type=int, default=0, help="helmproc --chunk-size")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of helmproc and floor")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"what to measure (of {','.join(PARTS)})"
    )
    parser.add_argument("--reader-repeat", type=int, default=3, help="runs of each query")
    parser.add_argument("--peer-instances", type=int, default=10_000, help="peer sample size")
    parser.add_argument("--flat-small", type=int, default=500)
    parser.add_argument("--flat-large", type=int, default=5000)
    parser.add_argument("--flat-instances", type=int, default=100)
    parser.add_argument("--flat-pool", type=int, default=50, help="distinct runs behind them")
    parser.add_argument("--cost-small", type=int, default=1000)
    parser.add_argument("--cost-runs", type=int, default=4, help="runs at --cost-small")
    parser.add_argument("--cost-large", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2, help="for corpus generation")
    parser.add_argument("--clean", action="store_true", help="delete the corpora at the end")
    main_bench(parser.parse_args(argv))


if __name__ == "__main__":
    main()
