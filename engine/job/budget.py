"""The memory and disk budget: measure the process tree, admit chunks that fit.

Memory is measured with psutil over the whole tree (this coordinator and every descendant),
counting each process's unique set size (USS: pages no other process shares, so the forkserver's
shared pages are not counted once per worker) where the platform offers it, RSS otherwise. A
chunk is admitted when the tree's current use, plus what the chunks already running are still
expected to grow, plus the new chunk's estimate, fits the memory budget less its ``HEADROOM``
(the level at which the watchdog stops a worker, ``watchdog.py``), and the bytes staged but
not yet published fit the disk budget. With nothing running a chunk is always admitted, so a
tiny budget slows a job down instead of stopping it; a worker that pushes the tree over the
budget is stopped by the watchdog and its chunk retried in smaller parts.

USS is costly to read (the kernel walks every page table: ~7 ms per worker process, which
made the budget's sampling a tenth of a job's CPU in ``bench/run_bench.py``), RSS is cheap and
never smaller. So the default meter samples RSS first and reads USS only when the RSS figures
say a chunk does not fit or a worker is over: every RSS term bounds its USS term from above,
so the decisions are exactly those USS alone would give (the watchdog reads the same way).

Estimates learn from measurements. A chunk's peak is driven by its largest run (runs are
converted one at a time), so ``estimate(largest_run_bytes)`` is a worker's starting USS plus
the largest run's input bytes (recorded with the plan, ``Journal.run_input_bytes``) times a
peak-growth-per-input-byte ratio: ``INITIAL_BYTES_RATIO`` (conservative) until a finished
chunk whose largest run has at least ``LEARN_MIN_BYTES`` reports its growth (``learn``), then
the largest ratio seen; a worker the watchdog stopped teaches a lower bound (``learn_stopped``).
Small runs' growth is mostly fixed costs, so they teach no ratio: the estimate is also never
below the largest growth seen for a run no bigger. Without input sizes (a job planned from a
remote source, or before the plan recorded them) ``estimate(None)`` is the largest worker peak
seen so far (``INITIAL_CHUNK_ESTIMATE`` before the first chunk finishes). Admission is only
the first line: the watchdog (``watchdog.py``) stops a worker that would push the tree past the
budget. Nothing here is persisted; after a crash the estimates start afresh.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from helmproc.engine.errors import ConfigError

DEFAULT_MEMORY_SHARE = 0.6
DEFAULT_DISK_SHARE = 0.5
# Before anything is measured: a conservative guess of one worker's peak.
INITIAL_CHUNK_ESTIMATE = 512 << 20
# ... of a worker's USS when it starts a chunk (forked from the preloaded fork server)
INITIAL_WORKER_BYTES = 64 << 20
# ... and of its peak growth per byte of its largest run's input files
INITIAL_BYTES_RATIO = 3.0
# runs smaller than this teach no ratio (their growth is mostly fixed costs)
LEARN_MIN_BYTES = 8 << 20
SAMPLE_INTERVAL_S = 0.25
# the share of the memory budget kept free: the watchdog stops a worker above the rest
HEADROOM = 0.05


def stop_level(memory_budget: int) -> int:
    """The tree's USS at which the watchdog stops a worker, and up to which admission fills
    the tree: the budget less its ``HEADROOM``."""
    return int(memory_budget * (1 - HEADROOM))


def format_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def default_memory_budget() -> int:
    return int(psutil.virtual_memory().available * DEFAULT_MEMORY_SHARE)


def default_disk_budget(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return int(shutil.disk_usage(probe).free * DEFAULT_DISK_SHARE)


def process_memory(proc: psutil.Process, uss: bool = True) -> int:
    """USS where the platform gives it (and ``uss``), else RSS; 0 for a process that just
    ended."""
    try:
        if uss:
            try:
                return int(proc.memory_full_info().uss)
            except (psutil.AccessDenied, AttributeError):
                pass
        return int(proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return 0


@dataclass(frozen=True)
class TreeSample:
    total: int
    by_pid: dict[int, int]


class TreeMeter:
    """Samples the memory of a process and all its descendants (USS, or RSS if not ``uss``)."""

    def __init__(self, root_pid: int | None = None, uss: bool = True) -> None:
        self.root = psutil.Process(root_pid or os.getpid())
        self.uss = uss
        self.peak = 0

    def sample(self) -> TreeSample:
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        by_pid = {p.pid: process_memory(p, self.uss) for p in procs}
        total = sum(by_pid.values())
        self.peak = max(self.peak, total)
        return TreeSample(total, by_pid)


class Budget:
    """Admission and overrun decisions for one coordinator."""

    def __init__(
        self,
        memory_budget: int,
        disk_budget: int,
        meter: TreeMeter | None = None,
        sample_interval: float = SAMPLE_INTERVAL_S,
    ) -> None:
        if memory_budget <= 0 or disk_budget <= 0:
            raise ConfigError("budgets must be positive")
        self.memory_budget = memory_budget
        self.disk_budget = disk_budget
        # the watchdog stops a worker above this; admission fills the tree up to it
        self.stop_level = stop_level(memory_budget)
        # The default meter reads USS only when a cheap RSS sample cannot decide (see the
        # module docstring); an injected meter is used as it is.
        self.rss_meter = TreeMeter(uss=False) if meter is None else None
        self.meter = meter or TreeMeter()
        self.sample_interval = sample_interval
        self._last: TreeSample | None = None
        self._last_at = 0.0
        self._last_rss: TreeSample | None = None
        self._last_rss_at = 0.0
        self.worker_baseline = 0
        self.bytes_ratio = 0.0  # learned from finished chunks (0: nothing learned yet)
        self.ratio_floor = 0.0  # lower bound taught by stopped workers
        self.max_chunk_peak = 0
        self._growths: list[tuple[int, int]] = []  # (largest run bytes, growth) seen

    # -- measurements --------------------------------------------------------------------
    def sample(self, force: bool = False) -> TreeSample:
        now = time.monotonic()
        if force or self._last is None or now - self._last_at >= self.sample_interval:
            self._last = self.meter.sample()
            self._last_at = now
        return self._last

    def sample_rss(self) -> TreeSample | None:
        """A cached RSS sample (an upper bound of ``sample``), or None with an injected meter."""
        if self.rss_meter is None:
            return None
        now = time.monotonic()
        if self._last_rss is None or now - self._last_rss_at >= self.sample_interval:
            self._last_rss = self.rss_meter.sample()
            self._last_rss_at = now
        return self._last_rss

    def learn(
        self,
        peak_bytes: int,
        largest_run_bytes: int,
        baseline_bytes: int,
        baseline_uss: int | None = None,
    ) -> None:
        """Fold one finished chunk's measurement in: the worker's peak and its RSS when it
        started the chunk (their difference is the chunk's growth), its largest run's input
        bytes, its USS when it started (default: ``baseline_bytes``)."""
        self.max_chunk_peak = max(self.max_chunk_peak, peak_bytes)
        start = baseline_bytes if baseline_uss is None else baseline_uss
        if start:
            self.worker_baseline = max(self.worker_baseline, start)
        if largest_run_bytes > 0:
            growth = max(peak_bytes - baseline_bytes, 0)
            self._growths.append((largest_run_bytes, growth))
            if largest_run_bytes >= LEARN_MIN_BYTES:
                self.bytes_ratio = max(self.bytes_ratio, growth / largest_run_bytes)

    def learn_stopped(self, grown_bytes: int, largest_run_bytes: int | None) -> None:
        """A worker was stopped after growing ``grown_bytes`` on a piece whose largest run
        has these bytes: the piece needs at least that much."""
        if largest_run_bytes:
            self.ratio_floor = max(self.ratio_floor, grown_bytes / largest_run_bytes)

    @property
    def ratio(self) -> float:
        """Peak growth per input byte used by ``estimate``."""
        return max(self.bytes_ratio or INITIAL_BYTES_RATIO, self.ratio_floor)

    def estimate(self, largest_run_bytes: int | None) -> int:
        """Expected peak USS of a worker converting a chunk whose largest run has these
        input bytes (None: unknown)."""
        if largest_run_bytes is None:
            return self.max_chunk_peak or INITIAL_CHUNK_ESTIMATE
        smaller = [g for b, g in self._growths if b <= largest_run_bytes]
        growth = max(self.ratio * largest_run_bytes, max(smaller, default=0))
        return int((self.worker_baseline or INITIAL_WORKER_BYTES) + growth)

    # -- decisions -----------------------------------------------------------------------
    def admit(self, estimate: int, running: Iterable[tuple[int | None, int]], staged: int) -> bool:
        """Whether a chunk with ``estimate`` may start now.

        ``running`` holds (worker pid or None if unknown yet, estimate) of each chunk in
        flight; ``staged`` is the bytes processed but not yet published.
        """
        running = list(running)
        if not running:
            return True
        if staged >= self.disk_budget:
            return False
        quick = self.sample_rss()
        if quick is not None and self._fits(quick, running, estimate):
            return True
        return self._fits(self.sample(), running, estimate)

    def _fits(
        self, current: TreeSample, running: list[tuple[int | None, int]], estimate: int
    ) -> bool:
        still_growing = sum(
            max(est - current.by_pid.get(pid, 0), 0) if pid else est for pid, est in running
        )
        return current.total + still_growing + estimate <= self.stop_level


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``; files and folders vanishing mid-walk (workers clean
    their scratch while we count) are skipped, never an error."""
    total = 0
    for folder, _dirs, files in os.walk(path, onerror=lambda _err: None):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total
