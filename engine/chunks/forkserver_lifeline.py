"""Imported by the fork server only (``executors.make_pool`` preloads it): from then on the
fork server exits when the coordinator that started it dies (``lifeline``). Nothing else may
import this module: importing it is what arms the watchdog in the importing process."""

from __future__ import annotations

from helmproc.engine.chunks.lifeline import die_with_parent

die_with_parent(watchdog_only=True)
