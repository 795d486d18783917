"""Workers and the fork server never outlive the coordinator, whatever kills it.

The coordinator starts a fork server, which forks the pool's workers. If the coordinator dies
without shutting the pool down (``kill -9``, the kernel's OOM killer), nothing would tell them:
they would go on converting into a job nobody journals, holding memory and files. So:

- every worker asks the kernel for ``SIGKILL`` when its parent (the fork server) dies
  (Linux ``prctl(PR_SET_PDEATHSIG)`` through ctypes), and
- the fork server (and, where there is no ``prctl``, every worker too) runs a daemon thread
  that checks every ``WATCH_INTERVAL_S`` whether its parent pid changed (a dead parent's
  children are re-parented) and then exits at once.

The fork server uses the watchdog rather than the death signal because the kernel ties that
signal to the *thread* that started the process, and any coordinator thread may have been the
first to start a worker. So a coordinator killed with ``SIGKILL`` leaves no process behind
after about ``WATCH_INTERVAL_S``: the fork server notices, exits, and the kernel kills its
workers. Nothing here touches the disk; what a killed worker leaves (temp files, pid files) is
swept on resume.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.2


def _kernel_kills_me_with_parent() -> bool:
    """Ask for SIGKILL when the parent dies; False where the platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent: int, interval: float = WATCH_INTERVAL_S) -> threading.Thread:
    """A daemon thread that ends this process as soon as its parent is no longer ``parent``."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # no cleanup to run: the coordinator's resume repairs everything
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="helmproc-lifeline", daemon=True)
    thread.start()
    return thread


def die_with_parent(*, watchdog_only: bool = False) -> None:
    """End this process when its parent ends (see the module docstring)."""
    parent = os.getppid()
    if watchdog_only or not _kernel_kills_me_with_parent():
        watch_parent(parent)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
