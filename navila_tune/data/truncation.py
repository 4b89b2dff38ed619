"""Fitting one sample into the sequence length: MindSpeed-LLM's rules and the two alternatives.

``overlong`` policy:
- ``mindspeed`` (default): what MindSpeed-LLM 2.3.0 writes. Each turn pair is truncated proportionally so
  the total is <= seq_length (``infer_max_len``, reserved label length 1); then a sample of length >=
  seq_length is dropped. With ``neat_pack`` each pair is also cut to seq_length-1 (``_infer_seqlen``) and
  the sample is truncated to seq_length-1 instead of dropped.
- ``truncate``: the same proportional truncation to seq_length-1 (so the sample is kept), never dropped.
- ``fail``: any sample of length >= seq_length is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

RESERVED_LABEL_LEN = 1


def infer_max_len(source_len: int, target_len: int, max_len: int, reserved_label_len: int) -> tuple[int, int]:
    """MindSpeed ``templates.infer_max_len`` (same float arithmetic, so the same rounding)."""
    if source_len + target_len == 0:
        max_target_len = 0
    else:
        max_target_len = int(max_len * (target_len / (source_len + target_len)))
    max_target_len = max(max_target_len, reserved_label_len)
    max_source_len = max_len - min(max_target_len, target_len)
    return max_source_len, max_target_len


def make_pairs(messages: Sequence[list[int]], cutoff_len: int,
               reserved_label_len: int = RESERVED_LABEL_LEN) -> list[tuple[list[int], list[int]]]:
    """MindSpeed ``Template._make_pairs``: (source, target) per turn, truncated to ``cutoff_len`` in total."""
    pairs = []
    total = 0
    for i in range(0, len(messages), 2):
        if total >= cutoff_len:
            break
        max_source, max_target = infer_max_len(len(messages[i]), len(messages[i + 1]),
                                               cutoff_len - total, reserved_label_len)
        source, target = messages[i][:max_source], messages[i + 1][:max_target]
        total += len(source) + len(target)
        pairs.append((source, target))
    return pairs


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """MindSpeed ``decoder_packed_mtf_dataset._infer_seqlen`` (LLaMA-Factory's), used by neat-pack."""
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    max_source_len = max(cutoff_len - new_target_len, 0)
    new_source_len = min(max_source_len, source_len)
    return new_source_len, new_target_len


@dataclass
class Fitted:
    """A sample after the overlong policy: its pairs, whether kept, and how much was cut."""

    pairs: list[tuple[list[int], list[int]]]
    full_len: int  # untruncated length, EOD included
    length: int  # written length (0 when dropped)
    kept: bool
    truncated: bool
    cut_to: int | None = None  # neat-pack: final flat truncation length


class Overlong(Exception):
    """Raised by ``fit`` under ``overlong='fail'``; the caller adds the row number."""

    def __init__(self, full_len: int) -> None:
        super().__init__(full_len)
        self.full_len = full_len


def fit(messages: Sequence[list[int]], seq_length: int, overlong: str, neat_pack: bool,
        append_eod: bool) -> Fitted:
    """Apply the overlong policy to one sample's per-message ids (user, assistant, user, ...)."""
    eod = 1 if append_eod else 0
    body = sum(len(m) for m in messages)
    full = body + eod
    untouched = [(messages[i], messages[i + 1]) for i in range(0, len(messages), 2)]
    if overlong == "fail":
        if full >= seq_length:
            raise Overlong(full)
        return Fitted(untouched, full, full, True, False)
    if overlong == "truncate":
        budget = seq_length - 1 - eod
        if body <= budget:
            return Fitted(untouched, full, full, True, False)
        pairs = make_pairs(messages, budget)
        length = sum(len(s) + len(t) for s, t in pairs) + eod
        return Fitted(pairs, full, length, True, True)
    # mindspeed: _make_pairs always runs, and is the identity when the body fits in seq_length - 1.
    pairs = untouched if body < seq_length else make_pairs(messages, seq_length)
    if neat_pack:
        cut = []
        for source, target in pairs:
            s, t = infer_seqlen(len(source), len(target), seq_length - 1)
            cut.append((source[:s], target[:t]))
        pairs = cut
    length = sum(len(s) + len(t) for s, t in pairs) + eod
    if length >= seq_length:
        if not neat_pack:
            return Fitted(pairs, full, 0, False, False)
        return Fitted(pairs, full, seq_length - 1, True, True, cut_to=seq_length - 1)
    return Fitted(pairs, full, length, True, length < full)
