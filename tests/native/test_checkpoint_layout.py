"""Checkpoints are MindSpeed's Megatron layout at the configured TP/PP, complete before the tracker names them."""

from __future__ import annotations

from pathlib import Path

import torch

import native_testkit as kit
from navila_tune.native import checkpointing as ckpt
from navila_tune.native.train import train


def test_checkpoints_at_tp2_pp2_hold_the_same_weights_as_tp1(tiny, train_params, tmp_path):
    flat = train_params(save_dir=str(tmp_path / "tp1"), train_iters=3, save_interval=2)
    sharded = train_params(save_dir=str(tmp_path / "tp2pp2"), train_iters=3, save_interval=2, tp=2, pp=2)
    train(flat)
    train(sharded)
    root = Path(sharded.save_dir)
    assert (root / ckpt.TRACKER).read_text() == "3"
    for it in (2, 3):
        ranks = sorted(p.name for p in (root / ckpt.iter_dir_name(it)).iterdir() if p.is_dir())
        assert ranks == ["mp_rank_00_000", "mp_rank_00_001", "mp_rank_01_000", "mp_rank_01_001"]
        assert (root / ckpt.iter_dir_name(it) / ckpt.TRAIN_STATE).is_file()
    rank_file = torch.load(root / "iter_0000003" / "mp_rank_01_001" / "model_optim_rng.pt", weights_only=False,
                           map_location="cpu")
    assert rank_file["iteration"] == 3
    assert rank_file["args"].consumed_train_samples == 3 * sharded.global_batch_size
    assert rank_file["args"].tensor_model_parallel_size == 2 and rank_file["args"].pipeline_model_parallel_size == 2
    assert rank_file["opt_param_scheduler"]["num_steps"] == 3 * sharded.global_batch_size
    assert "optimizer" not in rank_file  # the unsharded optimizer state lives in native_train_state.pt
    meta, state = ckpt.load_state(root)
    assert (meta.tp, meta.pp, meta.iteration, meta.padded_vocab_size) == (2, 2, 3, tiny.padded_vocab)
    assert state["model.embed_tokens.weight"].shape[0] == tiny.padded_vocab
    reference = kit.final_weights(flat.save_dir)
    for name, value in reference.items():
        assert torch.equal(state[name], value), name


def test_bf16_training_writes_bf16_weights_and_fp32_masters(train_params):
    p = train_params(train_iters=2, precision="bf16")
    train(p)
    meta, state = ckpt.load_state(p.save_dir)
    assert meta.dtype == "bf16" and state["lm_head.weight"].dtype == torch.bfloat16
    masters = ckpt.load_train_state(p.save_dir, 2)["trainable"]
    assert masters["lm_head.weight"].dtype == torch.float32
    assert torch.equal(masters["lm_head.weight"].bfloat16(), state["lm_head.weight"])
