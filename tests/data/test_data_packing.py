"""Pack and neat-pack: rows of exactly seq_length, MindSpeed's knapsacks, pads, masks and truncation."""

from __future__ import annotations

import bisect
import random
from collections import defaultdict

import pytest

from data_testkit import IGNORE, expected, nav_rows, read_indexed, special
from navila_tune.data.packing import greedy_knapsack
from navila_tune.data import encode_sample
from navila_tune.data.template import user_content


def mindspeed_greedy_knapsack(numbers, capacity):
    """MindSpeed-LLM 2.3.0 tasks/preprocess/utils.py greedy_knapsack, as an oracle (O(n^2))."""
    numbers = sorted(numbers)
    knapsacks = []
    while numbers:
        current, remaining = [], capacity
        while True:
            index = bisect.bisect(numbers, remaining) - 1
            if index < 0:
                break
            remaining -= numbers[index]
            current.append(numbers.pop(index))
        knapsacks.append(current)
    return knapsacks


def mindspeed_pack(samples, seq_length, pad_id, neat):
    """MindSpeed's _pack_serialize_to_disk on (input_ids, labels) samples already < seq_length."""
    length2indexes = defaultdict(list)
    for i, (ids, _) in enumerate(samples):
        length2indexes[len(ids)].append(i)
    rows = []
    for knapsack in mindspeed_greedy_knapsack([len(ids) for ids, _ in samples], seq_length - 1):
        ids, mask, labels = [], [], []
        for n, length in enumerate(knapsack):
            s_ids, s_labels = samples[length2indexes[length].pop()]
            ids += s_ids
            labels += s_labels
            mask += [n + 1] * len(s_ids) if neat else [1] * len(s_ids)
        pad = seq_length - len(ids)
        rows.append((ids + [pad_id] * pad, mask + [0 if neat else 1] * pad, labels + [IGNORE] * pad))
    return rows


def test_greedy_knapsack_equals_mindspeeds():
    rng = random.Random(3)
    for _ in range(50):
        capacity = rng.randint(5, 60)
        numbers = [rng.randint(1, capacity) for _ in range(rng.randint(0, 80))]
        assert greedy_knapsack(list(numbers), capacity) == mindspeed_greedy_knapsack(numbers, capacity)


@pytest.mark.parametrize("neat", [False, True])
def test_pack_rows_are_exactly_seq_length_and_match_mindspeed(tok, run, neat):
    rows = nav_rows(40, seed=1)
    seq = 96
    report, prefix = run(rows, seq_length=seq, pack=True, neat_pack=neat, workers=2)
    samples = [encode_sample(tok, user_content(r["instruction"], r["input"]), r["output"]) for r in rows]
    assert all(len(ids) < seq for ids, _ in samples)  # nothing dropped or cut in this test
    want = mindspeed_pack(samples, seq, special(tok, "<|eot_id|>"), neat)
    got = read_indexed(prefix)
    assert all(len(x) == seq for key in got for x in got[key])
    assert got["input_ids"] == [r[0] for r in want]
    assert got["attention_mask"] == [r[1] for r in want]
    assert got["labels"] == [r[2] for r in want]
    assert report.rows_written == 40 and report.sequences_written == len(want) < 40
    assert report.packing["rows"] == len(want) and report.packing["pad_id"] == special(tok, "<|eot_id|>")
    if neat:
        assert {v for row in got["attention_mask"] for v in row} >= {0, 1, 2}


def test_pack_drops_overlong_but_neat_pack_truncates_to_seq_length_minus_one(tok, run):
    rows = [{"instruction": "Ride.", "input": "", "output": "left " * 200 + "\nThe next action is stop."},
            {"instruction": "Ride.", "input": "", "output": "Go."}]
    seq = 64
    report, prefix = run(rows, seq_length=seq, pack=True)
    assert report.dropped["overlong"] == 1 and report.rows_written == 1
    report, prefix = run(rows, seq_length=seq, pack=True, neat_pack=True)
    assert report.dropped["overlong"] == 0 and report.rows_written == 2 and report.truncated == 1
    assert report.answer["cut"] == 1 and report.answer["lost"] == 1
    got = read_indexed(prefix)
    assert [len(x) for x in got["input_ids"]] == [seq, seq]
    # the long sample fills seq_length-1 tokens, then one pad
    long_row = next(i for i, m in enumerate(got["attention_mask"]) if m.count(1) == seq - 1)
    assert got["attention_mask"][long_row][-1] == 0
    short_ids, short_labels = expected(tok, [("Ride.", "Go.")])
    other = got["input_ids"][1 - long_row]
    assert other[:len(short_ids)] == short_ids and got["labels"][1 - long_row][:len(short_ids)] == short_labels


def test_pack_with_every_row_bad_fails_cleanly(run):
    from navila_tune.data import DataError

    with pytest.raises(DataError, match=r"2 of 2 rows are bad"):
        run([{"instruction": "Ride.", "input": "", "output": ""}] * 2, pack=True)
