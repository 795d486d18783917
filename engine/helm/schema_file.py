"""Typed view of a HELM ``schema.json``: which metric is the headline of each run group.

``helm-summarize`` writes ``releases/<R>/schema.json`` (and, since v0.4.0, ``runs/<S>/schema.json``
for a suite): the run groups (``run_groups[]``) with their ``environment`` (``main_name``,
``main_split``) and the metric groups they show (``metric_groups``); the metric groups
(``metric_groups[]``) whose entries name a metric, possibly as ``${main_name}``, a split
(``${main_split}``) and a perturbation name; and the metrics (``metrics[]``) with their
``lower_is_better``. Only those fields are declared; everything else is skipped while parsing.

:func:`parse_schema` decodes the file's bytes once (a source reads it once per job and worker,
see ``sources``); a malformed file raises :class:`RunConversionError` naming it. Pure: no I/O,
nothing to repair after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from helmproc.engine.errors import RunConversionError
from helmproc.engine.helm.run_files import decode_json

__all__ = ["SCHEMA_FILE", "HelmSchema", "MetricGroup", "MetricMatcher", "RunGroup", "parse_schema"]

SCHEMA_FILE = "schema.json"
# The placeholders a metric group's entry may use for the run group's environment.
MAIN_NAME = "${main_name}"
MAIN_SPLIT = "${main_split}"


class MetricMatcher(msgspec.Struct, frozen=True, gc=False):
    """One entry of a metric group: a metric (or ``${main_name}``), split, perturbation."""

    name: str
    split: str | None = None
    perturbation_name: str | None = None


class MetricGroup(msgspec.Struct, frozen=True, gc=False):
    name: str
    metrics: list[MetricMatcher] = []


class RunGroup(msgspec.Struct, frozen=True, gc=False):
    name: str
    environment: dict[str, Any] = {}
    metric_groups: list[str] = []


class SchemaMetric(msgspec.Struct, frozen=True, gc=False):
    name: str
    lower_is_better: bool | None = None


class _SchemaFile(msgspec.Struct, gc=False):
    metrics: list[SchemaMetric] = []
    metric_groups: list[MetricGroup] = []
    run_groups: list[RunGroup] = []


@dataclass(frozen=True, eq=False)
class HelmSchema:
    """A parsed ``schema.json``; ``where`` names the file (``releases/v1.1.0/schema.json``).
    Compared and hashed by identity (selections are cached per schema object)."""

    where: str
    run_groups: dict[str, RunGroup] = field(default_factory=dict)
    metric_groups: dict[str, MetricGroup] = field(default_factory=dict)
    lower_is_better: dict[str, bool] = field(default_factory=dict)

    def headline(self, group: RunGroup) -> str | None:
        """The group's ``main_name`` (None when absent, empty or HELM's ``"none"``)."""
        name = group.environment.get("main_name")
        return name if isinstance(name, str) and name and name != "none" else None

    def shown_metrics(
        self, group: RunGroup, skip: Callable[[str], bool] = lambda _: False
    ) -> list[MetricMatcher]:
        """The entries of the group's metric groups (but those named by ``skip``),
        ``${main_name}`` replaced by the headline (entries needing a headline the group
        lacks are left out)."""
        headline = self.headline(group)
        entries = []
        for group_name in group.metric_groups:
            if skip(group_name):
                continue
            metric_group = self.metric_groups.get(group_name)
            if metric_group is None:
                continue
            for matcher in metric_group.metrics:
                if matcher.name == MAIN_NAME:
                    if headline is None:
                        continue
                    matcher = MetricMatcher(headline, matcher.split, matcher.perturbation_name)
                entries.append(matcher)
        return entries


def parse_schema(data: bytes, where: str) -> HelmSchema:
    """Decode ``schema.json`` bytes (``where`` names the file in errors)."""
    if not data.strip():
        raise RunConversionError(where, "malformed JSON: empty file")
    parsed = decode_json(data, _SchemaFile, where)
    return HelmSchema(
        where=where,
        run_groups={g.name: g for g in parsed.run_groups},
        metric_groups={g.name: g for g in parsed.metric_groups},
        lower_is_better={
            m.name: m.lower_is_better for m in parsed.metrics if m.lower_is_better is not None
        },
    )
