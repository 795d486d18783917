"""A run's two big files reduced to what rows need: per-instance entries, and where each
entry's request state is.

``per_instance_stats.json`` becomes one :class:`EntryStats` per (instance id, perturbation
key, train trial) key, the perturbation key being the whole canonical description
(``perturbations.perturbation_key``, so same-named variants are distinct entries): the usable
scores of the metrics the caller keeps (its ``describe`` function maps a stat name to its
(evaluation_result_id, metric, split), or None for a metric not kept), sorted by
evaluation_result_id (the first stat of an id wins), the token sums and the multiple-choice
``predicted_index``; the per-entry ``Stat`` objects are dropped as soon as an entry is
reduced. A key that repeats is an error.

``scenario_state.json`` becomes a :class:`RequestStates` index: for each key the first request
state (generation, joint multiple choice), or, for ``multiple_choice_separate_*`` runs (states
carry a ``reference_index``), the first "original"-mode state per reference (calibration
requests are left out); plus the run-level facts taken from all states (minimum
``request_datetime``, number of distinct instance ids, the first state for generation
settings). Every state is decoded with its full type, so a malformed state fails the run
whichever state the rows end up needing.

Both files are read one of two ways, chosen per file by the caller:

- **whole** (:class:`InMemoryStates`): ``helm.run_files.load_json`` decodes the file in one
  msgspec call, the fastest way for files that fit in memory comfortably;
- **streamed** (:class:`StreamedStates`): ``helm.array_stream`` cuts the array's elements out of the
  file block by block and each is decoded on its own. The decoded states themselves are kept
  as handles while their texts add up to at most ``KEEP_DECODED_BYTES`` (64 MiB) per run; past
  that the index keeps only (offset, length) per state and :meth:`RequestStates.reader` reads
  back, with ``pread``, only the states rows use, in the order rows need them. Memory is then
  the index, the reduced entries and at most that much text, not the file. (A decoded state
  holds no per-token lists, so a generation-heavy file of 1 GB keeps most of its states in a
  few tens of MB: it is decoded once instead of twice.)

Both give the same index and the same errors (paths in messages are from the element on in
the streamed case, e.g. ``$.request_states[7].instance``). Nothing is written; nothing
survives a crash.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

from helmproc.engine.errors import RunConversionError
from helmproc.engine.helm.array_stream import iter_array_elements, read_span
from helmproc.engine.helm.file_names import PER_INSTANCE_STATS_FILE, SCENARIO_STATE_FILE
from helmproc.engine.helm.perturbations import key_name, perturbation_key
from helmproc.engine.helm.run_files import (
    MetricName,
    PerInstanceStats,
    RequestState,
    ScenarioState,
    Stat,
    decode_json,
    load_json,
    text_of,
)
from helmproc.engine.helm.stat_values import finite, finite_int, stat_value
from helmproc.engine.input_files import open_input

__all__ = [
    "CoreId",
    "DescribeStat",
    "EntryKey",
    "EntryStats",
    "InMemoryStates",
    "RequestStates",
    "Span",
    "StreamedStates",
    "describe_key",
    "read_entries",
    "read_states",
    "sorted_keys",
]

# (instance id, perturbation key or None, train trial index): HELM's per-instance key.
EntryKey = tuple[str, str | None, int]

ORIGINAL_REQUEST_MODE = "original"
PREDICTED_INDEX_STAT = "predicted_index"
REQUEST_STATES_KEY = "request_states"
# Streamed scenario_state.json: decoded states kept (not re-read) up to this many text bytes.
KEEP_DECODED_BYTES = 64 << 20
DECODED_STATE_OVERHEAD = 2048  # structs, small strings, list and dict slots of one state

H = TypeVar("H")


def describe_key(key: EntryKey) -> str:
    instance_id, perturbation, trial = key
    return f"instance {instance_id!r} (perturbation {perturbation!r}, train trial {trial})"


def sorted_keys(keys: Iterable[EntryKey]) -> list[EntryKey]:
    """Row order: instance id, then unperturbed before perturbed (by name, then by whole
    description), then trial."""
    return sorted(
        keys, key=lambda k: (k[0], k[1] is not None, key_name(k[1]) or "", k[1] or "", k[2])
    )


# --- per_instance_stats.json ----------------------------------------------------------------


# (evaluation_result_id, metric, split) of a kept stat name.
CoreId = tuple[str, str, str | None]
# What the caller keeps: a stat name's CoreId, or None for a metric it does not keep.
DescribeStat = Callable[[MetricName], CoreId | None]


@dataclass(slots=True)
class EntryStats:
    """What one per-instance entry contributes: core scores and token sums.

    Kept compact (a big run holds one per entry until its rows are written): the ids of the
    core stats are one tuple shared by every entry with the same metrics, the scores an
    ``array('d')`` beside it.
    """

    core_ids: tuple[CoreId, ...]  # first per result id, sorted by result id
    scores: array[float]
    prompt_tokens: float | None = None
    output_tokens: float | None = None
    completion_tokens: float | None = None
    predicted_index: float | None = None

    @property
    def n_rows(self) -> int:
        """Rows of this entry: one per core stat, or the one fallback row."""
        return len(self.core_ids) or 1


# How a per-instance stat is used: a core metric, a token count, the MC choice, or not at all.
_CORE, _PROMPT_TOKENS, _OUTPUT_TOKENS, _COMPLETION_TOKENS, _PREDICTED, _UNUSED = range(6)
_SPECIAL_STATS = {
    "num_prompt_tokens": _PROMPT_TOKENS,
    "num_output_tokens": _OUTPUT_TOKENS,
    "num_completion_tokens": _COMPLETION_TOKENS,
    PREDICTED_INDEX_STAT: _PREDICTED,
}


_NO_CORE_ID: CoreId = ("", "", None)
# Layouts remembered per file: perturbed runs alternate between a few name sequences
# (unperturbed and one per perturbation), so each is worked out once.
_MAX_LAYOUTS = 16


class StatLayout:
    """The stats of an entry that matter, by position, for one sequence of stat names.

    The entries of a file nearly always list one of a few sequences of names (27 for an MMLU
    run, of which 12 matter), so :func:`scan_entry_stats` compares an entry's names with the
    sequences seen before (list comparisons in C) and, on a match, visits only the positions
    recorded for it instead of working out the role of every stat.
    """

    def __init__(self, describe: DescribeStat) -> None:
        self.describe = describe
        self.layouts: list[tuple[list[MetricName], list[tuple[int, int, CoreId]]]] = []

    def _role(self, name: MetricName) -> tuple[int, CoreId]:
        core_id = self.describe(name)
        if core_id is not None:
            return _CORE, (sys.intern(core_id[0]), sys.intern(core_id[1]), core_id[2])
        return _SPECIAL_STATS.get(name.name, _UNUSED), _NO_CORE_ID

    def positions(self, stats: Sequence[Stat]) -> list[tuple[int, int, CoreId]]:
        names = [stat.name for stat in stats]
        layouts = self.layouts
        if layouts and layouts[0][0] == names:
            return layouts[0][1]
        for index in range(1, len(layouts)):
            if layouts[index][0] == names:
                found = layouts.pop(index)
                layouts.insert(0, found)
                return found[1]
        used = []
        for position, name in enumerate(names):
            role, ids = self._role(name)
            if role != _UNUSED:
                used.append((position, role, ids))
        layouts.insert(0, (names, used))
        del layouts[_MAX_LAYOUTS:]
        return used


def scan_entry_stats(
    stats: Sequence[Stat],
    layout: StatLayout,
    shared: dict[tuple[CoreId, ...], tuple[CoreId, ...]] | None = None,
) -> EntryStats:
    """One pass over an entry's stats (the first stat of each name / result id wins).
    ``layout`` knows which stats matter (and skips the rest when entries list the same
    names), ``shared`` interns the tuples of core ids across the entries of a file."""
    core: dict[str, tuple[CoreId, float]] = {}
    prompt_tokens = output_tokens = completion_tokens = predicted_index = None
    for position, role, ids in layout.positions(stats):
        stat = stats[position]
        if role == _CORE:
            if ids[0] not in core:
                score = stat_value(stat)
                if score is not None:
                    core[ids[0]] = (ids, score)
        elif role == _PREDICTED:
            if predicted_index is None:
                predicted_index = stat_value(stat)
        elif role == _PROMPT_TOKENS:
            if prompt_tokens is None:
                prompt_tokens = stat.sum
        elif role == _OUTPUT_TOKENS:
            if output_tokens is None:
                output_tokens = stat.sum
        elif completion_tokens is None:
            completion_tokens = stat.sum
    ordered = [core[k] for k in sorted(core)]
    core_ids = tuple(ids for ids, _ in ordered)
    if shared is not None:
        core_ids = shared.setdefault(core_ids, core_ids)
    return EntryStats(
        core_ids=core_ids,
        scores=array("d", [score for _, score in ordered]),
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        completion_tokens=completion_tokens,
        predicted_index=predicted_index,
    )


def read_entries(path: Path, describe: DescribeStat, *, stream: bool) -> dict[EntryKey, EntryStats]:
    """The reduced entries of ``per_instance_stats.json`` at ``path`` (see module docstring)."""
    entries: dict[EntryKey, EntryStats] = {}
    shared: dict[tuple[CoreId, ...], tuple[CoreId, ...]] = {}
    layout = StatLayout(describe)
    keys: dict[str, str] = {}  # perturbation key text, interned per file
    for entry in _per_instance_entries(path, stream):
        pkey = perturbation_key(entry.perturbation)  # None: no perturbation
        if pkey is not None:
            pkey = keys.setdefault(pkey, pkey)
        key = (sys.intern(entry.instance_id), pkey, entry.train_trial_index)
        if key in entries:
            reason = f"two entries for {describe_key(key)}"
            raise RunConversionError(PER_INSTANCE_STATS_FILE, reason)
        entries[key] = scan_entry_stats(entry.stats, layout, shared)
    return entries


def _per_instance_entries(path: Path, stream: bool) -> Iterator[PerInstanceStats]:
    if not stream:
        yield from load_json(path, list[PerInstanceStats])
        return
    for index, (_, data) in enumerate(iter_array_elements(path, None)):
        yield decode_json(data, PerInstanceStats, PER_INSTANCE_STATS_FILE, f"$[{index}]")


# --- scenario_state.json --------------------------------------------------------------------


class Span(NamedTuple):
    """Where a streamed request state's element is in ``scenario_state.json``."""

    offset: int
    length: int
    position: int  # index in request_states, for error messages


