"""Typed views of the HELM run files helmproc reads, and the decode helpers.

Each ``msgspec.Struct`` below declares only the fields the converter uses. msgspec skips every
other key while parsing (in C, without building Python objects), so the bulky parts of a run
(per-token ``tokens`` with the ``top_logprobs`` HELM wrote before v0.5.0, embeddings,
``contrast_inputs``, media locations) cost only a scan, and fields a newer HELM adds are
ignored. HELM writes ``None`` fields by omitting the key, so every field that HELM may omit
has a default here (``model_deployment`` exists since v0.4.0, ``annotations`` since v0.5.0,
``thinking`` since v0.5.6; ``sub_split`` only in some scenarios). Numbers are declared
``float`` (msgspec accepts JSON ints there, so ``temperature: 0`` and ``0.0`` both decode); a
few request fields are ``int | float`` because their text form is kept as HELM wrote it in
EEE's string-valued ``additional_details``.

``instance.input`` and ``reference.output`` are ``{"text": ...}`` objects since HELM v0.2.0
and plain strings before; both decode (``str | Text``, read through :func:`text_of`).
Multimodal inputs (v0.3.0+) keep each media object's content type and text part only.
``annotations`` (LLM-judge output, arbitrary JSON) is decoded as plain Python data.
All structs are ``gc=False`` (decoded JSON holds no reference cycles, so the cyclic garbage
collector need not track the hundreds of thousands of small objects a large run decodes to).

:func:`load_json` decodes a whole file, :func:`decode_json` one value cut out of a file (an
element ``array_stream`` found). Every failure becomes a :class:`RunConversionError` naming the
file (``missing``, ``malformed JSON: ...`` including ``malformed JSON: empty file`` and
``malformed JSON: not valid UTF-8 (byte N...)``, ``unexpected shape: <msgspec message with its
JSON path>``; for an element the path starts at the element, e.g. ``$.request_states[7]``).
Old HELM (< v0.2.4) wrote bare ``NaN`` into stats files, and model output can hold escaped
lone UTF-16 surrogates (``"\\ud83d"``); msgspec rejects both. On such a decode error the value
takes a slow path: lone surrogate escapes are replaced by U+FFFD (Arrow cannot store them),
then the stdlib ``json`` parses it (accepting ``NaN``/``Infinity``) and ``msgspec.convert``
types it.

This module holds no state besides a cache of one decoder per type.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from helmproc.engine.errors import RunConversionError
from helmproc.engine.input_files import read_input

__all__ = [
    "Completion",
    "Instance",
    "MediaObject",
    "MetricName",
    "PerInstanceStats",
    "PerturbationDescription",
    "Reference",
    "Request",
    "RequestResult",
    "RequestState",
    "RunSpec",
    "Scenario",
    "ScenarioState",
    "Stat",
    "Text",
    "decode_json",
    "load_json",
    "text_of",
]

T = TypeVar("T")

# Indexes are stored as Arrow int32: reject what does not fit while decoding (with a JSON path).
Index = Annotated[int, msgspec.Meta(ge=0, lt=2**31)]

class MediaObject(msgspec.Struct, gc=False):
    """One part of a multimodal input: its content type and, for text parts, the text."""

    content_type: str = ""
    text: str | None = None


class MultimediaObject(msgspec.Struct, gc=False):
    media_objects: list[MediaObject] = []


class Text(msgspec.Struct, gc=False):
    """HELM ``Input`` / ``Output``: the text and, for multimodal inputs, the media parts."""

    text: str = ""
    multimedia_content: MultimediaObject | None = None


def text_of(value: str | Text) -> str:
    """The text of an input or reference output in either the old or the new shape."""
    return value if isinstance(value, str) else value.text


# --- run_spec.json, scenario.json -----------------------------------------------------------


class ScenarioSpec(msgspec.Struct, gc=False):
    class_name: str
    args: dict[str, Any] = {}


class AdapterSpec(msgspec.Struct, gc=False):
    method: str | None = None
    model: str | None = None
    model_deployment: str | None = None
    temperature: float | None = None
    max_tokens: float | None = None
    num_outputs: int | float | None = None
    stop_sequences: list[str] | None = None


class RunSpec(msgspec.Struct, gc=False):
    name: str
    scenario_spec: ScenarioSpec
    adapter_spec: AdapterSpec
    groups: list[str] = []


class Scenario(msgspec.Struct, gc=False):
    name: str | None = None


# --- stats.json, per_instance_stats.json ----------------------------------------------------


# A HELM PerturbationDescription as written: ``name`` plus whatever fields its subclass has
# (``robustness``, ``fairness``, ``computed_on``, ``seed``, ``mode``, ``prob``, ``suffix``, ...),
# kept whole because the whole description identifies the perturbation (``perturbations``).
PerturbationDescription = dict[str, Any]


class MetricName(msgspec.Struct, frozen=True, gc=False):
    """A stat's name. Not hashable (the perturbation is a dict); compare with ``==``."""

    name: str
    split: str | None = None
    sub_split: str | None = None
    perturbation: PerturbationDescription | None = None


# A stat's count: how many values it aggregates. A negative one (or NaN) cannot come from HELM
# and would silently drop the stat's rows, so the file fails to decode (the run fails, saying
# where).
Count = Annotated[float, msgspec.Meta(ge=0)]


class Stat(msgspec.Struct, gc=False):
    """A HELM ``Stat``. ``mean``/``stddev`` are absent when ``count == 0``."""

    name: MetricName
    count: Count = 0.0
    sum: float | None = None
    sum_squared: float | None = None
    mean: float | None = None
    stddev: float | None = None


