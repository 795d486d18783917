"""Converter benchmark: peak memory and speed of one worker converting one huge HELM run.

    python bench/convert_bench.py                      # 1 GiB scenario_state.json
    python bench/convert_bench.py --size-mb 256 --keep # smaller; keep the generated run

What it does:

1. Generates a run from the real fixture ``v1.1.0/simple_mcqa:model=simple_model1`` (joint
   multiple choice): its request states and per-instance entries are repeated under new
   instance ids until ``scenario_state.json`` reaches ``--size-mb``. Each copy gets a few-shot
   sized prompt and pre-v0.5 style completions (per-token ``top_logprobs``), which is what
   made real files reach GBs; core scores vary per copy. Files are written element by element
   in HELM's own layout (``json.dumps(indent=2)``), never held in memory whole.
2. Converts it in a fresh subprocess through the real pool function (``w_process_chunk`` on a
   ``DirSource``: fetch, convert, spool, write the Parquet shards), and reports the child's
   peak RSS (``ru_maxrss``), wall time and rows/s (one process: one core).
3. Converts a run below the streaming threshold the same way, for the fast path's rows/s.

``--compare-parsers`` instead times ways to cut ``request_states`` out of a generated file
and decode them: ``helm_stream`` on HELM's indented layout and on compact JSON (its fallback),
msgspec on the whole file, and ijson's C backend when ijson happens to be installed (it is
not a dependency; ``helm_stream``'s docstring records the outcome).

The report is printed as JSON on stdout. Nothing outside ``--work`` is touched.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_RUN = ROOT / "tests/data/benchmark_output/runs/v1.1.0/simple_mcqa:model=simple_model1"
CORE_PREFIXES = ("exact_match", "quasi_exact_match", "prefix_exact_match", "quasi_prefix")


# --- generating a large run -------------------------------------------------------------------


def _indented(value: Any, indent: int | None, depth: int) -> str:
    """``value`` as ``json.dumps(indent=indent)`` would write it ``depth`` levels down."""
    text = json.dumps(value, indent=indent)
    if indent is None:
        return text
    pad = " " * (indent * depth)
    return pad + text.replace("\n", "\n" + pad)


class _ArrayWriter:
    """Writes the elements of one JSON array, laid out as json.dumps(indent=...) would."""

    def __init__(self, out: TextIO, indent: int | None, depth: int) -> None:
        self.out = out
        self.indent = indent
        self.depth = depth
        self.n_items = 0
        self.n_chars = 0

    def write(self, item: Any) -> None:
        text = _indented(item, self.indent, self.depth)
        if self.n_items:
            text = (",\n" if self.indent is not None else ", ") + text
        self.out.write(text)
        self.n_items += 1
        self.n_chars += len(text)


def _copy_state(
    state: dict[str, Any], copy: int, prompt_repeat: int, n_tokens: int, top_k: int
) -> Any:
    item = json.loads(json.dumps(state))
    item["instance"]["id"] = f"{state['instance']['id']}-{copy}"
    item["request"]["prompt"] = "\n\n".join([state["request"]["prompt"]] * prompt_repeat)
    for completion in item["result"]["completions"]:
        completion["tokens"] = [
            {
                "text": f" tok{t}",
                "logprob": -0.25 * t,
                "top_logprobs": {f" alt{k}": -0.5 * k - t for k in range(top_k)},
            }
            for t in range(n_tokens)
        ]
    return item


def _copy_entry(entry: dict[str, Any], copy: int, n: int) -> Any:
    item = json.loads(json.dumps(entry))
    item["instance_id"] = f"{entry['instance_id']}-{copy}"
    score = float((n + copy) % 3) / 2
    for stat in item["stats"]:
        if stat["name"]["name"].startswith(CORE_PREFIXES) and stat["count"]:
            stat.update(sum=score, mean=score, min=score, max=score)
    return item


def write_large_run(
    target: Path,
    scenario_state_bytes: int,
    *,
    source: Path = FIXTURE_RUN,
    indent: int | None = 2,
    prompt_repeat: int = 6,
    n_tokens: int = 40,
    top_k: int = 10,
) -> Path:
    """Write a run of ``source``'s instances copied under new ids (whole copies) until its
    ``scenario_state.json`` holds at least ``scenario_state_bytes``; returns the run dir."""
    target.mkdir(parents=True, exist_ok=True)
    spec = json.loads((source / "run_spec.json").read_text())
    spec["name"] = f"{spec['name']},bench=large"
    (target / "run_spec.json").write_text(json.dumps(spec, indent=indent))
    for name in ("scenario.json", "stats.json"):
        shutil.copyfile(source / name, target / name)
    state = json.loads((source / "scenario_state.json").read_text())
    entries = json.loads((source / "per_instance_stats.json").read_text())
    n_copies = 0
    with open(target / "scenario_state.json", "w") as out:
        head = json.dumps({"adapter_spec": state["adapter_spec"]}, indent=indent)
        if indent is not None:
            out.write(head[: head.rfind("}")].rstrip() + ',\n  "request_states": [\n')
        else:
            out.write(head[:-1] + ', "request_states": [')
        writer = _ArrayWriter(out, indent, 2)
        while writer.n_chars < scenario_state_bytes:
            for rs in state["request_states"]:
                writer.write(_copy_state(rs, n_copies, prompt_repeat, n_tokens, top_k))
            n_copies += 1
        out.write("\n  ]\n}" if indent is not None else "]}")
    with open(target / "per_instance_stats.json", "w") as out:
        out.write("[\n" if indent is not None else "[")
        writer = _ArrayWriter(out, indent, 1)
        for copy in range(n_copies):
            for n, entry in enumerate(entries):
                writer.write(_copy_entry(entry, copy, n))
        out.write("\n]" if indent is not None else "]")
    return target


# --- converting it in a fresh process ---------------------------------------------------------


def convert_in_this_process(run_dir: Path, work: Path) -> dict[str, Any]:
    """Convert ``run_dir`` with the pool function; report what the child measured."""
    from helmproc.engine.chunks.worker import ChunkSpec, w_process_chunk
    from helmproc.engine.convert.converter import STREAM_THRESHOLD_BYTES
    from helmproc.engine.facts import RunRef

    def chunk(run: Path, chunk_id: int) -> ChunkSpec:
        ref = RunRef("bench", run.parent.name, run.name, None, run.name)
        return ChunkSpec(
            job_id="bench",
            chunk_id=chunk_id,
            runs=(ref,),
            source_config={"kind": "dir", "root": str(run.parent), "project": "bench"},
            staging_root=str(work / "staging"),
            scratch_root=str(work / "scratch"),
            job_timestamp="1800000000",
        )

    # Warm up (imports, first-call setup) on the small fixture run, as a pool worker that has
    # converted something before would be; the fixture adds nothing to the peak.
    w_process_chunk(chunk(FIXTURE_RUN, 1))
    started = time.perf_counter()
    result = w_process_chunk(chunk(run_dir, 0))
    seconds = time.perf_counter() - started
    outcome = result.outcomes[0]
    if not outcome.ok:
        raise SystemExit(f"conversion failed: {outcome.error}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sizes = {p.name: p.stat().st_size for p in run_dir.iterdir()}
    return {
        "scenario_state_mb": round(sizes["scenario_state.json"] / 2**20, 1),
        "per_instance_stats_mb": round(sizes["per_instance_stats.json"] / 2**20, 1),
        "streamed": max(sizes.values()) > STREAM_THRESHOLD_BYTES,
        "n_instances": outcome.n_instances,
        "n_rows": outcome.n_rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(outcome.n_rows / seconds),
        "instances_per_s": round(outcome.n_instances / seconds),
        "input_mb_per_s": round(sum(sizes.values()) / 2**20 / seconds, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "shard_mb": round(sum(s.n_bytes for s in result.shards) / 2**20, 2),
    }


def measure(run_dir: Path, work: Path) -> dict[str, Any]:
    """Run :func:`convert_in_this_process` in a fresh interpreter (clean peak RSS)."""
    shutil.rmtree(work, ignore_errors=True)
    command = [sys.executable, __file__, "--child", str(run_dir), "--work", str(work)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout))


def _time_mb_per_s(path: Path, cut: Any) -> float:
    started = time.perf_counter()
    n = cut(path)
    assert n > 0
    return round(path.stat().st_size / 2**20 / (time.perf_counter() - started), 1)


def compare_parsers(work: Path, size_mb: int) -> dict[str, Any]:
    """MB/s of each way to cut request states out of scenario_state.json and decode them."""
    import msgspec

    from helmproc.engine.helm.array_stream import iter_array_elements
    from helmproc.engine.helm.run_files import RequestState, ScenarioState

    decoder = msgspec.json.Decoder(RequestState)

    def helm_stream(path: Path) -> int:
        return sum(
            1 for _, data in iter_array_elements(path, "request_states") if decoder.decode(data)
        )

    def whole_file(path: Path) -> int:
        return len(msgspec.json.decode(path.read_bytes(), type=ScenarioState).request_states)

    def ijson_c(path: Path) -> int:
        import ijson  # type: ignore[import-not-found]

        with open(path, "rb") as fh:
            items = ijson.items(fh, "request_states.item", use_float=True)
            return sum(1 for item in items if msgspec.convert(item, RequestState))

    indented = write_large_run(work / "parsers" / "indented", size_mb << 20) / "scenario_state.json"
    compact_run = write_large_run(work / "parsers" / "compact", (size_mb // 4) << 20, indent=None)
    compact = compact_run / "scenario_state.json"
    report: dict[str, Any] = {
        "file_mb": round(indented.stat().st_size / 2**20, 1),
        "helm_stream_indented_mb_per_s": _time_mb_per_s(indented, helm_stream),
        "helm_stream_compact_fallback_mb_per_s": _time_mb_per_s(compact, helm_stream),
        "msgspec_whole_file_mb_per_s": _time_mb_per_s(indented, whole_file),
    }
    try:
        report["ijson_yajl2_c_mb_per_s"] = _time_mb_per_s(indented, ijson_c)
    except ImportError:
        report["ijson_yajl2_c_mb_per_s"] = "ijson not installed"
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="scenario_state.json size")
    parser.add_argument("--fast-size-mb", type=int, default=48, help="run below the threshold")
    parser.add_argument("--work", type=Path, default=None, help="folder for generated runs")
    parser.add_argument("--keep", action="store_true", help="keep the generated runs")
    parser.add_argument(
        "--compare-parsers", type=int, metavar="MB", default=None, help="time JSON cutters"
    )
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(convert_in_this_process(args.child, args.work)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="helmproc-bench-"))
    if args.compare_parsers is not None:
        try:
            print(json.dumps(compare_parsers(work, args.compare_parsers), indent=2))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        return
    report: dict[str, Any] = {}
    try:
        for label, size_mb in (("large_streamed", args.size_mb), ("fast_path", args.fast_size_mb)):
            run_dir = work / f"runs-{size_mb}" / f"bench_{size_mb}mb"
            if not (run_dir / "per_instance_stats.json").exists():
                started = time.perf_counter()
                write_large_run(run_dir, size_mb << 20)
                took = time.perf_counter() - started
                print(f"generated {run_dir} in {took:.0f}s", file=sys.stderr)
            report[label] = measure(run_dir, work / f"convert-{size_mb}")
            print(f"{label}: {json.dumps(report[label])}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
