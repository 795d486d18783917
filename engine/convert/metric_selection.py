"""Which HELM metrics of a run become rows and results: HELM's own choice, per run.

Rules (the design's "Which metrics"):

- **Rows** (``instances``) and **results** (``evaluations``): the EEE core list
  (:func:`eee_fields.is_core_metric`) plus the headline metric (``environment.main_name``) of
  every run group in the run's ``run_spec.groups``.
- **Results only**: also every metric the groups' metric groups show (calibration,
  robustness, fairness, bias, toxicity, task-specific metric groups), ``${main_name}``
  replaced by the headline, except bookkeeping groups (:data:`BOOKKEEPING_GROUPS`: token
  counts, runtimes, costs, annotator success). A shown metric is kept under every split and
  perturbation ``stats.json`` has for it.
- **Where the facts come from** (:attr:`MetricSelection.source`): the release's or suite's
  ``schema.json`` when it declares at least one of the run's groups (``"schema"``); else the
  built-in table of HELM's published headlines (:mod:`helm_headlines`, ``"builtin"``; no
  metric groups there); else the core list alone (``"core"``).
- **Direction**: ``lower_is_better`` of the schema's ``metrics[]``, else of the built-in
  table, else unknown (None).

A selection depends only on the run's groups and the schema, so it is cached per
(schema, groups). Pure: no I/O, nothing to repair after a crash.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from helmproc.engine.convert import eee_fields as eee
from helmproc.engine.convert import helm_headlines
from helmproc.engine.helm.schema_file import HelmSchema

__all__ = ["BOOKKEEPING_GROUPS", "MetricSelection", "select_metrics"]

BOOKKEEPING_GROUPS = frozenset({"general_information", "annotation_metrics"})

SOURCE_SCHEMA = "schema"
SOURCE_BUILTIN = "builtin"
SOURCE_CORE = "core"


def _is_bookkeeping(group_name: str) -> bool:
    return group_name in BOOKKEEPING_GROUPS or "efficiency" in group_name


@dataclass(frozen=True)
class MetricSelection:
    """The metrics one run keeps beyond the core list, and where that choice came from."""

    source: str  # "schema", "builtin" or "core"
    where: str | None = None  # the schema file that decided (source "schema")
    headlines: frozenset[str] = frozenset()
    shown: frozenset[str] = frozenset()
    directions: tuple[tuple[str, bool], ...] = ()

    def is_row_metric(self, name: str) -> bool:
        """A metric whose per-instance stats become ``instances`` rows."""
        return eee.is_core_metric(name) or name in self.headlines

    def is_result_metric(self, name: str) -> bool:
        """A metric whose ``stats.json`` entries become ``evaluations`` results."""
        return self.is_row_metric(name) or name in self.shown

    @functools.cached_property
    def _directions(self) -> dict[str, bool]:
        return dict(self.directions)

    def lower_is_better(self, name: str) -> bool | None:
        """The metric's direction: schema, else built-in table, else None (unknown)."""
        found = self._directions.get(name)
        if found is not None:
            return found
        if name in helm_headlines.LOWER_IS_BETTER:
            return True
        if name in helm_headlines.HIGHER_IS_BETTER:
            return False
        return None

    @property
    def description(self) -> str:
        """What the ``runs`` table records: ``schema:<file>``, ``builtin`` or ``core``."""
        return f"{self.source}:{self.where}" if self.where else self.source


CORE_ONLY = MetricSelection(SOURCE_CORE)


def select_metrics(groups: Sequence[str], schema: HelmSchema | None) -> MetricSelection:
    """The selection for a run in run groups ``groups`` (see the module docstring)."""
    return _select(tuple(groups), schema)


@functools.lru_cache(maxsize=256)
def _select(groups: tuple[str, ...], schema: HelmSchema | None) -> MetricSelection:
    if schema is not None:
        declared = [schema.run_groups[g] for g in groups if g in schema.run_groups]
        if declared:
            headlines = {h for g in declared if (h := schema.headline(g)) is not None}
            shown = {
                matcher.name
                for g in declared
                for matcher in schema.shown_metrics(g, skip=_is_bookkeeping)
            }
            directions = tuple(sorted(schema.lower_is_better.items()))
            return MetricSelection(
                SOURCE_SCHEMA, schema.where, frozenset(headlines), frozenset(shown), directions
            )
    builtin = {h for g in groups for h in helm_headlines.HEADLINES.get(g, ())}
    if builtin:
        return MetricSelection(SOURCE_BUILTIN, None, frozenset(builtin))
    return CORE_ONLY
