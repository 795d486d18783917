"""Retrying remote calls: the one backoff policy of the HELM bucket client
(``sources/http_client.py``) and the Hugging Face Hub (``publish/hub_failures.py``), and the
one ``Retry-After`` parser.

Backoff is exponential with full jitter: after the n-th failure wait a uniform share of
``min(max_delay_s, base_delay_s * 2**(n-1))``, so that workers retrying at once spread out.
A wait the server asked for (``Retry-After``, a rate-limit reset) is honoured instead when
longer (the callers' loops decide). Nothing here touches disk: a crash mid-retry loses only the
wait. Shared vocabulary: imports nothing from helmproc.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    base_delay_s: float
    max_delay_s: float
    # the share of the ceiling to wait, in [0, 1); tests pin it to 1.0 to see the ceilings
    jitter: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def ceiling_s(self, failures: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * (2 ** max(failures - 1, 0)))

    def delay_s(self, failures: int) -> float:
        """The wait after the ``failures``-th consecutive failure (1-based)."""
        return self.jitter() * self.ceiling_s(failures)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
