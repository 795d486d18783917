"""``Prefetcher``: the next run downloads while the current one converts, in order, with the
same errors as a direct fetch, in two alternating scratch folders, and nothing writing after
``close``. The source here is a recording stand-in (threads and events, no sleeps as
assertions); the HTTP path through it is covered by test_http_source's whole-job tests."""

from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path

import pytest

from helmproc.engine.errors import RunConversionError
from helmproc.engine.facts import RunRef
from helmproc.engine.sources.prefetch import Prefetcher

WAIT_S = 10


def refs(n: int) -> list[RunRef]:
    return [RunRef("p", "s", f"run{i}", None, f"runs/s/run{i}") for i in range(n)]


class RecordingSource:
    """``fetch`` writes a marker file into the folder it is given; per-run gates and errors."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path]] = []
        self.started: dict[str, threading.Event] = {}
        self.gates: dict[str, threading.Event] = {}
        self.errors: dict[str, Exception] = {}
        self.lock = threading.Lock()

    def started_event(self, name: str) -> threading.Event:
        with self.lock:
            return self.started.setdefault(name, threading.Event())

    def fetch(self, ref: RunRef, scratch: Path, *, max_file_bytes: int | None = None) -> Path:
        with self.lock:
            self.calls.append((ref.run_name, scratch))
        self.started_event(ref.run_name).set()
        gate = self.gates.get(ref.run_name)
        if gate is not None:
            assert gate.wait(WAIT_S)
        if ref.run_name in self.errors:
            raise self.errors[ref.run_name]
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / ref.run_name).write_text("downloaded")
        return scratch


def test_runs_come_in_order_and_the_next_starts_before_it_is_taken(tmp_path: Path) -> None:
    source = RecordingSource()
    runs = refs(4)
    with closing(Prefetcher(source, runs, tmp_path)) as prefetch:  # type: ignore[arg-type]
        for i, ref in enumerate(runs):
            got = prefetch.take(ref)
            assert (got / ref.run_name).read_text() == "downloaded"
            if i + 1 < len(runs):  # converting run i now; run i+1 is already on its way
                assert source.started_event(runs[i + 1].run_name).wait(WAIT_S)
    assert [name for name, _ in source.calls] == [r.run_name for r in runs]
    # two folders in turn: the one converting and the one arriving
    assert [slot.name for _, slot in source.calls] == ["fetch-0", "fetch-1", "fetch-0", "fetch-1"]


def test_a_failed_download_is_raised_when_its_run_is_taken(tmp_path: Path) -> None:
    source = RecordingSource()
    source.errors["run1"] = RunConversionError("stats.json", "not found (HTTP 404)")
    runs = refs(3)
    with closing(Prefetcher(source, runs, tmp_path)) as prefetch:  # type: ignore[arg-type]
        assert prefetch.take(runs[0]).is_dir()
        with pytest.raises(RunConversionError) as caught:
            prefetch.take(runs[1])
        assert caught.value.file == "stats.json"
        assert prefetch.take(runs[2]).is_dir()  # the chunk goes on


def test_runs_must_be_taken_in_order(tmp_path: Path) -> None:
    runs = refs(2)
    with closing(Prefetcher(RecordingSource(), runs, tmp_path)) as prefetch:  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="out of order"):
            prefetch.take(runs[1])


def test_close_waits_for_the_download_in_flight(tmp_path: Path) -> None:
    """After close nothing writes into scratch (the worker deletes it next)."""
    source = RecordingSource()
    source.gates["run1"] = threading.Event()
    runs = refs(3)
    prefetch = Prefetcher(source, runs, tmp_path)  # type: ignore[arg-type]
    prefetch.take(runs[0])
    assert source.started_event("run1").wait(WAIT_S)
    releaser = threading.Timer(0.2, source.gates["run1"].set)
    releaser.start()
    prefetch.close()  # returns only once run1's fetch has finished writing
    assert (tmp_path / "fetch-1" / "run1").exists()
    assert [name for name, _ in source.calls] == ["run0", "run1"]  # run2 never started
    releaser.join()
