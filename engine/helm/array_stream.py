"""Cut the elements of one big JSON array out of a HELM file without loading the file.

``scenario_state.json`` reaches GBs and ``per_instance_stats.json`` hundreds of MB; both are
one big array (``request_states`` inside the top-level object, or the top-level array itself).
:func:`iter_array_elements` reads the file in blocks and yields each element of that array as
``(file offset, bytes)``; the caller decodes the element with msgspec (``run_files``) and can
come back for it later with :func:`read_span` (``os.pread``: nothing is memory-mapped, so the
page cache never counts against the process's RSS).

How an element's end is found. HELM writes every file with ``json.dumps(..., indent=2)``. JSON
strings cannot hold a raw newline, so in an indented file a line that starts with the
element's own indentation followed by ``}`` can only be that element's closing brace: the end
is one regex search away, and msgspec then skips over the candidate in C to confirm it is
exactly one object. The indentation is taken from the whitespace before the first element and
must match before each element; a file laid out otherwise (compact JSON from other tools, or
an element with bare ``NaN``, which msgspec rejects) falls back, element by element, to a
string-aware bracket counter in Python: correct, but slower.

Measured with ``bench/convert_bench.py --compare-parsers 200`` (a generated 200 MB
``scenario_state.json`` with pre-v0.5 per-token ``top_logprobs``; cutting out and decoding
every request state; one core): this module ~255 MB/s on HELM's indented layout and ~23 MB/s
through the fallback; ijson with its yajl2_c backend (each element built as Python objects,
then ``msgspec.convert``) ~90 MB/s; msgspec on the whole file ~500 MB/s, but with the file
and all its states in memory. Hence this scanner, and no ijson dependency.

Memory: one read block (:data:`BLOCK_BYTES`) plus the current element (a block grows to hold an
element bigger than itself). Nothing is written; a crash leaves nothing behind. Errors raise
:class:`RunConversionError` naming the file, worded like ``run_files``'s (``missing``,
``malformed JSON: ...``, ``unexpected shape: ...``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

import msgspec

from helmproc.engine.errors import RunConversionError
from helmproc.engine.input_files import InputFile, open_input

__all__ = ["BLOCK_BYTES", "iter_array_elements", "read_span"]

BLOCK_BYTES = 8 << 20

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_STRUCTURAL = re.compile(rb'["{}\[\]]')
# The rest of a JSON string after its opening quote, up to and including the closing quote.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SCALAR_END = re.compile(rb"[,\]}\s]")


class _AnyObject(msgspec.Struct):
    """Decoding into a struct without fields skips a whole JSON object in C."""


_SKIPPER = msgspec.json.Decoder(_AnyObject)
_QUOTE, _COMMA, _COLON = ord('"'), ord(","), ord(":")
_OPEN_OBJECT, _CLOSE_OBJECT = ord("{"), ord("}")
_OPEN_ARRAY, _CLOSE_ARRAY = ord("["), ord("]")
_OPENERS = (_OPEN_OBJECT, _OPEN_ARRAY)


def read_span(fh: BinaryIO | InputFile, offset: int, length: int) -> bytes:
    """The ``length`` bytes at ``offset`` of the open file ``fh`` (an element found before)."""
    data = os.pread(fh.fileno(), length, offset)
    if len(data) != length:
        raise OSError(f"short read at offset {offset}: {len(data)} of {length} bytes")
    return data


def iter_array_elements(
    path: Path, key: str | None, *, block_bytes: int | None = None
) -> Iterator[tuple[int, memoryview]]:
    """Yield ``(offset, data)`` for each element of the top-level array (``key`` None) or of
    the array under the top-level object's ``key``.

    ``data`` is a view into the read buffer: decode it before asking for the next element.
    The rest of the file is checked to be well-formed JSON as far as structure goes (the other
    top-level values are skipped, not decoded). ``block_bytes`` defaults to
    :data:`BLOCK_BYTES` (read at call time).
    """
    name = path.name
    with open_input(path) as fh:
        reader = _Reader(fh, name, block_bytes or BLOCK_BYTES)
        if key is None:
            reader.expect_value_start(_OPEN_ARRAY, "$")
            yield from _array_elements(reader)
        else:
            yield from _elements_under_key(reader, key)
        reader.expect_end()


def _elements_under_key(reader: _Reader, key: str) -> Iterator[tuple[int, memoryview]]:
    """Walk the top-level object: skip other values, stream the array under ``key``."""
    reader.expect_value_start(_OPEN_OBJECT, "$")
    reader.pos += 1
    found = False
    if reader.next_char() == _CLOSE_OBJECT:
        reader.pos += 1
    else:
        while True:
            if reader.next_char() != _QUOTE:
                reader.malformed("expected an object key")
            name = reader.read_key()
            if name == key and not found:
                found = True
                reader.expect_value_start(_OPEN_ARRAY, f"$.{key}")
                yield from _array_elements(reader)
            else:
                reader.skip_value()
            char = reader.next_char()
            reader.pos += 1
            if char == _CLOSE_OBJECT:
                break
            if char != _COMMA:
                reader.malformed("expected ',' or '}' after an object value")
    if not found:
        reader.shape(f"Object missing required field `{key}`")


def _array_elements(reader: _Reader) -> Iterator[tuple[int, memoryview]]:
    """Yield the elements of the array whose ``[`` is at the cursor; stop after its ``]``."""
    reader.pos += 1
    lead = reader.skip_whitespace()
    first = reader.next_char()
    if first is None:
        reader.malformed("Input data was truncated")
    if first == _CLOSE_ARRAY:
        reader.pos += 1
        return
    # The elements' closing line, from the indentation before the first one (none without
    # indentation: with indent=0 nested objects close at the same column).
    newline = lead.rfind(b"\n")
    indentation = lead[newline + 1 :]
    marker = (
        re.compile(re.escape(b"\n" + indentation + b"}")) if newline >= 0 and indentation else None
    )
    lead_length = len(lead)
    while True:
        end = None
        if (
            marker is not None
            and lead_length == len(lead)
            and reader.buf[reader.pos] == _OPEN_OBJECT
        ):
            end = reader.find_end_marker(marker)
        if end is None:
            end = reader.value_end()
        # The cursor stayed on the element's first byte (reading more only moves the window).
        start = reader.pos
        yield reader.base + start, memoryview(reader.buf)[start:end]
        reader.pos = end
        char = reader.next_char()
        if char is None:
            reader.malformed("Input data was truncated")
        reader.pos += 1
        if char == _CLOSE_ARRAY:
            return
        if char != _COMMA:
            reader.malformed("expected ',' or ']' after an array element")
        lead_length = len(reader.skip_whitespace())
        if reader.next_char() is None:
            reader.malformed("Input data was truncated")


class _Reader:
    """A window ``buf`` over the file: ``buf[0]`` is file offset ``base``; ``pos`` is the
    cursor inside ``buf``. Bytes before the cursor are dropped when more is read."""

    def __init__(self, fh: BinaryIO | InputFile, name: str, block_bytes: int) -> None:
        self.fh = fh
        self.name = name
        self.block_bytes = block_bytes
        self.buf = b""
        self.base = 0
        self.pos = 0

    # -- reading -------------------------------------------------------------------------
    def fill(self) -> bool:
        """Read more; keeps ``buf[pos:]``. Reads at least as much as is held, so a value that
        spans many blocks is rescanned a bounded number of times. False at end of file."""
        chunk = self.fh.read(max(self.block_bytes, len(self.buf) - self.pos))
        if not chunk:
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.base += self.pos
        self.pos = 0
        return True

    def skip_whitespace(self) -> bytes:
        """Skip whitespace at the cursor and return it (read across blocks)."""
        parts = []
        while True:
            end = _WHITESPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            parts.append(self.buf[self.pos : end])
            self.pos = end
            if self.pos < len(self.buf) or not self.fill():
                return b"".join(parts)

    def next_char(self) -> int | None:
        """Skip whitespace; the byte at the cursor, or None at end of file."""
        while True:
            self.pos = _WHITESPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return None

    # -- values --------------------------------------------------------------------------
    def expect_value_start(self, opener: int, at: str) -> None:
        char = self.next_char()
        if char is None:
            self.malformed("Input data was truncated")
        if char != opener:
            expected = "object" if opener == _OPEN_OBJECT else "array"
            self.shape(f"Expected `{expected}`, got `{_json_type(char)}`", at)

    def read_key(self) -> str:
        """The object key at the cursor (a string); leaves the cursor on the colon."""
        end = self.value_end()
        raw = self.buf[self.pos : end]
        self.pos = end
        if self.next_char() != _COLON:
            self.malformed("expected ':' after an object key")
        self.pos += 1
        try:
            return str(json.loads(raw))
        except ValueError:
            self.malformed("invalid object key")

    def skip_value(self) -> None:
        if self.next_char() is None:
            self.malformed("Input data was truncated")
        self.pos = self.value_end()

    def value_end(self) -> int:
        """End (exclusive) of the JSON value starting at the cursor, reading more as needed."""
        while True:
            end = _value_end(self.buf, self.pos)
            if end is not None:
                return end
            if not self.fill():
                if self.buf[self.pos] not in _OPENERS and self.buf[self.pos] != _QUOTE:
                    return len(self.buf)  # a scalar ending at end of file
                self.malformed("Input data was truncated")

    def find_end_marker(self, marker: re.Pattern[bytes]) -> int | None:
        """End of the object at the cursor found by its closing line (see module docstring),
        or None if that is not this object's end or the file ends first (the caller then
        scans generically). The candidate is checked by msgspec skipping over it in C."""
        searched = self.pos
        while True:
            found = marker.search(self.buf, searched)  # a literal: faster than bytes.find
            if found is not None:
                end = found.end()
                try:
                    _SKIPPER.decode(memoryview(self.buf)[self.pos : end])
                except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                    return None  # not one JSON object (other layout, or NaN: old stats)
                return end
            searched = max(self.pos, len(self.buf) - len(marker.pattern) + 1)
            offset = self.pos
            if not self.fill():
                return None
            searched -= offset  # fill() moved the window so that the cursor is at 0

    def expect_end(self) -> None:
        if self.next_char() is not None:
            self.malformed("trailing characters after the top-level value")

    # -- errors --------------------------------------------------------------------------
    def malformed(self, what: str) -> NoReturn:
        offset = self.base + self.pos
        raise RunConversionError(self.name, f"malformed JSON: {what} (byte {offset})")

    def shape(self, what: str, at: str = "$") -> NoReturn:
        where = "" if at == "$" else f" - at `{at}`"
        raise RunConversionError(self.name, f"unexpected shape: {what}{where}")


def _value_end(buf: bytes, start: int) -> int | None:
    """End (exclusive) of the JSON value at ``buf[start]``, or None if ``buf`` ends first.

    Brackets are counted outside strings only; whether they pair up correctly is left to the
    decoder that gets the slice.
    """
    first = buf[start]
    if first == _QUOTE:
        match = _STRING_REST.match(buf, start + 1)
        return match.end() if match else None
    if first not in _OPENERS:
        scalar = _SCALAR_END.search(buf, start)
        return scalar.start() if scalar else None
    depth = 0
    pos = start
    search = _STRUCTURAL.search
    rest_of_string = _STRING_REST.match
    while True:
        match = search(buf, pos)
        if match is None:
            return None
        i = match.start()
        char = buf[i]
        if char == _QUOTE:
            string = rest_of_string(buf, i + 1)
            if string is None:
                return None
            pos = string.end()
        elif char in _OPENERS:
            depth += 1
            pos = i + 1
        else:
            depth -= 1
            pos = i + 1
            if depth == 0:
                return pos


def _json_type(char: int | None) -> str:
    """The msgspec name of the JSON type starting with byte ``char``."""
    if char == _OPEN_OBJECT:
        return "object"
    if char == _OPEN_ARRAY:
        return "array"
    if char == _QUOTE:
        return "str"
    if char in (ord("t"), ord("f")):
        return "bool"
    if char == ord("n"):
        return "null"
    return "number"
