"""Run filters (``--adapter-method``, ``--model``, ``--include``, ``--exclude``, ``--limit``).

A ``FilteredSource`` wraps any source. Its ``config`` is the inner source's config plus a
``filters`` entry, so the filters are recorded in the journal, hashed into the job id, and
``source_from_config`` rebuilds the same filtered source in workers and on resume. Filtering
happens once, in ``discover()``, before planning; nothing is kept on disk, so a crash loses
nothing here.

Order, deterministic: ``--include``/``--exclude`` (regular expressions searched in the run
name; a run is kept if it matches any include, or none is given, and no exclude), then
``--adapter-method``/``--model`` (from the run's spec), then ``--limit N`` keeps the first N
runs in sorted order. Method and model come from the run spec, never from the run name:
sources answer ``spec_facts(refs)``; in release mode one request (or one file read) of the
release's ``run_specs.json`` covers every run, runs missing from it (and suite or bare-folder
runs) read their own ``run_spec.json``. A run whose spec cannot be read matches no
method/model filter. ``--model M`` matches ``adapter_spec.model`` or ``model_deployment``, as
written (``openai/gpt2``) or as in run names (``openai_gpt2``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from helmproc.engine.errors import ConfigError, RunConversionError
from helmproc.engine.facts import RunRef
from helmproc.engine.helm.file_names import RUN_SPEC_FILE, RUN_SPECS_INDEX
from helmproc.engine.input_files import outside_root, read_input
from helmproc.engine.safe_paths import unsafe_part

# Runs whose specs are read per batch while --limit is not yet reached.
SPEC_BATCH = 64


@dataclass(frozen=True)
class SpecFacts:
    """What the filters need from one run spec."""

    method: str | None
    model: str | None
    model_deployment: str | None

    @classmethod
    def from_spec(cls, spec: Any) -> SpecFacts | None:
        if not isinstance(spec, dict):
            return None
        adapter = spec.get("adapter_spec")
        if not isinstance(adapter, dict):
            return None

        def text(key: str) -> str | None:
            value = adapter.get(key)
            return value if isinstance(value, str) and value else None

        return cls(text("method"), text("model"), text("model_deployment"))

    def model_names(self) -> set[str]:
        names: set[str] = set()
        for value in (self.model, self.model_deployment):
            if value:
                names.update({value, value.replace("/", "_")})
        return names


@runtime_checkable
class SpecReader(Protocol):
    """A source that can tell each run's method and model."""

    def spec_facts(self, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]: ...


