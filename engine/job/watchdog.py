"""The memory watchdog: a coordinator thread that stops a worker before the process tree
exceeds the memory budget by more than the stated margin.

Every ``WATCH_INTERVAL_S`` (20 ms; 100 ms while the tree's RSS is under half the stop level)
it reads the RSS of each process of the tree (the coordinator, the fork server, the pool's
workers: one small ``/proc`` read each; the process list itself is re-read every 2 s and when
a worker announces a pid not yet seen). RSS bounds
USS from above, so while the tree's RSS sum is under the stop level nothing more is read.
Above it, the tree's USS is estimated as each process's last USS reading plus its RSS growth
since (a worker's growth is new pages of its own); USS is read for real (the costly
``smaps_rollup`` walk) when that estimate comes within ``NEAR`` of the stop level, at most
every ``USS_MIN_S``, and always before a worker is stopped.

The stop level is the budget less ``HEADROOM`` (5%). When the tree's USS is over it, the
busy worker whose USS grew most since it started its piece (with one worker busy: that one) is
sent SIGKILL if it grew on that piece by at least the headroom (at most ``MIN_STOP_GROWTH``,
16 MiB); a worker whose own USS is over the whole budget is stopped in any case. A piece with
nothing left to convert (its runs all given up) is not announced, so never stopped. With a
budget at or below what the idle tree uses (coordinator, fork server, a worker that converted
before), every run that grows a worker by that much is stopped and, alone in its piece, fails
with the sizes it reached.

**The margin**: the tree goes past the budget only by what the workers allocate between the
last reading and the kill (one interval and a few USS reads), beyond the 5% headroom; when the
tree was already at the stop level as the worker started its piece, the growth it is allowed
is the headroom, which takes the tree to the budget, plus that one interval.
``bench/budget_bench.py`` measures the peak tree USS against the budget (README "Performance";
target <= 1.1x).

Killing a worker breaks the process pool: every chunk in flight fails with
``BrokenProcessPool``. The coordinator treats that as one event (``Overruns``): the stopped
piece is split (journaled), the others go back to the queue whole, not as failures, and a new
pool is made. Until then (``rearm``) the watchdog stops no one else: the pool's other workers
are terminated with it.

Nothing here is persisted or journaled (the coordinator journals the split); across a crash
the thread is simply gone with its process. The thread only reads /proc and sends signals.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from helmproc.engine.chunks.pid_files import running_workers
from helmproc.engine.job.budget import process_memory, stop_level

WATCH_INTERVAL_S = 0.02
NEAR = 0.9
USS_MIN_S = 0.1
TREE_REFRESH_S = 2.0  # besides: at once when a worker announces a pid not yet seen
# while the tree's RSS is under half the stop level, it looks 5x less often (100 ms)
FAR_FACTOR = 5
# a worker that grew less than this since it started its piece is never the one stopped
MIN_STOP_GROWTH = 16 << 20


@dataclass(frozen=True)
class Stop:
    """A worker the watchdog stopped: its pid, its own USS and the tree's USS then, its USS
    growth since it started the piece."""

    pid: int
    used: int
    tree: int
    grown: int


class Watchdog:
    """Watches the tree of ``root_pid`` (this process by default); stops workers announced
    in ``pid_dir`` (``chunks/pid_files``) when the tree's USS passes the stop level."""

    def __init__(
        self,
        memory_budget: int,
        pid_dir: Path,
        interval: float = WATCH_INTERVAL_S,
        root_pid: int | None = None,
    ) -> None:
        self.memory_budget = memory_budget
        self.stop_level = stop_level(memory_budget)
        self.min_growth = min(MIN_STOP_GROWTH, memory_budget - self.stop_level)
        self.pid_dir = pid_dir
        self.interval = interval
        self.root = psutil.Process(root_pid or os.getpid())
        self._lock = threading.Lock()
        self._stops: dict[tuple[int, str], Stop] = {}
        self._armed = True
        self._killed = False
        self._procs: dict[int, psutil.Process] = {}
        self._tree_at = -1e9
        self._uss: dict[int, tuple[int, int]] = {}  # pid -> (USS, RSS at that reading)
        self._uss_at = -1e9
        # (pid, chunk, part) -> the worker's USS when it was first seen on that piece
        self._first_uss: dict[tuple[int, int, str], int] = {}
        self._quit = threading.Event()
        self._near = True  # the tree's RSS is over half the stop level: look every interval
        self._thread: threading.Thread | None = None

    # -- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-watchdog", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._quit.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._quit.wait(self.interval if self._near else self.interval * FAR_FACTOR):
            try:
                self.check()
            except (psutil.Error, OSError):
                continue  # a process vanished mid-reading: the next tick reads afresh

    # -- what the coordinator asks -------------------------------------------------------
    @property
    def killed(self) -> bool:
        """A worker was stopped since the last ``rearm``: the pool is broken."""
        with self._lock:
            return self._killed

    def stopped(self, chunk_id: int, part: str) -> Stop | None:
        """The stop of this piece, if the watchdog stopped it (asked once per stop)."""
        with self._lock:
            return self._stops.pop((chunk_id, part), None)

    def rearm(self) -> None:
        """The coordinator made a new pool: watch (and stop) again."""
        with self._lock:
            self._killed = False
            self._armed = True
            self._stops.clear()
            self._first_uss.clear()
            self._uss.clear()

    # -- one look ------------------------------------------------------------------------
    def _refresh_tree(self, now: float) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = [self.root]
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in procs}
        self._tree_at = now

    def check(self) -> Stop | None:
        """One look at the tree; the stop it made, if any."""
        with self._lock:
            if not self._armed:
                return None
        now = time.monotonic()
        workers = running_workers(self.pid_dir)
        if now - self._tree_at >= TREE_REFRESH_S or any(p not in self._procs for p in workers):
            self._refresh_tree(now)
        rss = {pid: process_memory(p, uss=False) for pid, p in self._procs.items()}
        self._near = sum(rss.values()) > self.stop_level // 2
        busy = {pid: key for pid, key in workers.items() if rss.get(pid)}
        self._first_uss = {
            key: v for key, v in self._first_uss.items() if busy.get(key[0]) == key[1:]
        }
        for pid, (cid, part) in busy.items():
            if (pid, cid, part) not in self._first_uss:  # one USS read per piece started
                self._first_uss[(pid, cid, part)] = process_memory(self._procs[pid])
        if not busy or sum(rss.values()) <= self.stop_level:
            return None
        estimate = sum(self._uss_estimate(pid, r) for pid, r in rss.items())
        if estimate > self.stop_level or (
            estimate > NEAR * self.stop_level and now - self._uss_at >= USS_MIN_S
        ):
            estimate = self._read_uss(rss, now)
        if estimate <= self.stop_level:
            return None
        return self._stop(busy, rss, estimate)

    def _uss_estimate(self, pid: int, rss_now: int) -> int:
        seen = self._uss.get(pid)
        if seen is None:
            return rss_now  # never read: RSS is the upper bound
        uss, rss_then = seen
        return max(uss + rss_now - rss_then, 0)

    def _read_uss(self, rss: dict[int, int], now: float) -> int:
        total = 0
        for pid, proc in self._procs.items():
            uss = process_memory(proc)
            self._uss[pid] = (uss, rss.get(pid, 0))
            total += uss
        self._uss_at = now
        return total

    def _stop(
        self, busy: dict[int, tuple[int, str]], rss: dict[int, int], tree: int
    ) -> Stop | None:
        def own(pid: int) -> int:
            return self._uss.get(pid, (rss[pid], 0))[0]

        def grown(pid: int) -> int:
            cid, part = busy[pid]
            return max(own(pid) - self._first_uss.get((pid, cid, part), own(pid)), 0)

        # a worker over the whole budget by itself; else the one that grew most, if it grew
        # at all (a worker that only started its piece is not what fills the tree)
        alone = [pid for pid in busy if own(pid) > self.memory_budget]
        if alone:
            pid = max(alone, key=own)
        else:
            pid = max(busy, key=grown)
            if grown(pid) < self.min_growth:
                return None
        stop = Stop(pid, own(pid), tree, grown(pid))
        with self._lock:
            self._stops[busy[pid]] = stop
            self._killed = True
            self._armed = False
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return stop