@dataclass
class RequestStates(ABC, Generic[H]):
    """The request-state index of a run; ``H`` is how a state is held (see module docstring)."""

    single: dict[EntryKey, H] = field(default_factory=dict)
    by_reference: dict[EntryKey, dict[int, H]] = field(default_factory=dict)
    first: RequestState | None = None
    samples_number: int = 0
    sample_ids: list[str] = field(default_factory=list)  # distinct instance ids, sorted
    _min_datetime: float | None = None
    _instance_ids: set[str] = field(default_factory=set)

    @property
    def evaluation_timestamp(self) -> str | None:
        """Minimum ``result.request_datetime`` (Unix seconds) as a string, or None."""
        return str(int(self._min_datetime)) if self._min_datetime is not None else None

    def add(self, state: RequestState, handle: H) -> None:
        instance = state.instance
        instance_id = sys.intern(instance.id)
        key = (instance_id, perturbation_key(instance.perturbation), state.train_trial_index)
        if self.first is None:
            self.first = state
        self._instance_ids.add(instance_id)
        result = state.result
        if result is not None:
            when = finite(result.request_datetime)
            if when is not None and (self._min_datetime is None or when < self._min_datetime):
                self._min_datetime = when
        if state.reference_index is None:
            self.single.setdefault(key, handle)
        elif state.request_mode in (None, ORIGINAL_REQUEST_MODE):
            self.by_reference.setdefault(key, {}).setdefault(state.reference_index, handle)

    def finish(self) -> None:
        self.sample_ids = sorted(self._instance_ids)
        self.samples_number = len(self.sample_ids)
        self._instance_ids = set()

    def choose(self, key: EntryKey, predicted_index: float | None) -> H | None:
        """The state rows of ``key`` use: its single state, else (separate multiple choice)
        the state of the reference HELM chose (``predicted_index``), else of reference 0."""
        state = self.single.get(key)
        if state is not None:
            return state
        references = self.by_reference.get(key)
        if not references:
            return None
        predicted = finite_int(predicted_index)
        if predicted is not None and predicted in references:
            return references[predicted]
        return references[0] if 0 in references else references[min(references)]

    @abstractmethod
    def reader(self) -> AbstractContextManager[Callable[[H], RequestState]]:
        """A context manager giving the function that turns a handle into its state."""


