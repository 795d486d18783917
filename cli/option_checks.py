"""Parsing and checks of option values: the CLI turns a user's text into typed values.

``parse_size`` and ``parse_workers`` are the one place sizes (``4G``) and worker counts (``3``,
``auto``) are read from text; the engine takes bytes and ``int | "auto"``. The ``*_text``
checks run while click parses the command line and raise ``typer.BadParameter`` (exit 2,
click's "Invalid value for '--option'" line), so a bad value stops the command before anything
is planned, journaled or written; they keep the text as given (``run`` records it, ``resume``
reuses it), and the command parses it. Stateless.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import typer

from helmproc.engine import AUTO_WORKERS, Workers, parse_executor
from helmproc.engine.errors import ConfigError

N = TypeVar("N", int, float)
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"4G"``, ``"512MB"``, ``"1.5GiB"``, ``"2000000"`` -> bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ConfigError(f"not a size: {text!r} (use e.g. 800M, 4G, 1.5GiB)")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def parse_workers(text: str) -> Workers:
    """``"auto"`` or a whole number >= 1 (``--max-workers``)."""
    if text == AUTO_WORKERS:
        return AUTO_WORKERS
    try:
        workers = int(text)
    except ValueError:
        raise ConfigError(f"--max-workers must be a number or 'auto', not {text!r}") from None
    if workers < 1:
        raise ConfigError("--max-workers must be at least 1")
    return workers


def at_least(minimum: N) -> Callable[[N | None], N | None]:
    def check(value: N | None) -> N | None:
        if value is not None and value < minimum:
            raise typer.BadParameter(f"must be at least {minimum}, got {value}")
        return value

    return check


def size_text(value: str | None) -> str | None:
    """A size such as ``800M``, ``4G`` or ``1.5GiB`` (checked; kept as text)."""
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
    if value is None or value == AUTO_WORKERS:
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
