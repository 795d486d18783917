"""Checks of option values, run by click while it parses the command line.

Each check turns the text into the value the command uses or raises ``typer.BadParameter``
(exit 2, click's "Invalid value for '--option'" line), so a bad value stops the command
before anything is planned, journaled or written. Stateless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer

from helmproc.engine.errors import ConfigError
from helmproc.engine.job.budget import parse_size
from helmproc.engine.job.executors import parse_executor

N = TypeVar("N", int, float)


def at_least(minimum: N) -> Callable[[N | None], N | None]:
    def check(value: N | None) -> N | None:
        if value is not None and value < minimum:
            raise typer.BadParameter(f"must be at least {minimum}, got {value}")
        return value

    return check


def size_text(value: str | None) -> str | None:
    """A size such as ``800M``, ``4G`` or ``1.5GiB`` (kept as text; parsed again later)."""
    if value is None:
        return None
    try:
        size = parse_size(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    if size < 1:
        raise typer.BadParameter(f"must be at least 1 byte, got {value!r}")
    return value


def workers_text(value: str | None) -> str | None:
    """``auto`` or a whole number >= 1."""
    if value is None or value == "auto":
        return value
    try:
        workers = int(value)
    except ValueError:
        raise typer.BadParameter(f"a number of workers or 'auto', not {value!r}") from None
    if workers < 1:
        raise typer.BadParameter(f"must be at least 1, got {workers}")
    return value


def executor_text(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return parse_executor(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--executor ")) from None
