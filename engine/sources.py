"""Sources: where HELM runs come from. ``DirSource`` reads a local ``benchmark_output/``.

A source has two jobs: ``discover()`` lists the runs of the job as ``RunRef`` values in a
deterministic order (the planner relies on it), and ``fetch(ref, scratch)`` returns a local
directory holding that run's JSON files. A source is rebuilt inside each worker from its
``config`` (a small JSON-able dict recorded in the journal), so it must not hold open
resources across pickling. Sources keep no state on disk, so a crash loses nothing here.

DirSource modes, chosen from what ``root`` holds:
- release mode (``release`` given, or ``root/releases/`` exists; newest release by version):
  ``releases/<R>/runs_to_run_suites.json`` maps each run name to its suite, files under
  ``runs/<suite>/<run>/``;
- suite mode (``suite`` given, or ``root/runs/`` without releases: every suite in turn):
  every run directory in ``runs/<S>/``;
- bare folder: ``root`` itself holds run directories. Their names may differ from the run
  name (e.g. ``:`` replaced by ``-``), so the run name is read from each ``run_spec.json``.

Other sources: ``HttpSource`` (``http_source.py``, the bucket), ``MultiSource`` (several
projects in one job), and any of them wrapped in a ``FilteredSource`` (``run_filters.py``),
whose filters are part of the recorded config.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from helmproc.engine.errors import ConfigError, RunConversionError, SourceError
from helmproc.engine.run_filters import FilteredSource, RunFilters, SpecFacts, local_spec_facts
from helmproc.engine.runs import RunRef

# Directory names HELM writes next to run directories that are not runs.
NON_RUN_DIRS = frozenset({"eval_cache", "groups"})
RUNS_INDEX = "runs_to_run_suites.json"
DEFAULT_LOCAL_PROJECT = "local"


class Source(Protocol):
    """What the pipeline needs from any source of HELM runs."""

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able description from which ``source_from_config`` rebuilds this source."""
        ...

    def discover(self) -> list[RunRef]:
        """All runs of the job, deterministic order, no duplicate identities."""
        ...

    def fetch(self, ref: RunRef, scratch: Path) -> Path:
        """A local directory with the run's files; downloads (if any) go under ``scratch``."""
        ...