class PerInstanceStats(msgspec.Struct, gc=False):
    instance_id: str
    stats: list[Stat]
    train_trial_index: Index = 0
    perturbation: PerturbationDescription | None = None


# --- scenario_state.json --------------------------------------------------------------------


class Reference(msgspec.Struct, gc=False):
    output: str | Text
    tags: list[str] = []


class Instance(msgspec.Struct, gc=False):
    id: str
    input: str | Text = ""
    references: list[Reference] = []
    split: str | None = None
    sub_split: str | None = None
    perturbation: PerturbationDescription | None = None


class Request(msgspec.Struct, gc=False):
    prompt: str = ""
    temperature: float | None = None
    top_p: float | None = None
    top_k_per_token: float | None = None
    max_tokens: float | None = None
    num_completions: int | float | None = None
    stop_sequences: list[str] | None = None
    echo_prompt: bool = False
    presence_penalty: int | float | None = None
    frequency_penalty: int | float | None = None
    multimodal_prompt: MultimediaObject | None = None
    messages: list[dict[str, Any]] | None = None


class Thinking(msgspec.Struct, gc=False):
    text: str | None = None


class Completion(msgspec.Struct, gc=False):
    """A HELM ``GeneratedOutput`` (``Sequence`` before v0.2). ``tokens`` is deliberately absent."""

    text: str = ""
    thinking: Thinking | None = None


class RequestResult(msgspec.Struct, gc=False):
    success: bool = True
    completions: list[Completion] = []
    request_time: float | None = None
    request_datetime: float | None = None
    error: str | None = None


class RequestState(msgspec.Struct, gc=False):
    instance: Instance
    request: Request
    train_trial_index: Index = 0
    reference_index: Index | None = None
    request_mode: str | None = None
    output_mapping: dict[str, str] | None = None
    result: RequestResult | None = None
    annotations: dict[str, Any] | None = None


class ScenarioState(msgspec.Struct, gc=False):
    request_states: list[RequestState]


# --- decoding -------------------------------------------------------------------------------


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    """One reusable decoder per target type (building one costs more than a small decode)."""
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    return decoder


def load_json(path: Path, type_: type[T]) -> T:
    """Decode the JSON file at ``path`` into ``type_``.

    Raises :class:`RunConversionError` with ``file=path.name`` for a missing or unreadable file,
    malformed JSON, or JSON whose shape does not fit ``type_``. Bare ``NaN``/``Infinity``
    (old HELM stats) and lone surrogate escapes are accepted through a slower fallback.
    """
    name = path.name
    try:
        data = read_input(path)
    except OSError as exc:
        raise RunConversionError(name, f"unreadable: {exc.strerror or exc}") from None
    if not data.strip():
        raise RunConversionError(name, f"malformed JSON: empty file ({len(data)} bytes)")
    return decode_json(data, type_, name)


def decode_json(data: bytes | memoryview, type_: type[T], file: str, at: str = "$") -> T:
    """Decode one JSON value (a whole file, or the element at JSON path ``at`` of ``file``).

    Same errors and the same NaN / lone-surrogate fallback as :func:`load_json`; error paths
    are reported from ``at`` (e.g. ``$.request_states[7].instance``).
    """
    try:
        return _decoder(type_).decode(data)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise RunConversionError(file, f"unexpected shape: {_rebase(str(exc), at)}") from None
    except RecursionError:
        raise RunConversionError(file, too_deep(at)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        first_error = exc
    # Not strict JSON. Lone UTF-16 surrogate escapes become U+FFFD (Arrow cannot store them)
    # and the stdlib parser accepts NaN / Infinity (old HELM stats files).
    try:
        obj = json.loads(_replace_lone_surrogates(bytes(data)))
    except UnicodeDecodeError as exc:
        where = "" if at == "$" else f" in {at}"
        raise RunConversionError(
            file, f"malformed JSON: not valid UTF-8 (byte {exc.start}{where}: {exc.reason})"
        ) from None
    except RecursionError:
        raise RunConversionError(file, too_deep(at)) from None
    except ValueError:
        where = "" if at == "$" else f" (in {at})"
        raise RunConversionError(file, f"malformed JSON: {first_error}{where}") from None
    try:
        return msgspec.convert(obj, type_)
    except RecursionError:
        raise RunConversionError(file, too_deep(at)) from None
    except msgspec.ValidationError as exc:
        raise RunConversionError(file, f"unexpected shape: {_rebase(str(exc), at)}") from None


def too_deep(at: str = "$") -> str:
    """The reason of a file nested deeper than the parsers' recursion limit (no HELM file is
    nested more than a few levels; 100,000 nested arrays are an attack or a broken writer)."""
    where = "" if at == "$" else f" (in {at})"
    return f"malformed JSON: nested too deeply (past the parser's recursion limit){where}"


def _rebase(message: str, at: str) -> str:
    """A msgspec error message with its JSON path made relative to ``at`` instead of ``$``."""
    if at == "$":
        return message
    if " - at `$" in message:
        return message.replace(" - at `$", f" - at `{at}", 1)
    return f"{message} - at `{at}`"


_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _replace_lone_surrogates(data: bytes) -> bytes:
    """Replace ``\\uXXXX`` escapes of unpaired UTF-16 surrogates with ``\\ufffd``."""
    return _LONE_SURROGATE.sub(rb"\\ufffd", data)
