"""Progress reporting: live bars on a TTY, periodic log lines otherwise, nothing when quiet.

All output goes to stderr (stdout is for results). Progress keeps no state that matters
across a crash; on resume it starts from the journal's counts (``start``'s ``done_runs`` and
``done_rows``: the runs of chunks already processed), and its rates count this session only.
The coordinator calls ``tick`` on every turn of its loop, so log lines keep coming every
``LOG_INTERVAL_S`` seconds even while no chunk finishes (a stall is never silent).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

LOG_INTERVAL_S = 10.0


class Progress(Protocol):
    def start(
        self,
        total_chunks: int,
        done_chunks: int,
        total_runs: int,
        done_runs: int = 0,
        done_rows: int = 0,
    ) -> None: ...
    def tick(self) -> None: ...
    def chunk_processed(self, result: Any) -> None: ...
    def chunk_published(self, chunk_id: int, n_runs: int) -> None: ...
    def chunk_failed(self, chunk_id: int, reason: str) -> None: ...
    def note(self, message: str) -> None: ...
    def finish(self, report: Any) -> None: ...


class NullProgress:
    def start(
        self,
        total_chunks: int,
        done_chunks: int,
        total_runs: int,
        done_runs: int = 0,
        done_rows: int = 0,
    ) -> None:
        pass

    def tick(self) -> None:
        pass

    def chunk_processed(self, result: Any) -> None:
        pass

    def chunk_published(self, chunk_id: int, n_runs: int) -> None:
        pass

    def chunk_failed(self, chunk_id: int, reason: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self, report: Any) -> None:
        pass


class Counters:
    """What both visible progress styles show."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.total_chunks = 0
        self.done_chunks = 0
        self.total_runs = 0
        self.runs = 0
        self.failed_runs = 0
        self.rows = 0
        self.rows_before = 0  # rows of runs done before this session
        self.processed_chunks = 0

    def begin(
        self, total_chunks: int, done_chunks: int, total_runs: int, done_runs: int, done_rows: int
    ) -> None:
        self.total_chunks, self.done_chunks, self.total_runs = total_chunks, done_chunks, total_runs
        self.runs, self.rows, self.rows_before = done_runs, done_rows, done_rows

    def rate_and_eta(self) -> tuple[float, float | None]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = (self.rows - self.rows_before) / elapsed
        left = self.total_chunks - self.done_chunks
        if self.processed_chunks == 0:
            return rate, None
        return rate, left * elapsed / self.processed_chunks

    def absorb(self, result: Any) -> None:
        self.processed_chunks += 1
        for outcome in result.outcomes:
            self.runs += 1
            self.rows += outcome.n_rows
            if not outcome.ok:
                self.failed_runs += 1


class LogProgress(Counters):
    """One line every ``interval`` seconds and at the end; for logs, CI and pipes."""

    def __init__(self, stream: TextIO | None = None, interval: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = 0.0

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        rate, eta = self.rate_and_eta()
        eta_text = f"{eta:.0f}s" if eta is not None else "?"
        print(
            f"helmproc: chunks {self.done_chunks}/{self.total_chunks} published, "
            f"runs {self.runs}/{self.total_runs} ({self.failed_runs} failed), "
            f"rows {self.rows}, {rate:.0f} rows/s, eta {eta_text}",
            file=self.stream,
            flush=True,
        )

    def start(
        self,
        total_chunks: int,
        done_chunks: int,
        total_runs: int,
        done_runs: int = 0,
        done_rows: int = 0,
    ) -> None:
        self.begin(total_chunks, done_chunks, total_runs, done_runs, done_rows)
        self._line(force=True)

    def tick(self) -> None:
        self._line()

    def chunk_processed(self, result: Any) -> None:
        self.absorb(result)
        self._line()

    def chunk_published(self, chunk_id: int, n_runs: int) -> None:
        self.done_chunks += 1
        self._line()

    def chunk_failed(self, chunk_id: int, reason: str) -> None:
        print(f"helmproc: chunk {chunk_id} failed: {reason}", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(f"helmproc: {message}", file=self.stream, flush=True)

    def finish(self, report: Any) -> None:
        self._line(force=True)


class BarProgress(Counters):
    """Live bars (rich) for an interactive terminal."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[extra]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._chunks: Any = None
        self._runs: Any = None

    def start(
        self,
        total_chunks: int,
        done_chunks: int,
        total_runs: int,
        done_runs: int = 0,
        done_rows: int = 0,
    ) -> None:
        self.begin(total_chunks, done_chunks, total_runs, done_runs, done_rows)
        self._bars.start()
        self._chunks = self._bars.add_task(
            "chunks published", total=total_chunks, completed=done_chunks, extra=""
        )
        self._runs = self._bars.add_task(
            "runs converted", total=total_runs, completed=done_runs, extra=""
        )

    def tick(self) -> None:
        pass  # rich refreshes the bars (and their elapsed time) by itself

    def chunk_processed(self, result: Any) -> None:
        self.absorb(result)
        rate, _ = self.rate_and_eta()
        self._bars.update(
            self._runs,
            completed=self.runs,
            extra=f"{self.rows} rows, {rate:.0f} rows/s, {self.failed_runs} failed",
        )

    def chunk_published(self, chunk_id: int, n_runs: int) -> None:
        self.done_chunks += 1
        self._bars.update(self._chunks, completed=self.done_chunks)

    def chunk_failed(self, chunk_id: int, reason: str) -> None:
        self._bars.console.print(f"chunk {chunk_id} failed: {reason}")

    def note(self, message: str) -> None:
        self._bars.console.print(message)

    def finish(self, report: Any) -> None:
        self._bars.stop()


def progress_for(stream: TextIO, quiet: bool = False) -> Progress:
    if quiet:
        return NullProgress()
    if stream.isatty():
        return BarProgress()
    return LogProgress(stream)
