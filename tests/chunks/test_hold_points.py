"""The test-only hold seam: inert without ``HELMPROC_TEST_HOLD``, and with it a gated chunk
waits in a real process until its gate is removed."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from helmproc.engine.chunks.hold_points import ENV, gate, held_marks, hold_at_chunk_start


def test_without_the_variable_a_gate_holds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    gate(tmp_path, 3).touch()
    hold_at_chunk_start(3)  # returns: production never sets the variable
    assert held_marks(tmp_path, 3) == []


def test_a_gated_chunk_waits_until_released_and_says_who_holds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path))
    hold_at_chunk_start(2)  # no gate for chunk 2: not held
    assert held_marks(tmp_path, 2) == []
    gate(tmp_path, 3).touch()
    worker = multiprocessing.get_context("fork").Process(target=hold_at_chunk_start, args=(3,))
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not held_marks(tmp_path, 3):
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.01)
        assert held_marks(tmp_path, 3) == [worker.pid]
        assert worker.is_alive()  # held: it does not go on by itself
        worker.join(timeout=0.5)
        assert worker.is_alive()
        gate(tmp_path, 3).unlink()
        worker.join(timeout=30)
        assert worker.exitcode == 0
    finally:
        if worker.is_alive():
            os.kill(worker.pid, 9)  # type: ignore[arg-type]
