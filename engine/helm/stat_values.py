"""How HELM's numbers become the values helmproc stores: small pure helpers.

A ``Stat``'s value is its ``mean``, else ``sum / count``; a stat with ``count == 0`` or a value
that is not finite (old HELM wrote bare ``NaN``) has no value and gives no row. Counts and
token sums are rounded to int64 and dropped (None) when absent, not finite or out of range.
No I/O, no state.
"""

from __future__ import annotations

import math

from helmproc.engine.helm.run_files import Stat

__all__ = ["finite", "finite_int", "stat_value"]


def stat_value(stat: Stat) -> float | None:
    """The stat's mean (else sum / count); None when count is 0 or the value is not finite."""
    if stat.count <= 0:
        return None
    value = stat.mean
    if value is None and stat.sum is not None:
        value = stat.sum / stat.count
    if value is None or not math.isfinite(value):
        return None
    return value


def finite_int(value: float | None) -> int | None:
    """``value`` rounded to an int64, or None if it is absent, not finite or out of range."""
    if value is None or not math.isfinite(value) or abs(value) >= 2**63:
        return None
    return int(round(value))


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
