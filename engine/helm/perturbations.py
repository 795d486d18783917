"""A HELM perturbation's identity: its whole description, canonicalised.

HELM writes several per-instance entries for one instance and train trial whose
perturbations share a ``name`` and differ in their other fields (a ``style`` perturbation
with six ``suffix`` values, one perturbation with several ``mode``/``prob`` values). So a
perturbation is identified by its **key**: the description's fields other than
``computed_on`` (which says what a *metric* was computed on, not which perturbation it is),
fields that are null left out, as compact JSON with sorted keys, e.g.
``{"fairness":false,"name":"lowercase","robustness":true}``. The key is what the
``helm_perturbation_description`` column holds and what row keys use; :func:`label` is its
shorter text for evaluation_result_ids (``lowercase{"fairness":false,"robustness":true}``).

Pure functions with small caches keyed by the key text; no I/O.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

__all__ = ["computed_on", "key_name", "label", "perturbation_key"]

COMPUTED_ON = "computed_on"

_ENCODER = msgspec.json.Encoder(order="sorted")


def perturbation_key(description: dict[str, Any] | None) -> str | None:
    """The canonical key of a perturbation description (None for no perturbation)."""
    if description is None:
        return None
    fields = {k: v for k, v in description.items() if k != COMPUTED_ON and v is not None}
    return _ENCODER.encode(fields).decode("utf-8")


def computed_on(description: dict[str, Any] | None) -> str | None:
    """The description's ``computed_on`` (None when absent or not a string)."""
    if description is None:
        return None
    value = description.get(COMPUTED_ON)
    return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=4096)
def _fields(key: str) -> dict[str, Any]:
    fields = msgspec.json.decode(key)
    return fields if isinstance(fields, dict) else {}


def key_name(key: str | None) -> str | None:
    """The ``name`` inside a key (None for None)."""
    if key is None:
        return None
    name = _fields(key).get("name")
    return name if isinstance(name, str) else ""


@functools.lru_cache(maxsize=4096)
def label(key: str) -> str:
    """``name`` followed by the JSON of the other fields when there are any."""
    fields = dict(_fields(key))
    name = fields.pop("name", "")
    if not fields:
        return str(name)
    return f"{name}{_ENCODER.encode(fields).decode('utf-8')}"
