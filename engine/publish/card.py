"""The dataset card (README.md): it describes the dataset the destination holds, not the job.

Everything in it is recomputed from the destination (``ledger.py``: the ``runs`` and
``releases`` tables, plus the headline rows of ``evaluations`` for the results table), so
any job that ends leaves the same card for the same dataset, whichever job it was. It holds no
local path (a local source is named by its folder name) and no credentials (an http source is
named by its host and path only). Its YAML header carries what the Hub reads: ``configs``
(``instances`` is the default, so ``load_dataset(repo)`` needs no config name), license,
pretty name, size category, tags. Time in it is the newest ``converted_at`` of the runs, never
the wall clock, so a job that found nothing new renders the same bytes and writes nothing.
Nothing here writes; a crash mid-render needs no repair.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from helmproc.engine.convert.schemas import (
    EVALUATIONS_SCHEMA,
    INSTANCES_SCHEMA,
    RELEASES_SCHEMA,
    RUNS_SCHEMA,
)
from helmproc.engine.publish.folder import Publisher
from helmproc.engine.publish.ledger import Ledger, ReleaseRow, read_tables
from helmproc.engine.url_secrets import strip_credentials

DEFAULT_CONFIG = "instances"
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "instances": INSTANCES_SCHEMA,
    "evaluations": EVALUATIONS_SCHEMA,
    "runs": RUNS_SCHEMA,
    "releases": RELEASES_SCHEMA,
}
TABLE_DESCRIPTIONS = {
    "instances": "one row per (instance, perturbation, train trial) x core metric, EEE "
    "instance-level fields plus HELM provenance",
    "evaluations": "EEE aggregate results from each run's stats.json, one row per result",
    "runs": "one row per HELM run: identity, model, scenario, method, counts, source sizes and "
    "checksum, outcome (the dataset's ledger)",
    "releases": "one row per (project, release, suite, run): the runs each HELM release lists",
}
TOP_MODELS = 3
MAX_SCENARIOS = 40
EVAL_COLUMNS = [
    "helm_project", "helm_suite", "helm_run", "model_id", "evaluation_name", "metric_name",
    "split", "perturbation", "score", "lower_is_better",
]
HELM_CITATION = """@article{liang2023holistic,
  title={Holistic Evaluation of Language Models},
  author={Liang, Percy and Bommasani, Rishi and Lee, Tony and others},
  journal={Transactions on Machine Learning Research},
  year={2023},
  note={arXiv:2211.09110}
}"""
EEE_CITATION = """@misc{every_eval_ever,
  title={Every Eval Ever: a common schema for evaluation results},
  howpublished={\\url{https://github.com/evaleval/every_eval_ever}},
  note={schema version 0.3.0}
}"""


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"),
              (1_000_000_000, "100M<n<1B")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "1B<n<10B"


def source_label(config: Mapping[str, Any]) -> str:
    """A source as the card names it: a folder by its name, a URL without credentials,
    query or fragment; several sources joined."""
    parts = config.get("parts")
    if isinstance(parts, list):
        return ", ".join(source_label(p) for p in parts)
    root = config.get("root")
    if root:
        return f"a local HELM output folder `{PurePosixPath(str(root)).name}`"
    url = config.get("base_url")
    if url:
        split = urlsplit(strip_credentials(str(url)))
        return f"{split.scheme}://{split.netloc}{split.path}"  # no query or fragment
    return "HELM output"


def ok_runs(ledger: Ledger) -> list[dict[str, Any]]:
    """One row per run held ok (the first ok row of each identity, by group)."""
    seen: set[tuple[str, str, str]] = set()
    out: list[dict[str, Any]] = []
    runs = ledger.runs.sort_by([("group", "ascending")]) if ledger.runs.num_rows else ledger.runs
    for row in runs.to_pylist():
        key = (row["helm_project"], row["helm_suite"], row["helm_run"])
        if row["outcome"] != "ok" or key in seen:
            continue
        seen.add(key)
        out.append(row)
    return out


def failed_only(ledger: Ledger) -> int:
    return sum(1 for s in ledger.runs_by_key.values() if s.outcome != "ok")


def headline_results(
    publisher: Publisher, ledger: Ledger, local: Mapping[str, pa.Table] | None = None
) -> list[tuple[str, str, list[str]]]:
    """Per scenario (``evaluation_name``): its headline metric (the first metric of its
    unperturbed results, in the order HELM's schema lists them) and the top models by it,
    read from the ``evaluations`` table (only the columns needed; ``local``: files of the
    table already in hand, by path, not read again)."""
    local = local or {}
    paths = [p for p in ledger.files_of("evaluations") if p not in local]
    if not paths and not local:
        return []
    held = {(r["helm_project"], r["helm_suite"], r["helm_run"]) for r in ok_runs(ledger)}
    headline: dict[str, str] = {}
    best: dict[str, dict[str, float]] = defaultdict(dict)
    lower: dict[str, bool] = {}
    tables = read_tables(publisher, paths, EVALUATIONS_SCHEMA, EVAL_COLUMNS)
    for table in [*tables, *(t.select(EVAL_COLUMNS) for t in local.values())]:
        for row in table.to_pylist():
            if (row["helm_project"], row["helm_suite"], row["helm_run"]) not in held:
                continue
            if row["perturbation"] is not None:
                continue
            name = row["evaluation_name"]
            metric = headline.setdefault(name, row["metric_name"])
            if row["metric_name"] != metric:
                continue
            lower[name] = bool(row["lower_is_better"])
            score = row["score"]
            model = row["model_id"]
            old = best[name].get(model)
            if old is None or (score < old if lower[name] else score > old):
                best[name][model] = score
    out = []
    for name in sorted(best)[:MAX_SCENARIOS]:
        ranked = sorted(
            best[name].items(), key=lambda kv: (kv[1] if lower[name] else -kv[1], kv[0])
        )
        out.append((name, headline[name], [f"{m} ({s:.3f})" for m, s in ranked[:TOP_MODELS]]))
    return out


def columns_of(schema: pa.Schema) -> str:
    return ", ".join(f"`{f.name}`" for f in schema)


def dataset_card(
    publisher: Publisher,
    ledger: Ledger,
    source_config: Mapping[str, Any],
    extra_releases: Iterable[ReleaseRow] = (),
    local_evaluations: Mapping[str, pa.Table] | None = None,
) -> str:
    """The card of the dataset ``ledger`` describes (plus releases rows about to land);
    ``local_evaluations``: evaluations files the caller has in hand (path -> table)."""
    return render_card(
        ok_runs(ledger),
        failed_only(ledger),
        set(ledger.releases) | set(extra_releases),
        headline_results(publisher, ledger, local_evaluations),
        source_label(source_config),
    )


def render_card(
    runs: Sequence[Mapping[str, Any]],
    n_failed: int,
    releases: set[ReleaseRow],
    results: Sequence[tuple[str, str, list[str]]],
    source: str,
) -> str:
    """Markdown with YAML front matter, from the dataset's own tables."""
    n_rows = sum(int(r["n_rows"] or 0) for r in runs)
    n_evals = sum(int(r["n_evaluations"] or 0) for r in runs)
    models = sorted({r["model"] for r in runs if r["model"]})
    stamps = [r["converted_at"] for r in runs if r.get("converted_at")]
    updated = (
        datetime.fromtimestamp(int(max(stamps, key=int)), UTC).strftime("%Y-%m-%d %H:%M UTC")
        if stamps and all(s.isdigit() for s in stamps)
        else "unknown"
    )
    lines = ["---", "configs:"]
    for table in TABLE_SCHEMAS:
        lines += [f"- config_name: {table}"]
        if table == DEFAULT_CONFIG:
            lines += ["  default: true"]
        lines += [
            "  data_files:",
            "  - split: train",
            f"    path: {table}/**/*.parquet",
        ]
    lines += [
        "license: other",
        "license_name: helm-scenario-licenses",
        "license_link: https://github.com/stanford-crfm/helm",
        "pretty_name: HELM results in Every Eval Ever shapes",
        "size_categories:",
        f"- {size_category(n_rows)}",
        "task_categories:",
        "- text-generation",
        "tags:",
        "- helm",
        "- every-eval-ever",
        "- evaluation",
        "---",
        "",
        "# HELM results in Every Eval Ever shapes",
        "",
        f"HELM benchmark output from {source}, converted by helmproc into the Every Eval Ever "
        "0.3.0 record shapes.",
        "",
        "| config | contents |",
        "| --- | --- |",
    ]
    lines += [f"| `{t}` | {TABLE_DESCRIPTIONS[t]} |" for t in TABLE_SCHEMAS]
    lines += [
        "",
        "`load_dataset(<this repo>)` loads `instances`; name another config for the others, "
        "e.g. `load_dataset(<this repo>, \"evaluations\")`.",
        "",
        "## Contents",
        "",
        f"- runs: {len(runs)} converted, {n_failed} failed (listed in `runs` with the reason)",
        f"- instance rows: {n_rows}",
        f"- evaluation rows: {n_evals}",
        f"- models: {len(models)}",
        f"- last update: {updated}",
        "",
    ]
    by_project = Counter(r["helm_project"] for r in runs)
    by_release = Counter((p, rel) for p, rel, _, _ in releases)
    lines += ["| project | runs | release | runs listed |", "| --- | --- | --- | --- |"]
    for project in sorted(by_project):
        rels = sorted(rel for p, rel in by_release if p == project) or ["-"]
        for i, rel in enumerate(rels):
            listed = by_release.get((project, rel), 0) if rel != "-" else "-"
            lines.append(
                f"| {project if i == 0 else ''} | {by_project[project] if i == 0 else ''} | "
                f"{rel} | {listed} |"
            )
    if models:
        lines += ["", "Models: " + ", ".join(f"`{m}`" for m in models), ""]
    if results:
        lines += [
            "",
            "## Results (headline metric, top models)",
            "",
            "| scenario | metric | top models |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {name} | {metric} | {', '.join(top)} |" for name, metric, top in results]
    lines += [
        "",
        "## Provenance columns",
        "",
        "Every row of `instances`, `evaluations` and `runs` carries `helm_project`, "
        "`helm_suite` and `helm_run` (a run's identity) and `helm_release`: the release the run "
        "was listed under when it was converted, or null when it was read from a suite. A run "
        "is converted once per dataset, however many releases list it; which runs each release "
        "lists is the `releases` table, so select a release by joining on it, not by "
        "`helm_release`.",
        "",
        "## Columns",
        "",
    ]
    for table, schema in TABLE_SCHEMAS.items():
        lines += [f"- `{table}`: {columns_of(schema)}"]
    lines += [
        "",
        "## License",
        "",
        "HELM is Apache-2.0; the instances come from each scenario's own dataset and keep that "
        "dataset's license.",
        "",
        "## Citation",
        "",
        "HELM:",
        "",
        "```bibtex",
        HELM_CITATION,
        "```",
        "",
        "Every Eval Ever:",
        "",
        "```bibtex",
        EEE_CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)
