"""Commit pacing: a token bucket that keeps a destination under N commits in any hour.

The bucket starts full with ``burst`` tokens (so the first commits, and the first shard, go out
at once) and refills at ``(commits_per_hour - burst)`` tokens per hour, so no 60-minute window
ever holds more than ``commits_per_hour`` commits. The committer takes a token before each
commit and, while it waits for one, keeps gathering shards into the batch: slow pacing makes
bigger commits, not a backlog of small ones. ``commits_per_hour=None`` means no pacing (a local
folder).

Across a crash: the bucket lives in memory only. A resumed job starts with a full bucket, which
can put at most ``burst`` extra commits into the hour of the crash; the Hub's own 429 (handled
by HubPublisher's retry loop) covers that edge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_HUB_COMMITS_PER_HOUR = 100.0
MAX_BURST = 8


class CommitPacer:
    def __init__(
        self,
        commits_per_hour: float | None,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.commits_per_hour = commits_per_hour
        self._clock = clock
        self._lock = threading.Lock()
        if commits_per_hour is None:
            self.burst = 0
            self._rate_per_s = float("inf")
        else:
            if commits_per_hour <= 0:
                raise ValueError("commits per hour must be positive")
            default_burst = max(1, min(MAX_BURST, int(commits_per_hour // 10)))
            self.burst = max(1, burst if burst is not None else default_burst)
            refill = max(commits_per_hour - self.burst, commits_per_hour / 2)
            self._rate_per_s = refill / 3600.0
        self._tokens = float(self.burst)
        self._at = clock()

    @property
    def unlimited(self) -> bool:
        return self.commits_per_hour is None

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self._rate_per_s)
        self._at = now

    def wait_s(self) -> float:
        """Seconds until a commit may start (0 when one may start now)."""
        if self.unlimited:
            return 0.0
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                return 0.0
            return (1.0 - self._tokens) / self._rate_per_s

    def take(self) -> None:
        """Spend one token (call right before a commit that ``wait_s`` allowed)."""
        if self.unlimited:
            return
        with self._lock:
            self._refill()
            self._tokens -= 1.0