@dataclass(frozen=True)
class RunFilters:
    adapter_methods: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    limit: int | None = None

    def __post_init__(self) -> None:
        for flag, patterns in (("--include", self.include), ("--exclude", self.exclude)):
            for pattern in patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"{flag} {pattern!r} is not a valid regex: {exc}") from None
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")

    @classmethod
    def build(
        cls,
        *,
        adapter_methods: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> RunFilters:
        """Filters from CLI values (duplicates removed, order kept)."""

        def clean(values: Iterable[str] | None) -> tuple[str, ...]:
            return tuple(dict.fromkeys(v for v in (values or ()) if v))

        return cls(clean(adapter_methods), clean(models), clean(include), clean(exclude), limit)

    @property
    def is_empty(self) -> bool:
        return self == RunFilters()

    @property
    def needs_specs(self) -> bool:
        return bool(self.adapter_methods or self.models)

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter_methods": list(self.adapter_methods),
            "models": list(self.models),
            "include": list(self.include),
            "exclude": list(self.exclude),
            "limit": self.limit,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunFilters:
        return cls(
            tuple(data.get("adapter_methods") or ()),
            tuple(data.get("models") or ()),
            tuple(data.get("include") or ()),
            tuple(data.get("exclude") or ()),
            data.get("limit"),
        )

    # -- applying ------------------------------------------------------------------------
    def name_matches(self, run_name: str) -> bool:
        if self.include and not any(re.search(p, run_name) for p in self.include):
            return False
        return not any(re.search(p, run_name) for p in self.exclude)

    def spec_matches(self, facts: SpecFacts | None) -> bool:
        if not self.needs_specs:
            return True
        if facts is None:
            return False
        if self.adapter_methods and facts.method not in self.adapter_methods:
            return False
        return not self.models or bool(facts.model_names() & set(self.models))

    def apply(self, refs: Sequence[RunRef], reader: object) -> list[RunRef]:
        """The refs that pass, sorted, at most ``limit`` of them."""
        candidates = sorted(r for r in refs if self.name_matches(r.run_name))
        if not self.needs_specs:
            return candidates[: self.limit] if self.limit is not None else candidates
        if not isinstance(reader, SpecReader):
            raise ConfigError(
                f"this source ({type(reader).__name__}) cannot read run specs, so "
                "--adapter-method / --model cannot be used with it"
            )
        kept: list[RunRef] = []
        batch = max(SPEC_BATCH, self.limit or 0)
        for start in range(0, len(candidates), batch):
            part = candidates[start : start + batch]
            facts = reader.spec_facts(part)
            kept.extend(r for r in part if self.spec_matches(facts.get(r)))
            if self.limit is not None and len(kept) >= self.limit:
                return kept[: self.limit]
        return kept


class FilteredSource:
    """``inner`` with only the runs that pass ``filters`` (see the module docstring)."""

    def __init__(self, inner: Any, filters: RunFilters) -> None:
        self.inner = inner
        self.filters = filters

    @property
    def config(self) -> dict[str, Any]:
        return {**self.inner.config, "filters": self.filters.to_json()}

    def discover(self) -> list[RunRef]:
        return self.filters.apply(self.inner.discover(), self.inner)

    def input_sizes(self, ref: RunRef) -> str | None:
        """The inner source's ``input_sizes`` where it has one (a local folder)."""
        sizes = getattr(self.inner, "input_sizes", None)
        return sizes(ref) if sizes is not None else None

    def fetch(self, ref: RunRef, scratch: Path, *, max_file_bytes: int | None = None) -> Path:
        path: Path = self.inner.fetch(ref, scratch, max_file_bytes=max_file_bytes)
        return path

    def schema_for(self, ref: RunRef) -> Any:
        """The inner source's ``schema.json`` for ``ref`` (see ``folder.schema_of``)."""
        reader = getattr(self.inner, "schema_for", None)
        return reader(ref) if reader is not None else None


def local_spec_facts(root: Path, refs: Sequence[RunRef]) -> dict[RunRef, SpecFacts | None]:
    """Spec facts of runs in a local ``benchmark_output/`` (or bare folder) at ``root``.

    Release refs use ``releases/<R>/run_specs.json`` (read once per release); others, and
    runs the index lacks, read ``<location>/run_spec.json``.
    """
    by_release: dict[str, dict[str, SpecFacts | None]] = {}
    out: dict[RunRef, SpecFacts | None] = {}
    for ref in refs:
        facts: SpecFacts | None = None
        if ref.release is not None:
            if ref.release not in by_release:
                by_release[ref.release] = _read_specs_index(
                    root / "releases" / ref.release / RUN_SPECS_INDEX, root
                )
            facts = by_release[ref.release].get(ref.run_name)
        if facts is None and unsafe_part(ref.location) is None:  # never read outside root
            facts = _read_spec(root / ref.location / RUN_SPEC_FILE, root)
        out[ref] = facts
    return out


def facts_by_name(specs: Any) -> dict[str, SpecFacts | None]:
    """Run name -> facts from a decoded ``run_specs.json`` (a list of run specs)."""
    out: dict[str, SpecFacts | None] = {}
    if isinstance(specs, list):
        for spec in specs:
            if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                out.setdefault(spec["name"], SpecFacts.from_spec(spec))
    return out


def _read_specs_index(path: Path, root: Path) -> dict[str, SpecFacts | None]:
    data = _read_contained(path, root)
    try:
        return {} if data is None else facts_by_name(json.loads(data))
    except (ValueError, RecursionError):
        return {}


def _read_spec(path: Path, root: Path) -> SpecFacts | None:
    data = _read_contained(path, root)
    try:
        return None if data is None else SpecFacts.from_spec(json.loads(data))
    except (ValueError, RecursionError, AttributeError):
        return None


def _read_contained(path: Path, root: Path) -> bytes | None:
    """The file's bytes if it is a regular file inside ``root`` (``input_files``), else None:
    the filters then know nothing of the run, and converting it says what is wrong."""
    if outside_root(path, root):
        return None
    try:
        return read_input(path)
    except (OSError, RunConversionError):
        return None
