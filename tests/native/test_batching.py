"""Indexed-dataset reading, MindSpeed's sample order, GBS/MBS/DP arithmetic and dynamic padding."""

from __future__ import annotations

import os

import numpy as np
import pytest

import native_testkit as kit
from navila_tune.native.batching import (BatchPlan, DataError, InstructionDataset, collate,
                                         mindspeed_sample_order)


def _mindspeed_loop(n: int, needed: int, seed: int) -> list[int]:
    """MindSpeed-LLM 2.3.0 decoder_packed_mtf_dataset._build_index_mappings, written out."""
    np_rng = np.random.RandomState(seed=seed)
    shuffle_idx: list[int] = []
    while len(shuffle_idx) < needed:
        result = np.arange(start=0, stop=n, step=1, dtype=np.int64)
        np_rng.shuffle(result)
        shuffle_idx.extend(result.tolist())
    return shuffle_idx


def test_sample_order_is_mindspeeds_shuffled_epochs():
    order = mindspeed_sample_order(10, 35, seed=1234)
    assert order.tolist() == _mindspeed_loop(10, 35, 1234)
    assert len(order) == 40
    for e in range(4):
        assert sorted(order[e * 10:(e + 1) * 10].tolist()) == list(range(10))
    assert order[:10].tolist() != order[10:20].tolist()
    assert mindspeed_sample_order(10, 35, seed=1).tolist() != order.tolist()


@pytest.mark.parametrize("gbs,mbs", [(8, 2), (8, 4), (12, 2)])
def test_samples_per_optimizer_step_are_the_same_with_one_and_two_processes(gbs, mbs):
    order = mindspeed_sample_order(30, 5 * gbs, seed=7)
    one, two = BatchPlan(gbs, mbs, 1), BatchPlan(gbs, mbs, 2)
    assert one.grad_accum == gbs // mbs and two.grad_accum == gbs // (2 * mbs)
    for it in (1, 2, 5):
        single = one.rank_micro_batches(order, it, 0)
        ranks = [two.rank_micro_batches(order, it, r) for r in range(2)]
        assert all(len(mb) == mbs for mb in single) and all(len(mb) == mbs for r in ranks for mb in r)
        assert sorted(np.concatenate(single).tolist()) == sorted(order[(it - 1) * gbs:it * gbs].tolist())
        assert sorted(np.concatenate([mb for r in ranks for mb in r]).tolist()) == \
            sorted(np.concatenate(single).tolist())
        # MegatronPretrainingSampler: micro-step m of rank r at DP2 is micro-batch 2m + r at DP1
        for m in range(two.grad_accum):
            for r in range(2):
                assert ranks[r][m].tolist() == single[2 * m + r].tolist()


def test_global_batch_not_divisible_names_the_fix():
    with pytest.raises(DataError, match=r"global_batch_size=10 is not a multiple of micro_batch_size=4 x "
                                        r"data-parallel size=2 = 8.*multiple of 8"):
        BatchPlan(10, 4, 2)


def test_collate_pads_right_to_a_multiple_and_ignores_pad_labels():
    samples = [{"input_ids": np.arange(1, 6), "attention_mask": np.ones(5, int),
                "labels": np.array([-100, -100, 3, 4, 5])},
               {"input_ids": np.arange(1, 12), "attention_mask": np.ones(11, int), "labels": np.arange(1, 12)}]
    b = collate(samples, pad_to_multiple_of=8, pad_id=0)
    assert b.input_ids.shape == (2, 16)
    assert b.labels[0, 5:].eq(-100).all() and b.labels[1, 11:].eq(-100).all()
    assert b.input_ids[0, :5].tolist() == [1, 2, 3, 4, 5] and b.input_ids[0, 5:].eq(0).all()
    assert b.num_tokens == 16 and b.num_label_tokens == 3 + 10
    assert b.position_ids is None
    assert collate(samples, pad_to_multiple_of=1).input_ids.shape == (2, 11)


def test_neat_packed_rows_get_positions_restarting_per_sample():
    row = {"input_ids": np.arange(1, 9), "attention_mask": np.array([1, 1, 1, 2, 2, 3, 0, 0]),
           "labels": np.arange(1, 9)}
    b = collate([row], pad_to_multiple_of=8)
    assert b.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 0, 0]]


def test_dataset_reads_what_megatron_core_wrote(tmp_path):
    samples = kit.random_samples(5, 100, seed=0)
    prefix = kit.write_dataset(tmp_path / "d", samples)
    data = InstructionDataset(prefix, seq_length=64)
    assert len(data) == 5
    for i, (ids, labels) in enumerate(samples):
        s = data.sample(i)
        assert s["input_ids"].tolist() == ids and s["labels"].tolist() == labels
        assert s["attention_mask"].tolist() == [1] * len(ids)
    assert data.lengths.tolist() == [len(ids) for ids, _ in samples]


def test_missing_dataset_files_are_listed_with_the_fix(tmp_path):
    prefix = kit.write_dataset(tmp_path / "d", kit.random_samples(3, 50, seed=0))
    os.remove(prefix + "_packed_labels_document.idx")
    with pytest.raises(DataError, match=r"missing \[.*_packed_labels_document\.idx'\].*run the preprocess stage"):
        InstructionDataset(prefix, 64)
    with pytest.raises(DataError, match=r"must not include the suffix: use '.*/d'"):
        InstructionDataset(prefix + "_packed_input_ids_document", 64)


def test_sample_longer_than_seq_length_is_named(tmp_path):
    samples = kit.random_samples(4, 50, seed=0, min_len=6, max_len=8) + [(list(range(30)), list(range(30)))]
    prefix = kit.write_dataset(tmp_path / "d", samples)
    with pytest.raises(DataError, match=r"sample 4 has 30 tokens, more than seq_length=16.*seq_length >= 30"):
        InstructionDataset(prefix, 16)


def test_fewer_samples_than_a_global_batch_is_named():
    with pytest.raises(DataError, match=r"holds 5 samples, fewer than one global batch \(global_batch_size=8\)"
                                        r".*at most 5"):
        BatchPlan(8, 2, 1).check_fits(5, "data_prefix='x'")


def test_files_from_different_runs_are_refused(tmp_path):
    a = kit.write_dataset(tmp_path / "a", kit.random_samples(3, 50, seed=0))
    kit.write_dataset(tmp_path / "b", kit.random_samples(4, 50, seed=1))
    for ext in (".bin", ".idx"):
        os.replace(str(tmp_path / "b") + "_packed_labels_document" + ext, a + "_packed_labels_document" + ext)
    with pytest.raises(DataError, match="labels has 4 sequences and input_ids has 3"):
        InstructionDataset(a, 64)
