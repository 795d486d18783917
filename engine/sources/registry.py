"""Source kinds: the one table from a recorded ``kind`` to the class that rebuilds the source.

A job records its source as ``source.config`` (a JSON-able dict with a ``kind``); workers and
``resume`` rebuild the same source from it with ``source_from_config``. A new kind of source is
one class with ``kind``, ``config`` and ``from_config`` plus one line in ``SOURCE_KINDS``.
Stateless: nothing here survives a crash or needs to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from helmproc.engine.errors import ConfigError
from helmproc.engine.sources.bucket import HttpSource
from helmproc.engine.sources.filters import FilteredSource, RunFilters
from helmproc.engine.sources.folder import DirSource, MultiSource, Source


def _multi_from_config(config: dict[str, Any]) -> Source:
    return MultiSource([source_from_config(part) for part in config["parts"]])


SOURCE_KINDS: Mapping[str, Callable[[dict[str, Any]], Source]] = {
    DirSource.kind: DirSource.from_config,
    HttpSource.kind: HttpSource.from_config,
    MultiSource.kind: _multi_from_config,
}


def source_from_config(config: dict[str, Any]) -> Source:
    """Rebuild a source from its recorded config (in a worker, or on resume)."""
    if config.get("filters") is not None:
        inner = source_from_config({k: v for k, v in config.items() if k != "filters"})
        return FilteredSource(inner, RunFilters.from_json(config["filters"]))
    kind = config.get("kind")
    factory = SOURCE_KINDS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ConfigError(f"unknown source kind {kind!r} in job config")
    return factory(config)
