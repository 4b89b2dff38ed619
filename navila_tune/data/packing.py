"""Packing samples into rows of exactly seq_length, as MindSpeed-LLM's ``--pack`` / ``--neat-pack`` do.

MindSpeed (``_pack_serialize_to_disk``): samples go into knapsacks of capacity seq_length-1 by
``greedy_knapsack`` (sort ascending; repeatedly take the largest length that still fits), each length
is mapped back to a sample by popping the most recent sample of that length, the knapsack's samples are
concatenated in that order and padded to seq_length with the pad id (labels -100, attention mask 1, or
0 with neat-pack where the mask holds each sample's number 1, 2, 3, ...).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Iterator

import numpy as np

from .template import IGNORE_INDEX


def greedy_knapsack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Same knapsacks as MindSpeed's ``greedy_knapsack``, in O(n log n) instead of O(n^2)."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"a length exceeds the knapsack capacity {capacity}")
    counts: dict[int, int] = defaultdict(int)
    for n in lengths:
        counts[n] += 1
    values = sorted(counts)  # distinct lengths still available
    remaining = len(lengths)
    knapsacks = []
    while remaining:
        knapsack = []
        room = capacity
        while values:
            i = bisect.bisect(values, room) - 1
            if i < 0:
                break
            n = values[i]
            knapsack.append(n)
            room -= n
            remaining -= 1
            counts[n] -= 1
            if not counts[n]:
                values.pop(i)
        knapsacks.append(knapsack)
    return knapsacks


def pack_rows(lengths: np.ndarray, seq_length: int) -> list[list[int]]:
    """Sample indices per packed row, in MindSpeed's order."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for index, n in enumerate(lengths.tolist()):
        by_length[n].append(index)
    return [[by_length[n].pop() for n in knapsack]
            for knapsack in greedy_knapsack(lengths.tolist(), seq_length - 1)]


def packed_sequences(input_ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray, seq_length: int,
                     pad_id: int, neat: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input_ids, attention_mask, labels) of each packed row, every one exactly seq_length long."""
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    for row in pack_rows(lengths, seq_length):
        ids = np.full(seq_length, pad_id, dtype=np.int32)
        lab = np.full(seq_length, IGNORE_INDEX, dtype=np.int32)
        mask = np.zeros(seq_length, dtype=np.int32) if neat else np.ones(seq_length, dtype=np.int32)
        at = 0
        for number, index in enumerate(row, start=1):
            b, e = starts[index], starts[index + 1]
            ids[at:at + e - b] = input_ids[b:e]
            lab[at:at + e - b] = labels[b:e]
            if neat:
                mask[at:at + e - b] = number
            at += e - b
        yield ids, mask, lab
