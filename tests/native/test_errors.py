"""Every refusal names the thing, the value and the fix."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import native_testkit as kit
from navila_tune.native import checkpointing as ckpt
from navila_tune.native import train as train_mod
from navila_tune.native.batching import DataError
from navila_tune.native.evaluate import EvaluateParams, evaluate
from navila_tune.native.modeling import ArchitectureError


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(train_params, monkeypatch):
    real = train_mod.masked_ce_sum
    calls = {"n": 0}

    def nan_in_iteration_3(logits, labels):
        calls["n"] += 1
        loss, count = real(logits, labels)
        return (loss * math.nan, count) if calls["n"] in (5, 6) else (loss, count)  # GA=2: calls 5-6

    monkeypatch.setattr(train_mod, "masked_ce_sum", nan_in_iteration_3)
    p = train_params(train_iters=6, save_interval=2)
    with pytest.raises(train_mod.TrainingDiverged,
                       match=r"diverged at iteration 3: loss is nan.*last good checkpoint is .*iter_0000002 "
                             r"\(iteration 2\).*Fix: lower lr"):
        train_mod.train(p)
    root = Path(p.save_dir)
    assert (root / ckpt.TRACKER).read_text() == "2"
    assert not (root / "iter_0000003").exists()
    assert [r["iteration"] for r in kit.read_jsonl(root / "metrics.jsonl")] == [1, 2]


def test_checkpoint_with_another_architecture_is_named(tiny, train_params):
    wrong = dataclasses.replace(tiny.arch, hidden_size=128, ffn_hidden_size=256)
    with pytest.raises(ArchitectureError, match=r"hidden_size: checkpoint 64, expected 128.*re-run the convert"):
        train_mod.train(train_params(expected_arch=wrong))


def test_load_dir_that_is_not_a_checkpoint_root_is_named(tiny, train_params, tmp_path):
    with pytest.raises(ckpt.CheckpointError, match=r"has no latest_checkpointed_iteration.txt.*use '.*base'"):
        train_mod.train(train_params(load_dir=str(tiny.base / "iter_0000001")))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(ckpt.CheckpointError, match=r"HF model folder; run the convert stage"):
        train_mod.train(train_params(load_dir=str(tmp_path / "hf")))


def test_data_that_does_not_fit_the_batch_is_named(tiny, train_params, tmp_path):
    with pytest.raises(DataError, match=r"holds 32 samples, fewer than one global batch \(global_batch_size=64\)"):
        train_mod.train(train_params(global_batch_size=64, micro_batch_size=4))
    with pytest.raises(DataError, match=r"more than seq_length=32"):
        train_mod.train(train_params(seq_length=32))
    with pytest.raises(DataError, match=r"data_prefix='.*nowhere' is not a complete"):
        train_mod.train(train_params(data_prefix=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match=r"eval_prefix='.*nowhere' is not a complete"):
        train_mod.train(train_params(eval_prefix=str(tmp_path / "nowhere")))


def test_unsupported_training_settings_are_named(train_params):
    with pytest.raises(ValueError, match=r"precision='fp16'.*use bf16 instead"):
        train_mod.train(train_params(precision="fp16"))
    with pytest.raises(ValueError, match=r"finetune='qlora'"):
        train_mod.train(train_params(finetune="qlora"))


def test_eval_input_without_the_mapped_columns_is_named(tiny, tmp_path):
    path = kit.write_parquet(tmp_path / "bad.parquet", [{"question": "q", "answer": "a"}])
    with pytest.raises(KeyError, match=r"lacks the mapped columns \['instruction', 'output'\].*data.map_keys"):
        evaluate(EvaluateParams(load_dir=str(tiny.base), tokenizer_dir=str(kit.TOKENIZER_DIR),
                                eval_input=str(path), output_json=str(tmp_path / "r.json")))
