"""Generate HELM ``benchmark_output`` corpora at realistic sizes, fast and deterministically.

    python bench/corpus.py OUT --lite                    # 2,546 lite-shaped runs
    python bench/corpus.py OUT --runs 10 --instances 20000

How it works. Every run is shaped like an MMLU run of HELM (joint multiple choice), scaled
up from the real fixture run ``v1.1.0/simple_mcqa:model=simple_model1``: its ``run_spec.json``,
``scenario.json`` and ``stats.json`` are kept (model, name and instance count substituted), and
its first request state and per-instance entry become templates for every instance. Each
instance gets an MMLU-like prompt of 2-4 KB (a 5-shot header drawn once per run, then the
question with four choices), its own id, choices, correct answer, prediction, request time and
token counts; the per-instance entry keeps the fixture's 27 stats with the core scores
(``exact_match`` and friends) and token counts of that instance. Files are laid out exactly as
HELM writes them (``json.dumps(..., indent=2)``, checked by ``--self-check``), but built from
templates rendered once per run: the indented text is split at the varying values, and each
instance only joins pre-rendered pieces with its values (``json.dumps`` of a string or a
number), so generation runs at ~100 MB/s per process (~12 KB per instance on disk).

Run names and instance counts follow HELM lite (``LITE_SCENARIOS``: 28 runs per model, 18 of
them with 100-500 instances, 10 with 1,000; 2,546 runs hold ~1.2M instances, ~15 GB);
``instance_scale`` shrinks or grows the counts (at least 100, at most 20,000 per run).
Everything is a pure function of the plan and ``seed``: the same command writes the same
bytes. Nothing but ``OUT`` is written.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_RUN = ROOT / "tests/data/benchmark_output/runs/v1.1.0/simple_mcqa:model=simple_model1"
RUN_FILES = (
    "run_spec.json",
    "scenario.json",
    "stats.json",
    "per_instance_stats.json",
    "scenario_state.json",
)
DEFAULT_RELEASE = "v1.0.0"
LITE_RUNS = 2546
LITE_SUITES = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0")
MIN_INSTANCES = 100
MAX_INSTANCES = 20_000
PROMPT_BYTES = (2048, 4096)
LETTERS = "ABCD"
CORE_STATS = frozenset(
    {"exact_match", "quasi_exact_match", "prefix_exact_match", "quasi_prefix_exact_match"}
)
CORE_AT_5 = frozenset(f"{name}@5" for name in CORE_STATS)
WRITE_BUFFER = 1 << 20

# (run name before ",model=...", instances) of one model's runs in HELM lite, in lite's
# proportions: MMLU and MATH subjects and small LegalBench subsets near 100 instances,
# NarrativeQA, OpenbookQA and mid-size subsets a few hundred, NaturalQuestions, GSM8K, MedQA,
# the big LegalBench subset and WMT14 pairs capped at 1,000.
LITE_SCENARIOS: tuple[tuple[str, int], ...] = (
    ("narrativeqa:", 355),
    ("natural_qa:mode=openbook_longans", 1000),
    ("natural_qa:mode=closedbook", 1000),
    ("commonsense:dataset=openbookqa,method=multiple_choice_joint", 500),
    *((f"mmlu:subject={s},method=multiple_choice_joint", n) for s, n in (
        ("abstract_algebra", 100), ("college_chemistry", 100), ("computer_security", 100),
        ("econometrics", 114), ("us_foreign_policy", 100),
    )),
    *((f"math:subject={s},level=1,use_official_examples=False,use_chain_of_thought=True", 100)
      for s in ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                "number_theory", "prealgebra", "precalculus")),
    ("gsm:", 1000),
    *((f"legalbench:subset={s}", n) for s, n in (
        ("abercrombie", 100), ("corporate_lobbying", 490), ("function_of_decision_section", 367),
        ("international_citizenship_questions", 1000), ("proa", 100),
    )),
    ("med_qa:", 1000),
    *((f"wmt_14:language_pair={p}-en", 1000) for p in ("cs", "de", "fr", "hi", "ru")),
)  # fmt: skip

_WORDS = (
    "the of and a to in is was that for on as with by he at from his an were are which this be "
    "or has had not but one its first new after also two their they been who all would more "
    "other some than into only time year between may under most these over three such many "
    "about where later each during however known since both used being state city part world "
    "system number between process energy market theory function value policy model charge "
    "reaction acid electron enzyme integer group ring field vector matrix prime series limit "
    "court contract statute treaty tariff inflation demand supply equilibrium variance sample "
    "estimator regression protocol cipher network kernel buffer overflow key certificate"
).split()


@dataclass(frozen=True)
class RunPlan:
    """One run to generate: where it goes, what it is called, how many instances it has."""

    suite: str
    name: str
    n_instances: int
    model: str  # HELM model name, e.g. "bench-org/model-07"
    seed: int


@dataclass(frozen=True)
class GeneratedRun:
    suite: str
    name: str
    n_instances: int
    n_bytes: int  # bytes of the five run files


@dataclass(frozen=True)
class Corpus:
    """A generated ``benchmark_output`` folder with one release indexing all its runs."""

    root: Path
    release: str
    runs: tuple[GeneratedRun, ...]

    @property
    def n_instances(self) -> int:
        return sum(r.n_instances for r in self.runs)

    @property
    def n_bytes(self) -> int:
        return sum(r.n_bytes for r in self.runs)

    def run_dir(self, run: GeneratedRun) -> Path:
        return self.root / "runs" / run.suite / run.name


# --- plans ------------------------------------------------------------------------------------


def _model(index: int) -> str:
    return f"bench-org{index % 7}/model-{index:03d}"


def lite_plan(
    n_runs: int = LITE_RUNS, instance_scale: float = 1.0, seed: int = 0, tag: str = ""
) -> list[RunPlan]:
    """``n_runs`` runs in lite's mix: model after model, each with lite's 28 scenarios."""
    plans = []
    per_model = len(LITE_SCENARIOS)
    for i in range(n_runs):
        model_index = i // per_model
        base, n = LITE_SCENARIOS[i % per_model]
        model = _model(model_index)
        sep = "" if base.endswith(":") else ","
        name = f"{base}{sep}model={model.replace('/', '_')}{tag}"
        scaled = min(MAX_INSTANCES, max(MIN_INSTANCES, round(n * instance_scale)))
        suite = LITE_SUITES[model_index % len(LITE_SUITES)]
        plans.append(RunPlan(suite, name, scaled, model, seed * 1_000_003 + i))
    return plans


def uniform_plan(n_runs: int, n_instances: int, seed: int = 0, tag: str = "") -> list[RunPlan]:
    """``n_runs`` MMLU runs of ``n_instances`` each (one subject per run, one model each)."""
    return [
        RunPlan(
            LITE_SUITES[0],
            f"mmlu:subject=bench_{i:05d},method=multiple_choice_joint,"
            f"model={_model(i).replace('/', '_')}{tag}",
            n_instances,
            _model(i),
            seed * 1_000_003 + 500_000 + i,
        )
        for i in range(n_runs)
    ]


# --- templates --------------------------------------------------------------------------------


_HOLE = re.compile(r'"@@([A-Za-z0-9_]+)@@"')


class Template:
    """The text of ``json.dumps(value, indent=2)`` nested ``depth`` levels deep, with holes.

    Strings ``"@@name@@"`` in ``value`` are holes: ``render`` fills each with the JSON text
    given for its name (already encoded, e.g. ``json.dumps(text)`` or ``repr(number)``).
    """

    def __init__(self, value: Any, depth: int) -> None:
        pad = " " * (2 * depth)
        text = pad + json.dumps(value, indent=2).replace("\n", "\n" + pad)
        pieces = _HOLE.split(text)
        self.parts = pieces[0::2]
        self.names = pieces[1::2]

    def render(self, values: dict[str, str]) -> str:
        out = [self.parts[0]]
        for name, part in zip(self.names, self.parts[1:], strict=True):
            out.append(values[name])
            out.append(part)
        return "".join(out)


def _num(value: float | int) -> str:
    """A number as ``json.dumps`` writes it."""
    return json.dumps(value)


class _Fixture:
    """The fixture run, decoded once per process, and the templates built from it."""

    def __init__(self) -> None:
        self.run_spec = json.loads((FIXTURE_RUN / "run_spec.json").read_text())
        self.scenario = json.loads((FIXTURE_RUN / "scenario.json").read_text())
        self.stats_text = (FIXTURE_RUN / "stats.json").read_text()
        state = json.loads((FIXTURE_RUN / "scenario_state.json").read_text())
        self.adapter_spec = state["adapter_spec"]
        entry = json.loads((FIXTURE_RUN / "per_instance_stats.json").read_text())[0]
        self.states = [self._state_template(k) for k in range(len(LETTERS))]
        self.entry = self._entry_template(entry)

    @staticmethod
    def _state_template(correct: int) -> Template:
        references = [
            {"output": {"text": f"@@choice{k}@@"}, "tags": ["correct"] if k == correct else []}
            for k in range(len(LETTERS))
        ]
        state = {
            "instance": {
                "input": {"text": "@@question@@"},
                "references": references,
                "split": "test",
                "id": "@@id@@",
            },
            "train_trial_index": 0,
            "output_mapping": {letter: f"@@choice{k}@@" for k, letter in enumerate(LETTERS)},
            "request": {
                "model_deployment": "@@model@@",
                "model": "@@model@@",
                "embedding": False,
                "prompt": "@@prompt@@",
                "temperature": 0.0,
                "num_completions": 1,
                "top_k_per_token": 5,
                "max_tokens": 1,
                "stop_sequences": [],
                "echo_prompt": False,
                "top_p": 1,
                "presence_penalty": 0,
                "frequency_penalty": 0,
            },
            "result": {
                "success": True,
                "embedding": [],
                "completions": [
                    {
                        "text": "@@answer@@",
                        "logprob": "@@logprob@@",
                        "tokens": [{"text": "@@answer@@", "logprob": "@@logprob@@"}],
                    }
                ],
                "cached": True,
                "request_time": "@@request_time@@",
                "request_datetime": "@@request_datetime@@",
            },
            "num_train_instances": 5,
            "prompt_truncated": False,
            "num_conditioning_tokens": 0,
        }
        return Template(state, 2)

    @staticmethod
    def _entry_template(entry: dict[str, Any]) -> Template:
        """The fixture's per-instance entry with holes for the values that vary."""
        varying = {
            "num_prompt_tokens": "tokens",
            "inference_runtime": "runtime",
            "max_prob": "prob",
            "logprob": "logprob",
            "num_bytes": "nbytes",
            **{name: "em" for name in CORE_STATS},
            **{name: "em5" for name in CORE_AT_5},
        }
        stats = []
        for stat in entry["stats"]:
            hole = varying.get(stat["name"]["name"])
            if hole is not None and stat.get("count"):
                stat = {
                    "name": stat["name"],
                    "count": 1,
                    "sum": f"@@{hole}@@",
                    "sum_squared": f"@@{hole}_sq@@",
                    "min": f"@@{hole}@@",
                    "max": f"@@{hole}@@",
                    "mean": f"@@{hole}_mean@@",
                    "variance": 0.0,
                    "stddev": 0.0,
                }
            stats.append(stat)
        return Template({"instance_id": "@@id@@", "train_trial_index": 0, "stats": stats}, 1)