def version_key(name: str) -> tuple[Any, ...]:
    """Sort key comparing release names numerically: v1.10.0 > v1.9.0 > v1.9.0-rc."""
    parts = re.findall(r"\d+|[A-Za-z]+", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def newest_release(names: list[str]) -> str:
    if not names:
        raise SourceError("no releases found")
    return max(names, key=version_key)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and path.name not in NON_RUN_DIRS and (path / "run_spec.json").exists()


class DirSource:
    """HELM runs in a local directory (see module docstring for the three modes)."""

    kind = "dir"

    def __init__(
        self,
        root: str | Path,
        *,
        project: str | None = None,
        release: str | None = None,
        suite: str | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.project = project or DEFAULT_LOCAL_PROJECT
        if release and suite:
            raise ConfigError("give either --release or --suite, not both")
        if not self.root.is_dir():
            raise ConfigError(f"source directory not found: {self.root}")
        self.release = release
        self.suite = suite

    @property
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "root": str(self.root),
            "project": self.project,
            "release": self.release,
            "suite": self.suite,
        }

    # -- discovery -----------------------------------------------------------------------
    def discover(self) -> list[RunRef]:
        if self.release is not None:
            return self._release_runs(self.release)
        if self.suite is not None and (self.root / "runs").is_dir():
            return self._suite_runs(self.suite)
        releases_dir = self.root / "releases"
        if releases_dir.is_dir() and any(releases_dir.iterdir()):
            names = [p.name for p in releases_dir.iterdir() if (p / RUNS_INDEX).exists()]
            return self._release_runs(newest_release(names))
        runs_dir = self.root / "runs"
        if runs_dir.is_dir():
            refs: list[RunRef] = []
            for suite_dir in sorted(runs_dir.iterdir()):
                if suite_dir.is_dir():
                    refs.extend(self._suite_runs(suite_dir.name))
            return refs
        return self._bare_runs()

    def _release_runs(self, release: str) -> list[RunRef]:
        index = self.root / "releases" / release / RUNS_INDEX
        try:
            mapping = json.loads(index.read_bytes())
        except FileNotFoundError:
            raise SourceError(
                f"release {release!r} has no {RUNS_INDEX} under {self.root}"
            ) from None
        except ValueError as exc:
            raise SourceError(f"{index}: not valid JSON ({exc})") from None
        if not isinstance(mapping, dict):
            raise SourceError(f"{index}: expected an object of run name -> suite")
        refs = [
            RunRef(self.project, str(suite), str(name), release, f"runs/{suite}/{name}")
            for name, suite in mapping.items()
        ]
        return sorted(refs)

    def _suite_runs(self, suite: str) -> list[RunRef]:
        suite_dir = self.root / "runs" / suite
        if not suite_dir.is_dir():
            raise SourceError(f"suite {suite!r} not found: {suite_dir}")
        return sorted(
            RunRef(self.project, suite, p.name, None, f"runs/{suite}/{p.name}")
            for p in suite_dir.iterdir()
            if is_run_dir(p)
        )

    def _bare_runs(self) -> list[RunRef]:
        suite = self.suite or self.root.name
        refs: dict[tuple[str, str, str], RunRef] = {}
        for p in sorted(self.root.iterdir()):
            if not is_run_dir(p):
                continue
            name = run_name_from_spec(p) or p.name
            ref = RunRef(self.project, suite, name, None, p.name)
            refs.setdefault((ref.project, ref.suite, ref.run_name), ref)
        if not refs:
            raise SourceError(
                f"no HELM runs under {self.root}: expected releases/, runs/ or run directories "
                "holding run_spec.json"
            )
        return sorted(refs.values())

    # -- fetching ------------------------------------------------------------------------
    def fetch(self, ref: RunRef, scratch: Path) -> Path:
        run_dir = self.root / ref.location
        if not run_dir.is_dir():
            raise RunConversionError(ref.location, "run directory is missing from the source")
        return run_dir

    def spec_facts(self, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]:
        """Method and model of each run, for the run filters (see ``run_filters``)."""
        return local_spec_facts(self.root, refs)


class MultiSource:
    """Several sources (one per project, e.g. several ``--benchmark``) as one job."""

    kind = "multi"

    def __init__(self, parts: Sequence[Source]) -> None:
        self.parts = list(parts)
        self._by_project: dict[str, Source] = {}
        for part in self.parts:
            project = part.config.get("project")
            if not isinstance(project, str) or project in self._by_project:
                raise ConfigError(f"each source of a job needs its own project, got {project!r}")
            self._by_project[project] = part

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"kind": self.kind, "parts": [p.config for p in self.parts]}
        for key in ("root", "base_url"):  # shown in the dataset card when the parts share it
            values = {p.config.get(key) for p in self.parts}
            if len(values) == 1 and None not in values:
                config[key] = values.pop()
        return config

    def discover(self) -> list[RunRef]:
        refs: dict[tuple[str, str, str], RunRef] = {}
        for part in self.parts:
            for ref in part.discover():
                refs.setdefault((ref.project, ref.suite, ref.run_name), ref)
        return sorted(refs.values())

    def _part(self, ref: RunRef) -> Source:
        try:
            return self._by_project[ref.project]
        except KeyError:
            reason = f"no source for project {ref.project!r}"
            raise RunConversionError(ref.location, reason) from None

    def fetch(self, ref: RunRef, scratch: Path) -> Path:
        return self._part(ref).fetch(ref, scratch)

    def spec_facts(self, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]:
        out: dict[RunRef, SpecFacts | None] = {}
        for project, part in self._by_project.items():
            mine = [r for r in refs if r.project == project]
            reader = getattr(part, "spec_facts", None)
            if mine and reader is not None:
                out.update(reader(mine))
        return out


def run_name_from_spec(run_dir: Path) -> str | None:
    """The ``name`` recorded in a run's run_spec.json, or None if it cannot be read."""
    try:
        name = json.loads((run_dir / "run_spec.json").read_bytes()).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def source_from_config(config: dict[str, Any]) -> Source:
    """Rebuild a source from its recorded config (in a worker, or on resume)."""
    if config.get("filters") is not None:
        inner = source_from_config({k: v for k, v in config.items() if k != "filters"})
        return FilteredSource(inner, RunFilters.from_json(config["filters"]))
    kind = config.get("kind")
    if kind == "http":
        from helmproc.engine.http_source import HttpSource  # imports this module

        return HttpSource.from_config(config)
    if kind == MultiSource.kind:
        return MultiSource([source_from_config(part) for part in config["parts"]])
    if kind == DirSource.kind:
        return DirSource(
            config["root"],
            project=config.get("project"),
            release=config.get("release"),
            suite=config.get("suite"),
        )
    raise ConfigError(f"unknown source kind {kind!r} in job config")
