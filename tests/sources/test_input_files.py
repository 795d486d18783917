"""Reading the source's files: the size limit counts the bytes actually read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helmproc.engine.errors import RunConversionError
from helmproc.engine.input_files import open_input, read_input, read_limit


def test_a_file_that_grows_while_read_fails_once_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "scenario_state.json"
    path.write_bytes(b"[" + b" " * 98 + b"]")  # 100 bytes: under the limit when opened
    with read_limit(150), open_input(path) as fh:
        with path.open("ab") as more:  # a writer still appending (st_size said 100)
            more.write(b" " * 100)
        with pytest.raises(RunConversionError) as err:
            fh.read()
    assert str(err.value) == (
        "scenario_state.json: larger than --max-file-bytes (more than 150 bytes read, "
        "100 declared)"
    )


def test_reads_in_blocks_count_too(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_bytes(b"x" * 10)
    with read_limit(20), open_input(path) as fh:
        path.write_bytes(b"x" * 64)  # same inode, rewritten longer
        got = bytearray(16)
        assert fh.readinto(got) == 16
        with pytest.raises(RunConversionError, match="more than 20 bytes read"):
            while fh.readinto(got):
                pass


def test_without_a_limit_everything_is_read(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_bytes(os.urandom(3 << 20))
    assert read_input(path) == path.read_bytes()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    os.mkfifo(path)  # nobody writes: a blocking open would never return
    with pytest.raises(RunConversionError, match="a FIFO, not a regular file: not read"):
        open_input(path)
