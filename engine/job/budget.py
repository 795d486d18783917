"""The memory and disk budget: measure the process tree, admit chunks that fit, spot overruns.

Memory is measured with psutil over the whole tree (this coordinator and every descendant),
counting each process's unique set size (USS: pages no other process shares, so the forkserver's
shared pages are not counted once per worker) where the platform offers it, RSS otherwise. A
chunk is admitted when the tree's current use, plus what the chunks already running are still
expected to grow, plus the new chunk's estimate, fits the memory budget, and the bytes staged
but not yet published fit the disk budget. With nothing running a chunk is always admitted, so
a tiny budget slows a job down instead of stopping it; a worker that alone exceeds the budget is
reported by ``overruns`` so the coordinator can stop it and retry its chunk in smaller parts.

USS is costly to read (the kernel walks every page table: ~7 ms per worker process, which
made the budget's sampling a tenth of a job's CPU in ``bench/run_bench.py``), RSS is cheap and
never smaller. So the default meter samples RSS first and reads USS only when the RSS figures
say a chunk does not fit or a worker is over: every RSS term bounds its USS term from above,
so the decisions are exactly those USS alone would give.

Estimates learn from measurements: each finished chunk reports its worker's peak (``learn``).
What runs today: the coordinator admits every chunk with ``estimate(None)``, the largest
worker peak seen so far (``INITIAL_CHUNK_ESTIMATE`` before the first chunk finishes), because
a chunk's input sizes are not known before its worker downloads it. ``estimate`` can also
scale by input size (a worker's baseline plus the largest observed peak-per-input-byte ratio
times the chunk's largest run), but no caller passes a size yet. Nothing here is persisted;
after a crash the estimates start afresh.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from helmproc.engine.errors import ConfigError

UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
DEFAULT_MEMORY_SHARE = 0.6
DEFAULT_DISK_SHARE = 0.5
# Before anything is measured: a conservative guess of one worker's peak.
INITIAL_CHUNK_ESTIMATE = 512 << 20
SAMPLE_INTERVAL_S = 0.25


def parse_size(text: str) -> int:
    """``"4G"``, ``"512MB"``, ``"1.5GiB"``, ``"2000000"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ConfigError(f"not a size: {text!r} (use e.g. 800M, 4G, 1.5GiB)")
    return int(float(match.group(1)) * UNITS[match.group(2)])


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
        self.bytes_ratio = 0.0
        self.max_chunk_peak = 0

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

    def learn(self, peak_bytes: int, largest_run_bytes: int, baseline_bytes: int) -> None:
        """Fold one finished chunk's measurement into the estimates."""
        self.max_chunk_peak = max(self.max_chunk_peak, peak_bytes)
        if baseline_bytes:
            self.worker_baseline = max(self.worker_baseline, baseline_bytes)
        if largest_run_bytes > 0:
            growth = max(peak_bytes - baseline_bytes, 0)
            self.bytes_ratio = max(self.bytes_ratio, growth / largest_run_bytes)

    def estimate(self, largest_run_bytes: int | None) -> int:
        """Expected peak of a worker converting a chunk whose largest run has these bytes."""
        if largest_run_bytes and self.bytes_ratio:
            return int(self.worker_baseline + self.bytes_ratio * largest_run_bytes)
        return self.max_chunk_peak or INITIAL_CHUNK_ESTIMATE

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
        return current.total + still_growing + estimate <= self.memory_budget

    def overruns(self, pids: Iterable[int]) -> list[tuple[int, int]]:
        """(pid, bytes) of workers that alone use more than the whole budget."""
        pids = list(pids)
        quick = self.sample_rss()
        if quick is not None:
            pids = [pid for pid in pids if quick.by_pid.get(pid, 0) > self.memory_budget]
            if not pids:
                return []
        current = self.sample()
        return [
            (pid, current.by_pid[pid])
            for pid in pids
            if current.by_pid.get(pid, 0) > self.memory_budget
        ]


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
