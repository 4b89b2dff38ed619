"""Turning a range of rows into token ids and labels: one batched tokenizer call per chunk of rows.

Runs in the worker processes (or in-process for one worker). Results travel back as flat int32 arrays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError
from .rows import OVERLONG, convert_rows
from .template import IGNORE_INDEX, Conversation, Llama3Template
from .truncation import Fitted, Overlong, fit

MAX_EXAMPLES = 5  # bad / dropped / truncated rows kept as examples, per reason


@dataclass
class EncodeSettings:
    seq_length: int
    overlong: str
    neat_pack: bool
    append_eod: bool
    answer_marker: str | None
    columns: dict[str, str | None]  # map key -> column name


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.int32)


@dataclass
class ChunkResult:
    start: int
    stop: int
    input_ids: np.ndarray = field(default_factory=_no_ids)  # int32, written samples concatenated
    labels: np.ndarray = field(default_factory=_no_ids)  # int32, same length
    lengths: np.ndarray = field(default_factory=_no_ids)  # int32, one per written sample
    prompt_tokens: np.ndarray = field(default_factory=_no_ids)  # one per valid row, untruncated
    response_tokens: np.ndarray = field(default_factory=_no_ids)  # trained tokens per valid row, untruncated
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # reason -> [(row, detail)]
    truncated: int = 0
    all_masked: int = 0
    answer_marker_rows: int = 0
    answer_cut: int = 0
    answer_lost: int = 0

    def note(self, reason: str, row: int, detail: str) -> None:
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append((row, detail))


class ChunkEncoder:
    def __init__(self, template: Llama3Template, dataset: Any, settings: EncodeSettings) -> None:
        self.template = template
        self.dataset = dataset
        self.s = settings

    def __call__(self, span: tuple[int, int]) -> ChunkResult:
        start, stop = span
        return self.encode_batch(self.dataset[start:stop], start, stop)

    def encode_batch(self, batch: dict[str, list], start: int, stop: int) -> ChunkResult:
        s, t = self.s, self.template
        convs: list[tuple[int, Conversation]] = []
        result = ChunkResult(start, stop)
        for i, item in enumerate(convert_rows(batch, s.columns, stop - start)):
            if isinstance(item, Conversation):
                convs.append((start + i, item))
            else:
                result.dropped[item[0]] += 1
                result.note(item[0], start + i, item[1])
        # One batched call per kind of text (users, replies, systems): no per-piece Python tokenization.
        users_ids = t.encode_texts([t.user_text(u) for _, c in convs for u, _ in c.turns])
        replies_ids = t.encode_texts([a for _, c in convs for _, a in c.turns])
        systems_ids = t.encode_texts([t.system_text(c.system) for _, c in convs if c.system])

        flat: list[int] = []
        masked_spans: list[tuple[int, int]] = []
        lengths: list[int] = []
        prompt_tokens = np.empty(len(convs), np.int32)
        response_tokens = np.empty(len(convs), np.int32)
        prefix, eos, seq_length = t.prefix_ids, t.eos_id, s.seq_length
        eod = [eos] if s.append_eod else []
        marker = s.answer_marker
        ui = si = 0
        for k, (row, conv) in enumerate(convs):
            n = len(conv.turns)
            users, replies = users_ids[ui:ui + n], replies_ids[ui:ui + n]
            ui += n
            system: list[int] = []
            if conv.system:
                system = systems_ids[si]
                si += 1
            n_prompt = len(prefix) + len(system) + sum(map(len, users))
            n_response = sum(map(len, replies)) + n + len(eod)
            prompt_tokens[k], response_tokens[k] = n_prompt, n_response
            if marker and marker in conv.response:
                result.answer_marker_rows += 1
            if n_prompt + n_response < seq_length:  # fits: every policy keeps it untouched
                b = len(flat)
                flat += prefix
                flat += system
                for user, reply in zip(users, replies):
                    flat += user
                    masked_spans.append((b, len(flat)))
                    flat += reply
                    flat.append(eos)
                    b = len(flat)
                flat += eod
                lengths.append(n_prompt + n_response)
                continue
            self._add_fitted(result, row, conv, t.assemble(system, users, replies), flat, masked_spans,
                             lengths, eod)

        ids = np.array(flat, dtype=np.int32)
        labels = ids.copy()
        for b, e in masked_spans:
            labels[b:e] = IGNORE_INDEX
        result.input_ids, result.labels = ids, labels
        result.lengths = np.array(lengths, dtype=np.int32)
        result.prompt_tokens, result.response_tokens = prompt_tokens, response_tokens
        return result

    def _add_fitted(self, result: ChunkResult, row: int, conv: Conversation, messages: list[list[int]],
                    flat: list[int], masked_spans: list[tuple[int, int]], lengths: list[int],
                    eod: list[int]) -> None:
        """A sample that does not fit: apply the overlong policy, then append what is kept."""
        s = self.s
        try:
            fitted = fit(messages, s.seq_length, s.overlong, s.neat_pack, s.append_eod)
        except Overlong as exc:
            raise DataError(f"row {row}: {exc.full_len} tokens >= data.seq_length={s.seq_length} and "
                            f"data.overlong=fail; raise data.seq_length, or set data.overlong=mindspeed "
                            f"(drop, as MindSpeed) or data.overlong=truncate") from None
        if not fitted.kept:
            result.dropped[OVERLONG] += 1
            result.note(OVERLONG, row, f"{fitted.full_len} tokens >= seq_length {s.seq_length}")
            return
        offset = len(flat)
        spans = []
        for source, target in fitted.pairs:
            spans.append((len(flat), len(flat) + len(source)))
            flat += source
            flat += target
        flat += eod
        if fitted.cut_to is not None:
            del flat[offset + fitted.cut_to:]
            spans = [(b, min(e, len(flat))) for b, e in spans if b < len(flat)]
        masked_spans += spans
        lengths.append(len(flat) - offset)
        if (len(flat) - offset) == sum(e - b for b, e in spans):
            result.all_masked += 1
            result.note("all_labels_masked", row, "every label is -100 after truncation")
        if fitted.truncated:
            result.truncated += 1
            result.note("truncated", row, f"{fitted.full_len} -> {lengths[-1]} tokens")
            cut, lost = self._answer_cut(conv, messages, fitted)
            result.answer_cut += cut
            result.answer_lost += lost

    def _answer_cut(self, conv: Conversation, messages: list[list[int]], fitted: Fitted) -> tuple[int, int]:
        """(answer cut at all, answer lost entirely) for a truncated sample, by character offsets."""
        final_target = messages[-1]
        if len(fitted.pairs) < len(messages) // 2:
            return 1, 1
        body = sum(len(a) + len(b) for a, b in fitted.pairs)
        kept = len(fitted.pairs[-1][1])
        if fitted.cut_to is not None:
            kept = max(0, min(kept, fitted.cut_to - (body - kept)))
        response = conv.response
        if kept >= len(final_target) - 1:  # every response token survived (the EOS may not)
            return 0, 0
        answer_end = len(response.rstrip())
        head = response[:answer_end]
        marker = self.s.answer_marker
        answer_start = head.rfind(marker) if marker and marker in head else head.rfind("\n") + 1
        offsets = self.template.backend.encode(response, add_special_tokens=False).offsets
        kept_end = offsets[kept - 1][1] if kept > 0 else 0
        return int(kept_end < answer_end), int(kept_end <= answer_start)
