"""Generate HELM ``benchmark_output`` corpora shaped like real HELM projects, deterministically.

    python bench/corpus.py OUT --profile lite                 # 8 models x lite's 28 runs
    python bench/corpus.py OUT --profile lite --big-mb 1100   # ... plus one 1.1 GB run
    python bench/corpus.py OUT --profile classic --models 2 --instance-scale 0.5
    python bench/corpus.py OUT --profile mmlu --models 1
    python bench/corpus.py OUT --runs 10 --instances 20000    # uniform MMLU-like runs
    python bench/corpus.py OUT --self-check                   # layout == HELM's json.dumps

What a run looks like. Every run is written the way HELM writes it (``json.dumps(...,
indent=2)`` for all five files, checked by ``--self-check``), with the fixture run
``v1.1.0/simple_mcqa:model=simple_model1`` (made with HELM's own CLI, tests/data) as the model
for ``run_spec.json``, ``scenario.json``, the shape of a request state and the 23 non-score
stats of a per-instance entry. What varies is the run's *kind* (:data:`KINDS`), which follows
what HELM's run specs ask of the model:

========== ============================ ============ =============== =========================
kind       prompt                       output       core metrics    HELM scenarios (run specs)
========== ============================ ============ =============== =========================
mc         5-shot header per run        1 token      exact_match x4  mmlu, med_qa, openbookqa,
           (1.6-3.6 KB) + question                                   hellaswag, truthful_qa
qa         few-shot header per run      1-20 tokens  exact_match x2  natural_qa closedbook,
           (1-5 KB) + question                       + f1_score      legalbench, raft, civil_c.
passage    a unique passage per         5-25 tokens  exact_match x2  narrativeqa (900-2,200
           instance + question                       + f1_score      words), natural_qa open-
                                                                     book, boolq, imdb, quac
cot        8-shot chain-of-thought      200-500      math_equiv_cot  math (chain of thought),
           header (5-8 KB) + problem    tokens       / exact_match_  gsm
                                                     indicator
translate  5-shot pairs (1-2 KB) +      20-60        bleu_4          wmt_14
           one source sentence          tokens
summarize  a unique article             60-120       rouge_l         summarization_cnndm,
           (450-900 words)              tokens                       summarization_xsum
========== ============================ ============ =============== =========================

Every completion carries its per-token list (``text``, ``logprob``), as HELM >= 0.2 writes it.
Runs of suites made before HELM 0.5 (lite's first suite ``v1.0.0`` and every classic run) also
carry per-token ``top_logprobs`` (k = the request's ``top_k_per_token``: 5 for multiple choice,
1 otherwise), which HELM 0.5 dropped; that is what made classic's files so large. Perturbation
sweeps (classic's ``data_augmentation=canonical``) add, for every instance, six perturbed
copies (``typos``, ``synonym``, ``lowercase``, ``dialect``, ``gender``, ``person_name``: the
robustness and fairness perturbations HELM classic applies), each its own request state with
``instance.perturbation`` and ``contrast_inputs``, and its own per-instance entry with the
perturbation in every stat name. ``--big-mb N`` adds one run of a chain-of-thought kind with
``top_logprobs`` whose ``scenario_state.json`` grows until it holds at least N MB (HELM
classic's ``msmarco:track=regular`` run wrote a 4.2 GB one).

Profiles (per model; ``--models`` sets how many; ``--instance-scale`` scales every count,
clamped to 10..20,000; instance counts are HELM's ``max_eval_instances`` or the test split):

- ``lite``: HELM lite's 28 run specs per model (:data:`LITE_SCENARIOS`; names and counts as in
  lite v1.x: 355 NarrativeQA, 1,000 each NaturalQuestions, GSM8K, MedQA, WMT14 pairs, 100-500
  for MMLU, MATH and LegalBench subsets). About 12,700 instances and 220 MB per model at scale
  1, two thirds of the bytes in chain-of-thought and translation runs (their per-token lists).
  Model ``i`` is in suite ``v1.{i % 4}.0``; suite ``v1.0.0`` predates HELM 0.5 (top_logprobs).
- ``classic``: 16 of HELM classic's core run specs per model (:data:`CLASSIC_SCENARIOS`), ten of
  them with ``data_augmentation=canonical`` (x7 request states), all with ``top_logprobs``.
- ``mmlu``: HELM MMLU's 57 subjects per model with each subject's test-set size (14,042
  instances per model, :data:`MMLU_SUBJECTS`), all ``mc``.

Texts are random words from a small vocabulary: unique per instance wherever HELM's are (the
question, the passage, the output), shared per run where HELM's are (the few-shot header), so
compression and dictionary encoding see what they would see on real runs, not better.
Everything is a pure function of the plan and ``seed``: the same command writes the same bytes.
Files are built from templates rendered once per run (the indented text is split at the values
that vary; per-token lists are joined from a pre-rendered pool of 1,024 tokens per run), so a
process writes ~60-100 MB/s. Nothing but ``OUT`` is written.
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
from collections.abc import Callable, Iterable, Sequence
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
LITE_SUITES = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0")
PRE_V05_SUITES = frozenset({"v1.0.0"})  # lite's first release was made with HELM 0.4
CLASSIC_SUITE = "v0.4.0"
MMLU_SUITE = "v1.0.0"
MIN_INSTANCES = 10
MAX_INSTANCES = 20_000
LETTERS = "ABCD"
WRITE_BUFFER = 1 << 20
TOKEN_POOL = 1024
PERTURBATIONS = (
    ("typos", True, False),
    ("synonym", True, False),
    ("lowercase", True, False),
    ("dialect", False, True),
    ("gender", False, True),
    ("person_name", False, True),
)
EXACT4 = ("exact_match", "quasi_exact_match", "prefix_exact_match", "quasi_prefix_exact_match")
QA3 = ("exact_match", "quasi_exact_match", "f1_score")
# Scores of these are 0/1; every other core metric is a continuous proportion.
BINARY_METRICS = frozenset({*EXACT4, "exact_match_indicator", "math_equiv_chain_of_thought"})


@dataclass(frozen=True)
class Kind:
    """What a run's prompts and outputs look like (see the module docstring's table)."""

    name: str
    method: str
    metrics: tuple[str, ...]
    header_bytes: tuple[int, int]  # few-shot header shared by the run's prompts
    passage_words: tuple[int, int]  # unique per instance
    question_words: tuple[int, int]
    output_tokens: tuple[int, int]
    max_tokens: int


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("mc", "multiple_choice_joint", EXACT4, (1600, 3600), (0, 0), (18, 60), (1, 1), 1),
        Kind("qa", "generation", QA3, (1000, 5000), (0, 0), (8, 30), (1, 20), 100),
        Kind("passage", "generation", QA3, (0, 0), (900, 2200), (8, 20), (5, 25), 100),
        Kind("cot", "generation", ("math_equiv_chain_of_thought",), (5000, 8000), (0, 0),
             (25, 90), (200, 500), 400),
        Kind("translate", "generation", ("bleu_4",), (1000, 2000), (0, 0), (15, 40), (20, 60),
             100),
        Kind("summarize", "generation", ("rouge_l",), (0, 0), (450, 900), (0, 0), (60, 120),
             128),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """One run spec of a project, per model: run name before ``model=``, count, kind."""

    base: str
    n_instances: int
    kind: str = "mc"
    metrics: tuple[str, ...] = ()  # () = the kind's
    passage_words: tuple[int, int] | None = None  # None = the kind's
    perturbed: bool = False


_CANON = "data_augmentation=canonical"

# HELM lite v1.x, one model's 28 runs (run_specs from helm/benchmark/presentation/run_entries_
# lite*.conf: max_eval_instances 1000, MMLU/MATH/LegalBench subsets at their sizes).
LITE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("narrativeqa:", 355, "passage"),
    Scenario("natural_qa:mode=openbook_longans", 1000, "passage", passage_words=(150, 600)),
    Scenario("natural_qa:mode=closedbook", 1000, "qa"),
    Scenario("commonsense:dataset=openbookqa,method=multiple_choice_joint", 500),
    *(Scenario(f"mmlu:subject={s},method=multiple_choice_joint", n) for s, n in (
        ("abstract_algebra", 100), ("college_chemistry", 100), ("computer_security", 100),
        ("econometrics", 114), ("us_foreign_policy", 100),
    )),
    *(Scenario(f"math:subject={s},level=1,use_official_examples=False,use_chain_of_thought=True",
               100, "cot")
      for s in ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                "number_theory", "prealgebra", "precalculus")),
    Scenario("gsm:", 1000, "cot", metrics=("exact_match_indicator",)),
    *(Scenario(f"legalbench:subset={s}", n, "qa", metrics=EXACT4[:2]) for s, n in (
        ("abercrombie", 100), ("corporate_lobbying", 490), ("function_of_decision_section", 367),
        ("international_citizenship_questions", 1000), ("proa", 100),
    )),
    Scenario("med_qa:", 1000),
    *(Scenario(f"wmt_14:language_pair={p}-en", 1000, "translate")
      for p in ("cs", "de", "fr", "hi", "ru")),
)  # fmt: skip

# HELM classic v0.4, 16 core run specs per model (run_entries.conf): most with the canonical
# robustness + fairness augmentation; summarization and hellaswag/openbookqa without.
CLASSIC_SCENARIOS: tuple[Scenario, ...] = (
    *(Scenario(f"mmlu:subject={s},method=multiple_choice_joint,{_CANON}", n, perturbed=True)
      for s, n in (("abstract_algebra", 111), ("college_chemistry", 111),
                   ("computer_security", 111), ("econometrics", 126), ("us_foreign_policy", 111))),
    Scenario(f"boolq:{_CANON}", 1000, "passage", EXACT4[:2], (80, 200), perturbed=True),
    Scenario(f"narrative_qa:{_CANON}", 1000, "passage", perturbed=True),
    Scenario(f"natural_qa:mode=closedbook,{_CANON}", 1000, "qa", perturbed=True),
    Scenario(f"natural_qa:mode=openbook_longans,{_CANON}", 1000, "passage",
             passage_words=(150, 600), perturbed=True),
    Scenario(f"quac:{_CANON}", 1000, "passage", QA3[2:], (300, 800), perturbed=True),
    Scenario("commonsense:dataset=hellaswag,method=multiple_choice_separate_original", 1000),
    Scenario("commonsense:dataset=openbookqa,method=multiple_choice_separate_calibrated", 500),
    Scenario(f"truthful_qa:task=mc_single,method=multiple_choice_joint,{_CANON}", 654,
             perturbed=True),
    Scenario(f"imdb:{_CANON}", 1000, "passage", EXACT4[:2], (120, 350), perturbed=True),
    Scenario("summarization_cnndm:temperature=0.3,device=cuda", 466, "summarize"),
    Scenario("summarization_xsum:temperature=0.3,device=cuda", 518, "summarize",
             passage_words=(250, 500)),
)  # fmt: skip

# HELM MMLU v1.x: the 57 subjects, each with all of its test split (14,042 questions).
MMLU_SUBJECTS: tuple[tuple[str, int], ...] = (
    ("abstract_algebra", 100), ("anatomy", 135), ("astronomy", 152), ("business_ethics", 100),
    ("clinical_knowledge", 265), ("college_biology", 144), ("college_chemistry", 100),
    ("college_computer_science", 100), ("college_mathematics", 100), ("college_medicine", 173),
    ("college_physics", 102), ("computer_security", 100), ("conceptual_physics", 235),
    ("econometrics", 114), ("electrical_engineering", 145), ("elementary_mathematics", 378),
    ("formal_logic", 126), ("global_facts", 100), ("high_school_biology", 310),
    ("high_school_chemistry", 203), ("high_school_computer_science", 100),
    ("high_school_european_history", 165), ("high_school_geography", 198),
    ("high_school_government_and_politics", 193), ("high_school_macroeconomics", 390),
    ("high_school_mathematics", 270), ("high_school_microeconomics", 238),
    ("high_school_physics", 151), ("high_school_psychology", 545),
    ("high_school_statistics", 216), ("high_school_us_history", 204),
    ("high_school_world_history", 237), ("human_aging", 223), ("human_sexuality", 131),
    ("international_law", 121), ("jurisprudence", 108), ("logical_fallacies", 163),
    ("machine_learning", 112), ("management", 103), ("marketing", 234),
    ("medical_genetics", 100), ("miscellaneous", 783), ("moral_disputes", 346),
    ("moral_scenarios", 895), ("nutrition", 306), ("philosophy", 311), ("prehistory", 324),
    ("professional_accounting", 282), ("professional_law", 1534),
    ("professional_medicine", 272), ("professional_psychology", 612),
    ("public_relations", 110), ("security_studies", 245), ("sociology", 201),
    ("us_foreign_policy", 100), ("virology", 166), ("world_religions", 171),
)  # fmt: skip
MMLU_SCENARIOS = tuple(
    Scenario(f"mmlu:subject={s},method=multiple_choice_joint", n) for s, n in MMLU_SUBJECTS
)
PROFILES = {"lite": LITE_SCENARIOS, "classic": CLASSIC_SCENARIOS, "mmlu": MMLU_SCENARIOS}
LITE_RUNS = len(LITE_SCENARIOS)  # per model

_WORDS = (
    "the of and a to in is was that for on as with by he at from his an were are which this be "
    "or has had not but one its first new after also two their they been who all would more "
    "other some than into only time year between may under most these over three such many "
    "about where later each during however known since both used being state city part world "
    "system number between process energy market theory function value policy model charge "
    "reaction acid electron enzyme integer group ring field vector matrix prime series limit "
    "court contract statute treaty tariff inflation demand supply equilibrium variance sample "
    "estimator regression protocol cipher network kernel buffer overflow key certificate "
    "river harbor captain letter daughter village winter journey promise garden silence"
).split()
_TOKENS = [*(" " + w for w in _WORDS), *(f" {n}" for n in range(100)), ".", ",", " =", "\n",
           " +", " *", " /", "$", " So", " Therefore", " answer", " is"]  # fmt: skip


@dataclass(frozen=True)
class RunPlan:
    """One run to generate: where it goes, what it is called, what it holds."""

    suite: str
    name: str
    n_instances: int
    model: str  # HELM model name, e.g. "bench-org/model-07"
    seed: int
    kind: str = "mc"
    metrics: tuple[str, ...] = ()  # () = the kind's
    passage_words: tuple[int, int] | None = None
    perturbed: bool = False
    top_k: int = 0  # top_logprobs per token (0: none, HELM >= 0.5)
    min_state_bytes: int = 0  # > 0: instances until scenario_state.json holds this much


@dataclass(frozen=True)
class GeneratedRun:
    suite: str
    name: str
    n_instances: int
    n_bytes: int  # bytes of the five run files
    kind: str = "mc"


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


def _scaled(n: int, scale: float) -> int:
    return min(MAX_INSTANCES, max(MIN_INSTANCES, round(n * scale)))


def profile_plan(
    profile: str,
    n_models: int,
    instance_scale: float = 1.0,
    seed: int = 0,
    big_mb: float = 0.0,
    tag: str = "",
) -> list[RunPlan]:
    """Every run of ``n_models`` models in ``profile``'s mix, model after model; plus one run
    of at least ``big_mb`` MB of ``scenario_state.json`` when ``big_mb`` > 0."""
    scenarios = PROFILES[profile]
    plans = []
    for m in range(n_models):
        model = _model(m)
        if profile == "lite":
            suite = LITE_SUITES[m % len(LITE_SUITES)]
        else:
            suite = CLASSIC_SUITE if profile == "classic" else MMLU_SUITE
        top_k_any = profile == "classic" or suite in PRE_V05_SUITES
        for i, sc in enumerate(scenarios):
            sep = "" if sc.base.endswith(":") else ","
            plans.append(
                RunPlan(
                    suite=suite,
                    name=f"{sc.base}{sep}model={model.replace('/', '_')}{tag}",
                    n_instances=_scaled(sc.n_instances, instance_scale),
                    model=model,
                    seed=seed * 1_000_003 + m * 1000 + i,
                    kind=sc.kind,
                    metrics=sc.metrics,
                    passage_words=sc.passage_words,
                    perturbed=sc.perturbed,
                    top_k=(5 if sc.kind == "mc" else 1) if top_k_any else 0,
                )
            )
    if big_mb > 0:
        plans.append(big_plan(big_mb, seed, tag))
    return plans


def big_plan(big_mb: float, seed: int = 0, tag: str = "") -> RunPlan:
    """One chain-of-thought run with top_logprobs of at least ``big_mb`` MB of states."""
    model = "bench-org9/model-big"
    return RunPlan(
        suite=LITE_SUITES[0],
        name=f"gsm:model={model.replace('/', '_')}{tag}",
        n_instances=MAX_INSTANCES * 10,
        model=model,
        seed=seed * 1_000_003 + 999_999,
        kind="cot",
        metrics=("exact_match_indicator",),
        top_k=5,
        min_state_bytes=int(big_mb * 1e6),
    )


def lite_plan(
    n_runs: int = LITE_RUNS * 8, instance_scale: float = 1.0, seed: int = 0, tag: str = ""
) -> list[RunPlan]:
    """The first ``n_runs`` runs of the lite profile (model after model)."""
    n_models = -(-n_runs // LITE_RUNS)
    return profile_plan("lite", n_models, instance_scale, seed, tag=tag)[:n_runs]


def uniform_plan(n_runs: int, n_instances: int, seed: int = 0, tag: str = "") -> list[RunPlan]:
    """``n_runs`` MMLU runs of ``n_instances`` each (one subject per run, one model each)."""
    return [
        RunPlan(
            LITE_SUITES[1],
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
Value = str | Callable[[int], str]


class Template:
    """The text of ``json.dumps(value, indent=2)`` nested ``depth`` levels deep, with holes.

    Strings ``"@@name@@"`` in ``value`` are holes: ``render`` fills each with the JSON text
    given for its name (already encoded, e.g. ``json.dumps(text)``), or with what a callable
    given for it returns when called with the hole's line indentation (for lists and objects,
    whose lines must be indented as ``json.dumps`` would).
    """

    def __init__(self, value: Any, depth: int) -> None:
        pad = " " * (2 * depth)
        text = pad + json.dumps(value, indent=2).replace("\n", "\n" + pad)
        pieces = _HOLE.split(text)
        self.parts = pieces[0::2]
        self.names = pieces[1::2]
        self.indents = []
        for before in self.parts[:-1]:
            line = before[before.rfind("\n") + 1 :]
            self.indents.append(len(line) - len(line.lstrip(" ")))

    def render(self, values: dict[str, Value]) -> str:
        out = [self.parts[0]]
        for name, indent, part in zip(self.names, self.indents, self.parts[1:], strict=True):
            value = values[name]
            out.append(value if isinstance(value, str) else value(indent))
            out.append(part)
        return "".join(out)


def _num(value: float | int) -> str:
    """A number as ``json.dumps`` writes it."""
    return json.dumps(value)


def _dumps_at(value: Any, indent: int) -> str:
    """``json.dumps(value, indent=2)`` as it appears on a line indented ``indent`` spaces."""
    return json.dumps(value, indent=2).replace("\n", "\n" + " " * indent)


class TokenPool:
    """A run's per-token vocabulary: ``TOKEN_POOL`` (text, logprob, top_logprobs) tokens,
    each rendered once per indentation; a completion joins some of them."""

    def __init__(self, rng: random.Random, top_k: int) -> None:
        self.tokens = []
        for _ in range(TOKEN_POOL):
            text = rng.choice(_TOKENS)
            logprob = round(-rng.expovariate(3.0), 6)
            token: dict[str, Any] = {"text": text, "logprob": logprob}
            if top_k:
                others = rng.sample([t for t in _TOKENS if t != text], top_k - 1)
                top = {text: logprob}
                for other in others:
                    top[other] = round(logprob - rng.expovariate(1.0), 6)
                token["top_logprobs"] = top
            self.tokens.append(token)
        self._rendered: dict[int, list[str]] = {}

    def rendered(self, indent: int) -> list[str]:
        blocks = self._rendered.get(indent)
        if blocks is None:
            pad = " " * indent
            blocks = [pad + _dumps_at(t, indent) for t in self.tokens]
            self._rendered[indent] = blocks
        return blocks

    def completion(self, picks: Sequence[int]) -> tuple[str, float, Callable[[int], str]]:
        """(text, logprob, tokens list renderer) of a completion made of ``picks``."""
        text = "".join(self.tokens[p]["text"] for p in picks)
        logprob = round(sum(self.tokens[p]["logprob"] for p in picks), 6)

        def render(indent: int) -> str:
            blocks = self.rendered(indent + 2)
            return "[\n" + ",\n".join(blocks[p] for p in picks) + "\n" + " " * indent + "]"

        return text, logprob, render


class _Fixture:
    """The fixture run, decoded once per process."""

    def __init__(self) -> None:
        self.run_spec = json.loads((FIXTURE_RUN / "run_spec.json").read_text())
        self.scenario = json.loads((FIXTURE_RUN / "scenario.json").read_text())
        stats = json.loads((FIXTURE_RUN / "stats.json").read_text())
        entry = json.loads((FIXTURE_RUN / "per_instance_stats.json").read_text())[0]
        self.run_stats = [
            s for s in stats if "perturbation" not in s["name"] and not _is_score(s["name"]["name"])
        ]
        self.entry_stats = [s for s in entry["stats"] if not _is_score(s["name"]["name"])]


def _is_score(name: str) -> bool:
    return name.split("@")[0] in EXACT4


_FIXTURE: _Fixture | None = None


def _fixture() -> _Fixture:
    global _FIXTURE
    if _FIXTURE is None:
        _FIXTURE = _Fixture()
    return _FIXTURE


# Per-instance stats that vary (hole name); the others keep the fixture's values.
_VARYING_STATS = {
    "num_prompt_tokens": "ptok",
    "num_completion_tokens": "otok",
    "num_output_tokens": "otok",
    "inference_runtime": "runtime",
    "max_prob": "prob",
    "logprob": "logprob",
    "num_bytes": "nbytes",
}


def _stat_hole(name: dict[str, Any], hole: str) -> dict[str, Any]:
    return {
        "name": name,
        "count": 1,
        "sum": f"@@{hole}@@",
        "sum_squared": f"@@{hole}_sq@@",
        "min": f"@@{hole}@@",
        "max": f"@@{hole}@@",
        "mean": f"@@{hole}_mean@@",
        "variance": 0.0,
        "stddev": 0.0,
    }


def _entry_template(metrics: Sequence[str], perturbation: dict[str, Any] | None) -> Template:
    stats = []
    for stat in _fixture().entry_stats:
        name = dict(stat["name"])
        if perturbation is not None:
            name["perturbation"] = perturbation
        hole = _VARYING_STATS.get(name["name"])
        if hole is not None and stat.get("count"):
            stats.append(_stat_hole(name, hole))
        else:
            stats.append(dict(stat, name=name))
    for j, metric in enumerate(metrics):
        name = {"name": metric, "split": "test"}
        if perturbation is not None:
            name["perturbation"] = perturbation
        stats.append(_stat_hole(name, f"score{j}"))
    entry: dict[str, Any] = {"instance_id": "@@id@@"}
    if perturbation is not None:
        entry["perturbation"] = perturbation
    entry.update(train_trial_index=0, stats=stats)
    return Template(entry, 1)


def _state_template(kind: Kind, n_refs: int, perturbation: dict[str, Any] | None) -> Template:
    if kind.name == "mc":
        references = [
            {"output": {"text": f"@@ref{k}@@"}, "tags": f"@@tags{k}@@"} for k in range(n_refs)
        ]
    else:
        references = [{"output": {"text": f"@@ref{k}@@"}, "tags": ["correct"]}
                      for k in range(n_refs)]  # fmt: skip
    instance: dict[str, Any] = {
        "input": {"text": "@@input@@"},
        "references": references,
        "split": "test",
        "id": "@@id@@",
    }
    if perturbation is not None:
        instance["perturbation"] = perturbation
        instance["contrast_inputs"] = [{"text": "@@original@@"}]
    state: dict[str, Any] = {"instance": instance, "train_trial_index": 0}
    if kind.name == "mc":
        state["output_mapping"] = {letter: f"@@ref{k}@@" for k, letter in enumerate(LETTERS)}
    state.update(
        request={
            "model_deployment": "@@model@@",
            "model": "@@model@@",
            "embedding": False,
            "prompt": "@@prompt@@",
            "temperature": 0.0,
            "num_completions": 1,
            "top_k_per_token": 5 if kind.name == "mc" else 1,
            "max_tokens": kind.max_tokens,
            "stop_sequences": [] if kind.name == "mc" else ["\n\n"],
            "echo_prompt": False,
            "top_p": 1,
            "presence_penalty": 0,
            "frequency_penalty": 0,
        },
        result={
            "success": True,
            "embedding": [],
            "completions": [{"text": "@@output@@", "logprob": "@@logprob@@",
                             "tokens": "@@tokens@@"}],
            "cached": True,
            "request_time": "@@request_time@@",
            "request_datetime": "@@request_datetime@@",
        },
        num_train_instances=0 if kind.header_bytes == (0, 0) else 5,
        prompt_truncated=False,
        num_conditioning_tokens=0,
    )  # fmt: skip
    return Template(state, 2)


# --- texts ------------------------------------------------------------------------------------


def _sentence(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=n_words)
    return " ".join(words).capitalize()


def _paragraphs(rng: random.Random, n_words: int) -> str:
    out, left = [], n_words
    while left > 0:
        n = min(left, rng.randint(8, 30))
        out.append(_sentence(rng, n) + ".")
        left -= n
    return " ".join(out)


def _mc_block(question: str, choices: Sequence[str]) -> str:
    lines = [f"Question: {question}"]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


def _header(rng: random.Random, kind: Kind, subject: str) -> str:
    """Instructions and worked examples shared by the run's prompts, about the kind's size."""
    lo, hi = kind.header_bytes
    if hi == 0:
        return ""
    target = rng.randint(lo, hi)
    header = f"The following are {kind.name} examples about {subject}.\n\n"
    while len(header) < target:
        words = rng.randint(15, 60)
        if kind.name == "mc":
            choices = [_sentence(rng, rng.randint(2, 5)) for _ in LETTERS]
            header += _mc_block(_sentence(rng, words) + "?", choices)
            header += f" {rng.choice(LETTERS)}\n\n"
        elif kind.name == "cot":
            steps = _paragraphs(rng, rng.randint(60, 160))
            header += f"Problem: {_sentence(rng, words)}?\nSolution: {steps} The answer is "
            header += f"{rng.randint(1, 999)}.\n\n"
        else:
            header += f"Input: {_sentence(rng, words)}\nOutput: {_sentence(rng, 8)}\n\n"
    return header


def _perturb(text: str, name: str, rng: random.Random) -> str:
    if name == "lowercase":
        return text.lower()
    words = text.split(" ")
    for _ in range(max(1, len(words) // 8)):
        i = rng.randrange(len(words))
        word = words[i]
        if name == "typos" and len(word) > 3:
            j = rng.randrange(len(word) - 1)
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
        else:
            words[i] = rng.choice(_WORDS)
    return " ".join(words)


# --- writing a run ----------------------------------------------------------------------------


def _correct_tags(indent: int) -> str:
    return _dumps_at(["correct"], indent)


_CORRECT = _correct_tags


def _letter_tokens(letter: str, like: dict[str, Any]) -> Callable[[int], str]:
    """The one-token list of a multiple-choice answer, its logprobs taken from ``like``."""
    token: dict[str, Any] = {"text": letter, "logprob": like["logprob"]}
    top = like.get("top_logprobs")
    if top is not None:
        others = [k for k in top if k != letter][: len(top) - 1]
        token["top_logprobs"] = {letter: like["logprob"], **{k: top[k] for k in others}}

    def render(indent: int) -> str:
        pad = " " * (indent + 2)
        return "[\n" + pad + _dumps_at(token, indent + 2) + "\n" + " " * indent + "]"

    return render


def _squares(value: float | int) -> dict[str, str]:
    return {"": _num(value), "_sq": _num(value * value), "_mean": _num(float(value))}


def _perturbation(name: str, robustness: bool, fairness: bool) -> dict[str, Any]:
    return {"name": name, "robustness": robustness, "fairness": fairness,
            "computed_on": "perturbed"}  # fmt: skip


def _stat(name: dict[str, Any], values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    total = sum(values)
    squares = sum(v * v for v in values)
    mean = total / n if n else 0.0
    variance = max(0.0, squares / n - mean * mean) if n else 0.0
    stat: dict[str, Any] = {"name": name, "count": n, "sum": total, "sum_squared": squares}
    if n:
        stat.update(min=min(values), max=max(values), mean=mean, variance=variance,
                    stddev=math.sqrt(variance))  # fmt: skip
    return stat


def write_run(run_dir: Path, plan: RunPlan) -> GeneratedRun:
    """Write one run's five files under ``run_dir``; deterministic in ``plan``."""
    fx = _fixture()
    kind = KINDS[plan.kind]
    metrics = plan.metrics or kind.metrics
    passage_words = plan.passage_words or kind.passage_words
    rng = random.Random(plan.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    subject = plan.name.split(":", 1)[0]
    model_json = json.dumps(plan.model)
    n_refs = len(LETTERS) if kind.name == "mc" else 1 + int(kind.name in ("qa", "passage"))
    perturbations = [None] + ([_perturbation(*p) for p in PERTURBATIONS] if plan.perturbed else [])

    spec = json.loads(json.dumps(fx.run_spec))
    spec["name"] = plan.name
    adapter = spec["adapter_spec"]
    adapter.update(model=plan.model, model_deployment=plan.model, method=kind.method)
    adapter["max_eval_instances"] = plan.n_instances
    adapter["max_tokens"] = kind.max_tokens
    adapter["num_outputs"] = 1
    if kind.name != "mc":
        adapter["instructions"] = ""
        adapter["stop_sequences"] = ["\n\n"]
    if plan.perturbed:
        spec["data_augmenter_spec"].update(
            perturbation_specs=[
                {"class_name": f"helm.benchmark.augmentations.{p[0]}_perturbation", "args": {}}
                for p in PERTURBATIONS
            ],
            should_augment_eval_instances=True,
            should_include_original_eval=True,
        )
    spec["metric_specs"][0]["args"]["names"] = list(metrics)
    spec["groups"] = [subject]
    (run_dir / "run_spec.json").write_text(json.dumps(spec, indent=2))
    scenario = dict(fx.scenario, name=subject, description=f"Generated {kind.name} {subject}.")
    (run_dir / "scenario.json").write_text(json.dumps(scenario, indent=2))

    header = _header(rng, kind, subject)
    pool = TokenPool(rng, plan.top_k)
    states_t = {(p or {}).get("name"): _state_template(kind, n_refs, p) for p in perturbations}
    entries_t = {(p or {}).get("name"): _entry_template(metrics, p) for p in perturbations}
    scores: dict[str, list[float]] = {m: [] for m in metrics}
    head = json.dumps({"adapter_spec": dict(adapter)}, indent=2)
    base_time = 1_700_000_000 + (plan.seed % 10_000_000)
    n_state_bytes = 0
    n_instances = 0
    first = True
    with (
        open(run_dir / "scenario_state.json", "w", buffering=WRITE_BUFFER) as states,
        open(run_dir / "per_instance_stats.json", "w", buffering=WRITE_BUFFER) as entries,
    ):
        text = head[: head.rfind("}")].rstrip() + ',\n  "request_states": [\n'
        states.write(text)
        entries.write("[\n")
        for i in range(plan.n_instances):
            if plan.min_state_bytes and n_state_bytes >= plan.min_state_bytes:
                break
            n_instances += 1
            question = (
                _sentence(rng, rng.randint(*kind.question_words)) if kind.question_words[1] else ""
            )
            passage = _paragraphs(rng, rng.randint(*passage_words)) if passage_words[1] else ""
            values: dict[str, Value] = {
                "id": json.dumps(f"id{10_000 + i * 7}"),
                "model": model_json,
            }
            correct = 0
            if kind.name == "mc":
                choices = [_sentence(rng, rng.randint(2, 9)) for _ in LETTERS]
                correct = rng.randrange(len(LETTERS))
                original = question + "?"
                for k, choice in enumerate(choices):
                    values[f"ref{k}"] = json.dumps(choice)
                    values[f"tags{k}"] = _CORRECT if k == correct else "[]"
            else:
                for k in range(n_refs):
                    values[f"ref{k}"] = json.dumps(_sentence(rng, rng.randint(1, 6)))
                original = (passage + "\nQuestion: " + question) if passage else question
                if not original:
                    original = passage
            for pert in perturbations:
                pname = None if pert is None else pert["name"]
                shown = original if pert is None else _perturb(original, pname, rng)
                if pert is not None:
                    values["original"] = json.dumps(original)
                if kind.name == "mc":
                    prompt = header + _mc_block(shown, choices)  # type: ignore[possibly-undefined]
                    predicted = correct if rng.random() < 0.6 else rng.randrange(len(LETTERS))
                    picks = [rng.randrange(TOKEN_POOL)]
                    output = " " + LETTERS[predicted]
                    logprob = pool.tokens[picks[0]]["logprob"]
                    tokens = _letter_tokens(output, pool.tokens[picks[0]])
                    score_values = [float(predicted == correct)] * len(metrics)
                else:
                    prompt = header + ("Input: " if header else "") + shown + "\nOutput:"
                    n_out = rng.randint(*kind.output_tokens)
                    picks = [rng.randrange(TOKEN_POOL) for _ in range(n_out)]
                    output, logprob, tokens = pool.completion(picks)
                    right = rng.random() < 0.5
                    score_values = [
                        float(right) if m in BINARY_METRICS else round(rng.random(), 6)
                        for m in metrics
                    ]
                values["input"] = json.dumps(shown)
                values["prompt"] = json.dumps(prompt)
                values["output"] = json.dumps(output)
                values["logprob"] = _num(logprob)
                values["tokens"] = tokens
                request_time = round(rng.uniform(0.05, 2.5 + len(picks) / 50), 6)
                values["request_time"] = _num(request_time)
                values["request_datetime"] = _num(base_time + i)
                if not first:
                    states.write(",\n")
                    entries.write(",\n")
                first = False
                text = states_t[pname].render(values)
                n_state_bytes += len(text) + 2
                states.write(text)
                varying: dict[str, float | int] = {
                    "ptok": len(prompt) // 4,
                    "otok": len(picks),
                    "runtime": request_time,
                    "prob": round(math.exp(max(logprob, -50.0)), 6),
                    "logprob": logprob,
                    "nbytes": len(output.encode()),
                }
                for j, (metric, score) in enumerate(zip(metrics, score_values, strict=True)):
                    varying[f"score{j}"] = int(score) if metric in BINARY_METRICS else score
                    if pert is None:
                        scores[metric].append(score)
                for hole, value in varying.items():
                    for suffix, encoded in _squares(value).items():
                        values[hole + suffix] = encoded
                entries.write(entries_t[pname].render(values))
        states.write("\n  ]\n}")
        entries.write("\n]")
    run_stats = list(fx.run_stats)
    for metric, values_ in scores.items():
        run_stats.append(_stat({"name": metric, "split": "test"}, values_))
        if plan.perturbed:
            for group in ("robustness", "fairness"):
                pert = {"name": group, "robustness": group == "robustness",
                        "fairness": group == "fairness", "computed_on": "worst"}  # fmt: skip
                run_stats.append(_stat({"name": metric, "split": "test",
                                        "perturbation": pert}, values_))  # fmt: skip
    (run_dir / "stats.json").write_text(json.dumps(run_stats, indent=2))
    n_bytes = sum((run_dir / f).stat().st_size for f in RUN_FILES)
    return GeneratedRun(plan.suite, plan.name, n_instances, n_bytes, plan.kind)


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
    # biggest first, so one huge run does not start last and run alone
    order = sorted(range(len(plans)), key=lambda i: -(plans[i].min_state_bytes or 0))
    jobs = [(str(root), plans[i]) for i in order]
    if processes > 1 and len(plans) > 1:
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(processes) as pool:
            made = pool.map(_write_one, jobs, chunksize=1)
    else:
        made = [_write_one(job) for job in jobs]
    runs = [run for _, run in sorted(zip(order, made, strict=True))]
    index = {run.name: run.suite for run in runs}
    (root / "releases" / release).mkdir(parents=True, exist_ok=True)
    (root / "releases" / release / "runs_to_run_suites.json").write_text(
        json.dumps(index, indent=2)
    )
    return Corpus(root, release, tuple(runs))


def self_check(work: Path) -> None:
    """Generated files equal ``json.dumps(json.loads(file), indent=2)``: HELM's own layout;
    every kind, with and without perturbations and top_logprobs."""
    plans = [
        RunPlan("v1.0.0", f"check_{kind}:perturbed={p},top={k},model=m", 6, "org/m", 7 + i,
                kind=kind, perturbed=p, top_k=k)
        for i, (kind, p, k) in enumerate(
            (kind, p, k) for kind in KINDS for p in (False, True) for k in (0, 1, 5)
        )
    ]  # fmt: skip
    corpus = write_corpus(work, plans, processes=1)
    for run in corpus.runs:
        for name in RUN_FILES:
            text = (corpus.run_dir(run) / name).read_text()
            if json.dumps(json.loads(text), indent=2) != text:
                raise SystemExit(f"layout differs from json.dumps(indent=2): {run.name}/{name}")
    print(f"self-check ok: {len(corpus.runs)} runs laid out as HELM writes them")


def describe(corpus: Corpus) -> str:
    """Runs, instances and bytes of the corpus by kind."""
    by_kind: dict[str, list[int]] = {}
    for run in corpus.runs:
        row = by_kind.setdefault(run.kind, [0, 0, 0])
        row[0] += 1
        row[1] += run.n_instances
        row[2] += run.n_bytes
    parts = [
        f"{kind} {n} runs/{inst:,} inst/{b / 1e6:,.0f} MB"
        for kind, (n, inst, b) in sorted(by_kind.items(), key=lambda kv: -kv[1][2])
    ]
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="benchmark_output folder to create")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="a HELM project's mix")
    parser.add_argument("--models", type=int, default=8, help="profile: models")
    parser.add_argument("--instance-scale", type=float, default=1.0, help="profile: scale counts")
    parser.add_argument("--big-mb", type=float, default=0.0, help="profile: add a run this big")
    parser.add_argument("--runs", type=int, default=10, help="uniform: number of runs")
    parser.add_argument("--instances", type=int, default=1000, help="uniform: instances per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--self-check", action="store_true", help="verify the JSON layout")
    args = parser.parse_args(argv)
    if args.self_check:
        self_check(args.out)
        return
    if args.profile:
        plans = profile_plan(
            args.profile, args.models, args.instance_scale, args.seed, big_mb=args.big_mb
        )
    else:
        plans = uniform_plan(args.runs, args.instances, args.seed)
    started = time.perf_counter()
    corpus = write_corpus(args.out, plans, processes=args.processes)
    took = time.perf_counter() - started
    print(
        f"{len(corpus.runs)} runs, {corpus.n_instances} instances, "
        f"{corpus.n_bytes / 1e6:.0f} MB in {took:.1f} s ({corpus.n_bytes / 1e6 / took:.0f} MB/s)"
        f"\n{describe(corpus)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