@dataclass
class InMemoryStates(RequestStates[RequestState]):
    """The whole ``scenario_state.json`` decoded; handles are the states themselves."""

    @contextmanager
    def reader(self) -> Iterator[Callable[[RequestState], RequestState]]:
        yield lambda state: state


@dataclass
class StreamedStates(RequestStates["Span | RequestState"]):
    """``scenario_state.json`` indexed by decoded states up to a byte budget, then by element
    spans read back on demand."""

    path: Path = Path()

    @contextmanager
    def reader(self) -> Iterator[Callable[[Span | RequestState], RequestState]]:
        with open_input(self.path) as fh:

            def load(span: Span | RequestState) -> RequestState:
                if not isinstance(span, Span):
                    return span  # kept decoded
                data = read_span(fh, span.offset, span.length)
                at = f"$.{REQUEST_STATES_KEY}[{span.position}]"
                return decode_json(data, RequestState, SCENARIO_STATE_FILE, at)

            yield load


def _decoded_bytes(state: RequestState, element_bytes: int) -> int:
    """About what a decoded state holds: its texts plus a fixed overhead; the whole element's
    size when it carries free-form JSON (annotations, chat messages) of unknown size."""
    if state.annotations is not None or state.request.messages is not None:
        return element_bytes
    result = state.result
    n = DECODED_STATE_OVERHEAD + len(state.request.prompt)
    if result is not None:
        n += sum(len(c.text) for c in result.completions)
    for reference in state.instance.references:
        n += len(text_of(reference.output))
    return n


def read_states(path: Path, *, stream: bool) -> RequestStates[Any]:
    """The request-state index of ``scenario_state.json`` at ``path``."""
    if not stream:
        memory = InMemoryStates()
        for state in load_json(path, ScenarioState).request_states:
            memory.add(state, state)
        memory.finish()
        return memory
    streamed = StreamedStates(path=path)
    keep_left = KEEP_DECODED_BYTES
    elements = iter_array_elements(path, REQUEST_STATES_KEY)
    for index, (offset, data) in enumerate(elements):
        at = f"$.{REQUEST_STATES_KEY}[{index}]"
        state = decode_json(data, RequestState, SCENARIO_STATE_FILE, at)
        size = _decoded_bytes(state, len(data)) if keep_left > 0 else 0
        keep_left -= size
        streamed.add(state, state if size and keep_left >= 0 else Span(offset, len(data), index))
    streamed.finish()
    return streamed
