"""Destination kinds: the one table from a recorded ``kind`` to the publisher class.

A job records its destination as ``publisher.config`` (JSON-able, with a ``kind``, never a
token); ``resume`` and ``verify`` rebuild the same publisher with ``publisher_from_config``.
``make_publisher`` chooses one from what the user asked for (a folder, or a Hub repo).
Stateless: nothing here survives a crash or needs to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helmproc.engine.errors import ConfigError
from helmproc.engine.publish.folder import DirPublisher, Publisher
from helmproc.engine.publish.hub import HubPublisher

PUBLISHER_KINDS: Mapping[str, Callable[[dict[str, Any]], Publisher]] = {
    DirPublisher.kind: DirPublisher.from_config,
    HubPublisher.kind: HubPublisher.from_config,
}


def publisher_from_config(config: dict[str, Any]) -> Publisher:
    """Rebuild the destination a job recorded (on resume, for verify)."""
    kind = config.get("kind")
    factory = PUBLISHER_KINDS.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ConfigError(f"unknown destination kind {kind!r} in job config")
    return factory(config)


def make_publisher(
    to: str | Path, repo_id: str | None = None, revision: str = "main", private: bool = False
) -> Publisher:
    """The destination a new job publishes to: the folder ``to``, or the Hub repo ``repo_id``
    (which needs a token: ``HF_TOKEN`` or the huggingface_hub login)."""
    if repo_id is None:
        if private or revision != "main":
            raise ConfigError("--private and --revision apply only with --repo-id")
        return DirPublisher(to)
    publisher = HubPublisher(repo_id, revision, private)
    publisher.require_token()
    publisher.require_resolvable()  # offline: fail now, before the job is planned
    return publisher


def destination_label(config: dict[str, Any]) -> str:
    """How to name a destination to the user, from its journaled config."""
    if config.get("kind") == HubPublisher.kind:
        return f"hf://datasets/{config['repo_id']}@{config.get('revision', 'main')}"
    return str(config.get("root", "?"))
