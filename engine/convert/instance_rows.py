"""Build the ``instances`` table of a run, batch by batch.

One row per (per-instance entry x usable stat of a kept metric), in the order of the run's
sorted entry keys and, within an entry, of evaluation_result_id; ``metric_name`` is the
row's HELM metric. An entry without any gets one row for its texts with ``score`` and
``is_correct`` null (HELM computed no score: nothing is invented) and metadata
``score_missing`` saying why (a request never executed, as in a dry run, or no per-instance
stat of a kept metric). ``is_correct`` follows :func:`eee_fields.is_correct` (true only at
an indicator metric's maximum, null for continuous metrics). Each row carries the stat's own
score, so perturbed copies (each perturbation variant under its whole description) and extra
train trials keep their own scores.

Row fields (EEE's instance-level record): input.raw is the request prompt, output.raw the
completions, reasoning_trace their ``thinking`` texts, token_usage the entry's stat sums
(``num_prompt_tokens``, ``num_output_tokens``; total = prompt + ``num_completion_tokens``;
reasoning = completion - output when positive and the request did not echo its prompt),
generation_time_ms the request time, ``error`` HELM's ``result.error`` when the request
failed (``success: false``). A request state without a ``result`` (never executed) gives
empty outputs and no answer attribution. Shapes HELM grew over time:

- multimodal requests (``prompt`` empty, ``multimodal_prompt`` set): input.raw is the text
  parts of the multimodal prompt concatenated in order (or, for a chat request, the message
  contents joined by newlines), and metadata ``media`` names the other parts, e.g.
  ``"image/png x2"`` (content types sorted, counted);
- encrypted runs: every text goes through ``decrypt.Decryptor``; a row whose texts still hold
  ``[encrypted_text_N]`` placeholders gets metadata ``encrypted: "true"``;
- ``sub_split`` of the instance goes to metadata ``sub_split``;
- ``annotations`` (LLM-judge output) go to metadata ``annotations`` as compact JSON text
  (msgspec encoding: key order as in the file, NaN written as null).

EEE's ``metadata`` is a string-to-string map (here a list of key/value structs, null when
empty); keys appear in the order sub_split, media, annotations, encrypted, score_missing.

Batches. Columns are built as Python lists per entry, converted with ``pa.array`` /
``StructArray.from_arrays`` and repeated per metric row with one ``take``. A batch is closed
once its estimated Arrow size (text lengths times rows, plus a fixed cost per row) reaches
``batch_bytes``, so a run's rows never have to sit in memory at once; batch boundaries depend
only on the input, so output is deterministic. Nothing is written here; a failure raises
:class:`RunConversionError` and the caller decides what to do with batches already built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import pyarrow as pa

from helmproc.engine.convert import eee_fields as eee
from helmproc.engine.convert import schemas as tables
from helmproc.engine.convert.run_index import CoreId, EntryKey, EntryStats, RequestStates
from helmproc.engine.facts import RunRef
from helmproc.engine.helm.decrypt import Decryptor, any_placeholder
from helmproc.engine.helm.perturbations import key_name
from helmproc.engine.helm.run_files import Completion, RequestState, text_of
from helmproc.engine.helm.stat_values import finite, finite_int

__all__ = ["BATCH_BYTES", "RunFacts", "instance_batches"]

H = TypeVar("H")

# Estimated Arrow bytes of one batch of rows (texts are repeated once per metric row).
BATCH_BYTES = 16 << 20
ROW_OVERHEAD_BYTES = 256

SUB_SPLIT_KEY = "sub_split"
MEDIA_KEY = "media"
ANNOTATIONS_KEY = "annotations"
ENCRYPTED_KEY = "encrypted"
SCORE_MISSING_KEY = "score_missing"
# Why a row has no score (metadata ``score_missing``).
NOT_EXECUTED = "request not executed: HELM computed no score (e.g. a dry run)"
NO_KEPT_METRIC = "HELM computed no per-instance stat of a kept metric for this entry"
MAX_SCORE = eee.INDICATOR_MAX

_JSON = msgspec.json.Encoder()


@dataclass(frozen=True)
class RunFacts:
    """Run-level values shared by every row of a run (both tables)."""

    ref: RunRef
    model_id: str
    model_deployment: str | None
    dataset_name: str
    evaluation_id: str
    evaluation_timestamp: str | None
    source_organization: str | None = None


def instance_batches(
    plan: Sequence[tuple[EntryKey, EntryStats, H]],
    states: RequestStates[H],
    decryptor: Decryptor,
    facts: RunFacts,
    batch_bytes: int = BATCH_BYTES,
) -> Iterator[pa.Table]:
    """The run's instance rows as tables of ``tables.INSTANCES_SCHEMA``.

    ``plan`` lists each entry (in row order) with its stats and the handle of its request
    state in ``states``. Yields nothing for a run without entries.
    """
    with states.reader() as load:
        batch = _Batch(decryptor)
        for key, stats, handle in plan:
            batch.add(key, stats, load(handle))
            if batch.weight >= batch_bytes:
                yield batch.table(facts)
                batch = _Batch(decryptor)
        if batch.sample_id:
            yield batch.table(facts)


def _prompt_text(state: RequestState) -> str:
    """The text of the request: its prompt, else the text parts of a multimodal prompt,
    else the contents of chat messages."""
    request = state.request
    if request.prompt:
        return request.prompt
    multimodal = request.multimodal_prompt
    if multimodal is not None:
        return "".join(o.text for o in multimodal.media_objects if o.text is not None)
    if request.messages:
        contents = (m.get("content") for m in request.messages)
        return "\n".join(c for c in contents if isinstance(c, str))
    return ""


def _media_note(state: RequestState) -> str | None:
    """``"image/png x2, audio/wav x1"`` for the non-text parts of the input, else None."""
    multimodal = state.request.multimodal_prompt
    if multimodal is None:
        source = state.instance.input
        multimodal = None if isinstance(source, str) else source.multimedia_content
    if multimodal is None:
        return None
    media = multimodal.media_objects
    counts = Counter(o.content_type or "unknown" for o in media if o.text is None)
    if not counts:
        return None
    return ", ".join(f"{kind} x{n}" for kind, n in sorted(counts.items()))


@dataclass(frozen=True)
class _RowInfo:
    """The per-row columns one set of core ids gives every entry that has it."""

    core_ids: tuple[CoreId, ...]
    result_ids: tuple[str, ...]
    metrics: tuple[str, ...]
    splits: tuple[str | None, ...]
    null_split: bool  # some split is None (then the instance's split stands in)
    indicator: tuple[bool, ...]  # indicator-style metric (is_correct = score is the maximum)

    @classmethod
    def of(cls, core_ids: tuple[CoreId, ...]) -> _RowInfo:
        splits = tuple(split for _, _, split in core_ids)
        return cls(
            core_ids=core_ids,
            result_ids=tuple(result_id for result_id, _, _ in core_ids),
            metrics=tuple(metric for _, metric, _ in core_ids),
            splits=splits,
            null_split=any(split is None for split in splits),
            indicator=tuple(eee.is_indicator(metric) for _, metric, _ in core_ids),
        )


class _Batch:
    """Column lists of one batch: per entry (instance, perturbation, trial) and per row
    (entry x core metric)."""

    def __init__(self, decryptor: Decryptor) -> None:
        self.decryptor = decryptor
        # Without keys ``Decryptor.text`` returns every text unchanged: skip the calls.
        self.decrypting = decryptor.has_keys
        self.weight = 0
        # id(core ids tuple) -> (the tuple, result ids, splits, any split null, scored flags):
        # entries of a file share one tuple per metric set (``run_index`` interns them).
        self._row_info: dict[int, _RowInfo] = {}
        # per entry
        self.sample_id: list[str] = []
        self.perturbation: list[str | None] = []
        self.train_trial: list[int] = []
        self.prompt: list[str] = []
        self.reference: list[list[str]] = []
        self.choices: list[list[str]] = []
        self.output: list[list[str]] = []
        self.reasoning: list[list[str]] = []
        self.extracted: list[str | None] = []
        self.sample_hash: list[str] = []
        self.input_tokens: list[int | None] = []
        self.output_tokens: list[int | None] = []
        self.total_tokens: list[int | None] = []
        self.reasoning_tokens: list[int | None] = []
        self.generation_ms: list[float | None] = []
        self.error: list[str | None] = []
        self.metadata: list[list[dict[str, str]] | None] = []
        # per row
        self.entry_index: list[int] = []
        self.result_id: list[str | None] = []
        self.metric: list[str | None] = []
        self.split: list[str | None] = []
        self.score: list[float | None] = []
        self.is_correct: list[bool | None] = []

    def add(self, key: EntryKey, scanned: EntryStats, state: RequestState) -> None:
        instance_id, perturbation, trial = key
        entry_index = len(self.sample_id)
        instance = state.instance
        references = [text_of(r.output) for r in instance.references]
        prompt = _prompt_text(state)
        result = state.result
        completions: list[Completion] = result.completions if result is not None else []
        outputs = [c.text for c in completions]
        mapping = state.output_mapping
        choices = list(mapping.values()) if mapping else references
        reasoning = [
            c.thinking.text
            for c in completions
            if c.thinking is not None and c.thinking.text is not None
        ]
        if self.decrypting:
            text = self.decryptor.text
            decrypted = [text(v) for v in references]
            choices = decrypted if choices is references else [text(v) for v in choices]
            references = decrypted
            prompt = text(prompt)
            outputs = [text(v) for v in outputs]
            reasoning = [text(v) for v in reasoning]
        correct = [
            value
            for r, value in zip(instance.references, references, strict=True)
            if "correct" in r.tags
        ]
        self.sample_id.append(instance_id)
        self.perturbation.append(perturbation)
        self.train_trial.append(trial)
        self.prompt.append(prompt)
        self.reference.append(correct)
        self.choices.append(choices)
        self.output.append(outputs)
        self.reasoning.append(reasoning)
        self.extracted.append(outputs[0].strip() if outputs else None)
        self.sample_hash.append(eee.sample_hash(prompt, correct[0] if correct else ""))
        self._add_token_usage(scanned, state.request.echo_prompt)
        request_time = finite(result.request_time) if result is not None else None
        self.generation_ms.append(
            request_time * 1000.0 if request_time is not None and request_time >= 0 else None
        )
        failed = result is not None and not result.success
        self.error.append((result.error or "request failed") if failed and result else None)
        texts = [prompt, *references, *choices, *outputs]
        encrypted = any_placeholder(texts)
        source = instance.input
        unscored = None
        if not scanned.core_ids:
            unscored = NOT_EXECUTED if result is None else NO_KEPT_METRIC
        if (  # the common case, without a call per entry: no metadata at all
            not encrypted
            and unscored is None
            and instance.sub_split is None
            and state.annotations is None
            and state.request.multimodal_prompt is None
            and (isinstance(source, str) or source.multimedia_content is None)
        ):
            metadata = None
        else:
            metadata = self._metadata(state, encrypted, unscored)
        self.metadata.append(metadata)
        n_rows = self._add_rows(entry_index, instance.split, scanned)
        size = sum(map(len, texts)) + sum(map(len, reasoning))
        if metadata:
            size += sum(len(kv["value"]) for kv in metadata)
        self.weight += (size + ROW_OVERHEAD_BYTES) * n_rows

    def _add_rows(self, entry_index: int, instance_split: str | None, scanned: EntryStats) -> int:
        if not scanned.core_ids:
            # HELM computed no kept metric for this entry: one row for its texts, no score
            # (metadata ``score_missing`` says why).
            self.entry_index.append(entry_index)
            self.result_id.append(None)
            self.metric.append(None)
            self.split.append(instance_split)
            self.score.append(None)
            self.is_correct.append(None)
            return 1
        core_ids = scanned.core_ids
        info = self._row_info.get(id(core_ids))
        if info is None or info.core_ids is not core_ids:
            info = self._row_info[id(core_ids)] = _RowInfo.of(core_ids)
        n_rows = len(core_ids)
        scores = scanned.scores
        self.entry_index.extend([entry_index] * n_rows)
        self.result_id.extend(info.result_ids)
        self.metric.extend(info.metrics)
        if info.null_split:
            self.split.extend(s if s is not None else instance_split for s in info.splits)
        else:
            self.split.extend(info.splits)
        self.score.extend(scores)
        # eee.is_correct(metric, score), with the metric's kind decided once per metric set
        flags = zip(info.indicator, scores, strict=True)
        self.is_correct.extend([(s >= MAX_SCORE) if kind else None for kind, s in flags])
        return n_rows

    def _metadata(
        self, state: RequestState, encrypted: bool, unscored: str | None
    ) -> list[dict[str, str]] | None:
        pairs: list[dict[str, str]] = []
        if state.instance.sub_split is not None:
            pairs.append({"key": SUB_SPLIT_KEY, "value": state.instance.sub_split})
        media = _media_note(state)
        if media is not None:
            pairs.append({"key": MEDIA_KEY, "value": media})
        if state.annotations is not None:
            annotations = _JSON.encode(state.annotations).decode("utf-8")
            pairs.append({"key": ANNOTATIONS_KEY, "value": annotations})
        if encrypted:
            pairs.append({"key": ENCRYPTED_KEY, "value": "true"})
        if unscored is not None:
            pairs.append({"key": SCORE_MISSING_KEY, "value": unscored})
        return pairs or None

    def _add_token_usage(self, scanned: EntryStats, echo_prompt: bool) -> None:
        """EEE token_usage from the entry's stat sums (all None if prompt/output are absent).

        reasoning_tokens = completion - output tokens when positive, except for requests that
        echo the prompt (separate-MC scoring), where the difference is the echoed text.
        """
        prompt = finite_int(scanned.prompt_tokens)
        output = finite_int(scanned.output_tokens)
        completion = finite_int(scanned.completion_tokens)
        if prompt is None or output is None or prompt < 0 or output < 0:
            self.input_tokens.append(None)
            self.output_tokens.append(None)
            self.total_tokens.append(None)
            self.reasoning_tokens.append(None)
            return
        self.input_tokens.append(prompt)
        self.output_tokens.append(output)
        self.total_tokens.append(prompt + (completion if completion is not None else output))
        reasoning = completion - output if completion is not None and not echo_prompt else 0
        self.reasoning_tokens.append(reasoning if reasoning > 0 else None)

    # --- Arrow --------------------------------------------------------------------------

    def table(self, facts: RunFacts) -> pa.Table:
        n_entries = len(self.sample_id)
        n_rows = len(self.entry_index)
        string_list = pa.list_(pa.string())
        nulls = pa.nulls
        struct = tables.struct_by_name
        per_entry = pa.table(
            {
                "perturbation": pa.array(
                    [key_name(k) for k in self.perturbation], type=pa.string()
                ),
                "perturbation_description": pa.array(self.perturbation, type=pa.string()),
                "train_trial": pa.array(self.train_trial, type=pa.int32()),
                "sample_id": pa.array(self.sample_id, type=pa.string()),
                "sample_hash": pa.array(self.sample_hash, type=pa.string()),
                "input": struct(
                    {
                        "raw": pa.array(self.prompt, type=pa.string()),
                        "formatted": nulls(n_entries, pa.string()),
                        "reference": pa.array(self.reference, type=string_list),
                        "choices": pa.array(self.choices, type=string_list),
                    },
                    tables.INPUT_TYPE,
                ),
                "output": struct(
                    {
                        "raw": pa.array(self.output, type=string_list),
                        "reasoning_trace": pa.array(self.reasoning, type=string_list),
                    },
                    tables.OUTPUT_TYPE,
                ),
                "answer_attribution": self._answer_attribution(),
                "token_usage": self._token_usage(),
                "performance": struct(
                    {
                        "latency_ms": nulls(n_entries, pa.float64()),
                        "time_to_first_token_ms": nulls(n_entries, pa.float64()),
                        "generation_time_ms": pa.array(self.generation_ms, type=pa.float64()),
                        "additional_details": nulls(n_entries, tables.STRING_MAP),
                    },
                    tables.PERFORMANCE_TYPE,
                ),
                "error": pa.array(self.error, type=pa.string()),
                "metadata": pa.array(self.metadata, type=tables.STRING_MAP),
            }
        ).take(pa.array(self.entry_index, type=pa.int64()))

        def repeat(value: Any) -> pa.Array:
            return pa.repeat(pa.scalar(value, type=pa.string()), n_rows)

        evaluation = struct(
            {
                "score": pa.array(self.score, type=pa.float64()),
                "is_correct": pa.array(self.is_correct, type=pa.bool_()),
                "num_turns": nulls(n_rows, pa.int32()),
                "tool_calls_count": nulls(n_rows, pa.int32()),
            },
            tables.EVALUATION_TYPE,
        )
        entry = per_entry.column
        columns = {
            **tables.provenance_columns(facts.ref, n_rows),
            "helm_perturbation": entry("perturbation"),
            "helm_perturbation_description": entry("perturbation_description"),
            "helm_train_trial": entry("train_trial"),
            "helm_split": pa.array(self.split, type=pa.string()),
            "schema_version": repeat(eee.SCHEMA_VERSION),
            "evaluation_id": repeat(facts.evaluation_id),
            "model_id": repeat(facts.model_id),
            "evaluation_name": repeat(facts.dataset_name),
            "evaluation_result_id": pa.array(self.result_id, type=pa.string()),
            "metric_name": pa.array(self.metric, type=pa.string()),
            "sample_id": entry("sample_id"),
            "sample_hash": entry("sample_hash"),
            "interaction_type": repeat(eee.INTERACTION_TYPE),
            "input": entry("input"),
            "output": entry("output"),
            "messages": nulls(n_rows, pa.string()),
            "answer_attribution": entry("answer_attribution"),
            "evaluation": evaluation,
            "token_usage": entry("token_usage"),
            "performance": entry("performance"),
            "error": entry("error"),
            "metadata": entry("metadata"),
        }
        return tables.table_by_name(columns, tables.INSTANCES_SCHEMA)

    def _answer_attribution(self) -> pa.Array:
        """One item per entry with a completion (turn 0, from output.raw), else empty."""
        values = [v for v in self.extracted if v is not None]
        offsets = [0]
        for v in self.extracted:
            offsets.append(offsets[-1] + (v is not None))
        n = len(values)
        items = tables.struct_by_name(
            {
                "turn_idx": pa.repeat(pa.scalar(0, type=pa.int32()), n),
                "source": pa.repeat(pa.scalar(eee.ATTRIBUTION_SOURCE, type=pa.string()), n),
                "extracted_value": pa.array(values, type=pa.string()),
                "extraction_method": pa.repeat(
                    pa.scalar(eee.ATTRIBUTION_METHOD, type=pa.string()), n
                ),
                "is_terminal": pa.repeat(pa.scalar(True, type=pa.bool_()), n),
            },
            tables.ANSWER_ATTRIBUTION_TYPE.value_type,
        )
        return pa.ListArray.from_arrays(
            pa.array(offsets, type=pa.int32()), items, type=tables.ANSWER_ATTRIBUTION_TYPE
        )

    def _token_usage(self) -> pa.Array:
        n = len(self.input_tokens)
        return tables.struct_by_name(
            {
                "input_tokens": pa.array(self.input_tokens, type=pa.int64()),
                "output_tokens": pa.array(self.output_tokens, type=pa.int64()),
                "total_tokens": pa.array(self.total_tokens, type=pa.int64()),
                "input_tokens_cache_write": pa.nulls(n, pa.int64()),
                "input_tokens_cache_read": pa.nulls(n, pa.int64()),
                "reasoning_tokens": pa.array(self.reasoning_tokens, type=pa.int64()),
            },
            tables.TOKEN_USAGE_TYPE,
            mask=pa.array([t is None for t in self.input_tokens], type=pa.bool_()),
        )
