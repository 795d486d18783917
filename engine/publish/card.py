"""The dataset card (README.md) of a helmproc dataset.

Its YAML header declares one config per table, so ``datasets.load_dataset(path, "instances")``
and the Hub viewer find the shards at any time during a job. The text is derived only from the
journal's status counts (no wall clock), so an interrupted-and-resumed job ends with the same
card as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from helmproc.engine.dataset_layout import TABLES

TABLE_DESCRIPTIONS = {
    "instances": "one row per (instance, perturbation, train trial) x core metric, EEE "
    "instance-level fields plus HELM provenance",
    "evaluations": "EEE aggregate results from each run's stats.json, one row per result",
    "runs": "one row per HELM run: identity, model, scenario, method, counts, outcome",
}


def render_card(status: dict[str, Any], sources: list[str]) -> str:
    """Markdown with YAML front matter; ``status`` is a journal status report as JSON."""
    lines = ["---", "configs:"]
    for table in TABLES:
        lines += [
            f"- config_name: {table}",
            "  data_files:",
            "  - split: train",
            f"    path: {table}/**/*.parquet",
        ]
    lines += ["tags:", "- helm", "- every-eval-ever", "---", ""]
    lines += [
        "# HELM results in Every Eval Ever shapes",
        "",
        "Converted by helmproc from HELM benchmark output "
        f"({', '.join(sources)}). Records follow the Every Eval Ever 0.3.0 schemas; every row "
        "carries `helm_project`, `helm_release`, `helm_suite` and `helm_run` provenance.",
        "",
        "| config | contents |",
        "| --- | --- |",
    ]
    lines += [f"| `{t}` | {TABLE_DESCRIPTIONS[t]} |" for t in TABLES]
    runs = status.get("runs", {})
    lines += [
        "",
        "## Counts",
        "",
        f"- runs converted: {runs.get('ok', 0)}",
        f"- runs failed: {runs.get('failed', 0)}",
        f"- instance rows: {status.get('rows', 0)}",
        f"- complete: {'yes' if status.get('done') else 'no (job in progress)'}",
        "",
        "Load with `datasets.load_dataset(<this repo or folder>, \"instances\")`.",
        "",
    ]
    return "\n".join(lines)