_FIXTURE: _Fixture | None = None


def _fixture() -> _Fixture:
    global _FIXTURE
    if _FIXTURE is None:
        _FIXTURE = _Fixture()
    return _FIXTURE


def _sentence(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=n_words)
    return " ".join(words).capitalize()


def _question(rng: random.Random) -> tuple[str, list[str]]:
    question = _sentence(rng, rng.randint(18, 60)) + "?"
    choices = [_sentence(rng, rng.randint(2, 9)) for _ in LETTERS]
    return question, choices


def _block(question: str, choices: Sequence[str]) -> str:
    lines = [f"Question: {question}"]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


def _few_shot_header(rng: random.Random, subject: str, target: int) -> str:
    """Instructions and five worked examples, about ``target`` bytes in all."""
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    per_example = max(120, (target - len(header)) // 5)
    for _ in range(5):
        words = max(6, per_example // 7 - 20)
        question = _sentence(rng, words) + "?"
        choices = [_sentence(rng, rng.randint(2, 5)) for _ in LETTERS]
        header += _block(question, choices) + f" {rng.choice(LETTERS)}\n\n"
    return header


# --- writing a run ----------------------------------------------------------------------------


def _squares(value: float | int) -> dict[str, str]:
    return {"": _num(value), "_sq": _num(value * value), "_mean": _num(float(value))}


def write_run(run_dir: Path, plan: RunPlan) -> GeneratedRun:
    """Write one run's five files under ``run_dir``; deterministic in ``plan``."""
    fx = _fixture()
    rng = random.Random(plan.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    subject = plan.name.split(":", 1)[0]
    model_json = json.dumps(plan.model)

    spec = json.loads(json.dumps(fx.run_spec))
    spec["name"] = plan.name
    for adapter in (spec["adapter_spec"],):
        adapter.update(model=plan.model, model_deployment=plan.model)
        adapter["max_eval_instances"] = plan.n_instances
        adapter["max_tokens"] = 1
        adapter["num_outputs"] = 1
    spec["groups"] = [subject]
    (run_dir / "run_spec.json").write_text(json.dumps(spec, indent=2))
    scenario = dict(fx.scenario, name=subject, description=f"Generated MMLU-like {subject}.")
    (run_dir / "scenario.json").write_text(json.dumps(scenario, indent=2))
    (run_dir / "stats.json").write_text(fx.stats_text)

    header = _few_shot_header(rng, subject, rng.randint(*PROMPT_BYTES) - 400)
    adapter_spec = dict(spec["adapter_spec"])
    head = json.dumps({"adapter_spec": adapter_spec}, indent=2)
    base_time = 1_700_000_000 + (plan.seed % 10_000_000)
    with (
        open(run_dir / "scenario_state.json", "w", buffering=WRITE_BUFFER) as states,
        open(run_dir / "per_instance_stats.json", "w", buffering=WRITE_BUFFER) as entries,
    ):
        states.write(head[: head.rfind("}")].rstrip() + ',\n  "request_states": [\n')
        entries.write("[\n")
        for i in range(plan.n_instances):
            question, choices = _question(rng)
            correct = rng.randrange(len(LETTERS))
            predicted = correct if rng.random() < 0.6 else rng.randrange(len(LETTERS))
            prompt = header + _block(question, choices)
            request_time = round(rng.uniform(0.05, 2.5), 6)
            logprob = round(-rng.random() * 3, 6)
            values = {
                "id": json.dumps(f"id{10_000 + i * 7}"),
                "question": json.dumps(question),
                "model": model_json,
                "prompt": json.dumps(prompt),
                "answer": json.dumps(" " + LETTERS[predicted]),
                "logprob": _num(logprob),
                "request_time": _num(request_time),
                "request_datetime": _num(base_time + i),
            }
            for k, choice in enumerate(choices):
                values[f"choice{k}"] = json.dumps(choice)
            if i:
                states.write(",\n")
                entries.write(",\n")
            states.write(fx.states[correct].render(values))
            em = int(predicted == correct)
            varying = {
                "tokens": len(prompt) // 4,
                "runtime": request_time,
                "prob": round(math.exp(logprob), 6),
                "logprob": logprob,
                "nbytes": 2,
                "em": em,
                "em5": max(em, int(rng.random() < 0.5)),
            }
            for hole, value in varying.items():
                for suffix, text in _squares(value).items():
                    values[hole + suffix] = text
            entries.write(fx.entry.render(values))
        states.write("\n  ]\n}")
        entries.write("\n]")
    n_bytes = sum((run_dir / f).stat().st_size for f in RUN_FILES)
    return GeneratedRun(plan.suite, plan.name, plan.n_instances, n_bytes)


def _write_one(job: tuple[str, RunPlan]) -> GeneratedRun:
    root, plan = job
    return write_run(Path(root) / "runs" / plan.suite / plan.name, plan)


def write_corpus(
    root: Path,
    plans: Iterable[RunPlan],
    *,
    release: str = DEFAULT_RELEASE,
    processes: int = 2,
) -> Corpus:
    """Write every planned run under ``root/runs/<suite>/`` and one release indexing them."""
    plans = list(plans)
    jobs = [(str(root), plan) for plan in plans]
    if processes > 1 and len(plans) > 1:
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(processes) as pool:
            runs = pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (processes * 8)))
    else:
        runs = [_write_one(job) for job in jobs]
    index = {run.name: run.suite for run in runs}
    (root / "releases" / release).mkdir(parents=True, exist_ok=True)
    (root / "releases" / release / "runs_to_run_suites.json").write_text(
        json.dumps(index, indent=2)
    )
    return Corpus(root, release, tuple(runs))


def self_check(work: Path) -> None:
    """Generated files equal ``json.dumps(json.loads(file), indent=2)``: HELM's own layout."""
    corpus = write_corpus(work, uniform_plan(2, 25, seed=7), processes=1)
    for run in corpus.runs:
        for name in RUN_FILES:
            text = (corpus.run_dir(run) / name).read_text()
            if json.dumps(json.loads(text), indent=2) != text:
                raise SystemExit(f"layout differs from json.dumps(indent=2): {run.name}/{name}")
    print(f"self-check ok: {len(corpus.runs)} runs laid out as HELM writes them")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="benchmark_output folder to create")
    parser.add_argument("--lite", action="store_true", help="lite's 28 scenarios per model")
    parser.add_argument("--runs", type=int, default=None, help="number of runs")
    parser.add_argument("--instances", type=int, default=1000, help="instances per run (uniform)")
    parser.add_argument("--instance-scale", type=float, default=1.0, help="lite: scale counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--self-check", action="store_true", help="verify the JSON layout")
    args = parser.parse_args(argv)
    if args.self_check:
        self_check(args.out)
        return
    if args.lite:
        plans = lite_plan(args.runs or LITE_RUNS, args.instance_scale, args.seed)
    else:
        plans = uniform_plan(args.runs or 10, args.instances, args.seed)
    started = time.perf_counter()
    corpus = write_corpus(args.out, plans, processes=args.processes)
    took = time.perf_counter() - started
    print(
        f"{len(corpus.runs)} runs, {corpus.n_instances} instances, "
        f"{corpus.n_bytes / 1e6:.0f} MB in {took:.1f} s ({corpus.n_bytes / 1e6 / took:.0f} MB/s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
