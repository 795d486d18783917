"""The CLI's parsing of option text into the typed values the engine takes."""

from __future__ import annotations

import pytest

from helmproc.cli.option_checks import parse_size, parse_workers
from helmproc.engine.errors import ConfigError

MiB = 1 << 20


@pytest.mark.parametrize(
    "text, expected",
    [
        ("800M", 800 * MiB),
        ("4G", 4 << 30),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("512mb", 512 * MiB),
        ("2000000", 2_000_000),
        ("10k", 10 << 10),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "4X"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="not a size"):
        parse_size(text)


def test_parse_workers() -> None:
    assert parse_workers("auto") == "auto"
    assert parse_workers("3") == 3
    with pytest.raises(ConfigError, match="number or 'auto'"):
        parse_workers("many")
    with pytest.raises(ConfigError, match="at least 1"):
        parse_workers("0")
