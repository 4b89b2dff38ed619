"""An interrupted run resumed from its latest complete checkpoint ends bitwise equal to an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import native_testkit as kit
from navila_tune.native import checkpointing as ckpt
from navila_tune.native import train as train_mod


def _losses(save_dir: str) -> dict[int, float]:
    return {r["iteration"]: r["loss"] for r in kit.read_jsonl(Path(save_dir) / "metrics.jsonl") if "loss" in r}


def _common(**kw):
    base = dict(train_iters=12, global_batch_size=8, micro_batch_size=4, lr=2e-3, min_lr=2e-4,
                warmup_ratio=0.25, save_interval=4, weight_decay=0.1)
    base.update(kw)
    return base


def _assert_same_weights(a: str, b: str) -> None:
    wa, wb = kit.final_weights(a), kit.final_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_crash_then_resume_is_bitwise_equal_fp32(train_params, tmp_path, monkeypatch):
    ref = train_params(save_dir=str(tmp_path / "ref"), **_common())
    train_mod.train(ref)

    run = train_params(save_dir=str(tmp_path / "run"), **_common())
    real_iteration = train_mod._train_iteration

    def crash_at_7(tr, iteration):
        if iteration == 7:
            raise KeyboardInterrupt("simulated crash")
        return real_iteration(tr, iteration)

    monkeypatch.setattr(train_mod, "_train_iteration", crash_at_7)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(run)
    monkeypatch.setattr(train_mod, "_train_iteration", real_iteration)
    root = Path(run.save_dir)
    assert ckpt.latest_complete_iteration(root) == 4
    # Debris a crash during a save could leave: a staging folder and an iteration the tracker never named.
    (root / ".staging_iter_0000008_x" / "iter_0000008").mkdir(parents=True)
    (root / "iter_0000008" / "mp_rank_00").mkdir(parents=True)

    summary = train_mod.train(run)
    assert summary["start_iteration"] == 4 and summary["iterations"] == 12
    _assert_same_weights(ref.save_dir, run.save_dir)
    ref_losses, run_losses = _losses(ref.save_dir), _losses(run.save_dir)
    assert sorted(run_losses) == list(range(1, 13))  # records past the checkpoint were dropped on resume
    assert run_losses == ref_losses
    assert not any(p.name.startswith(".staging") for p in root.iterdir())
    state = ckpt.load_train_state(root, 12)
    ref_state = ckpt.load_train_state(ref.save_dir, 12)
    for k, v in ref_state["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], state["optimizer"]["state"][k]["exp_avg_sq"])


def test_exit_interval_then_resume_is_bitwise_equal_lora_bf16(train_params, tmp_path):
    kw = _common(finetune="lora", lora_r=4, lora_alpha=8, precision="bf16", lr=5e-3)
    ref = train_params(save_dir=str(tmp_path / "ref"), **kw)
    train_mod.train(ref)
    run = train_params(save_dir=str(tmp_path / "run"), exit_interval=6, **kw)
    first = train_mod.train(run)
    assert first["iterations"] == 6 and ckpt.latest_complete_iteration(run.save_dir) == 6
    second = train_mod.train(run)
    assert second["start_iteration"] == 6 and second["iterations"] == 12
    _assert_same_weights(ref.save_dir, run.save_dir)
    assert _losses(ref.save_dir) == _losses(run.save_dir)


def test_resume_refuses_a_changed_global_batch(train_params, tmp_path):
    p = train_params(save_dir=str(tmp_path / "run"), train_iters=2)
    train_mod.train(p)
    changed = train_params(save_dir=str(tmp_path / "run"), train_iters=4, global_batch_size=4)
    with pytest.raises(ckpt.CheckpointError, match=r"global_batch_size: checkpoint 8, now 4"):
        train_mod.train(changed)


def test_save_dir_holding_a_foreign_checkpoint_is_refused(tiny, train_params, tmp_path):
    foreign = tmp_path / "foreign"
    kit.write_checkpoint(foreign, tiny.arch, tiny.padded_vocab)
    with pytest.raises(ckpt.CheckpointError, match=r"iteration 1 without the native training state"):
        train_mod.train(train_params(save_dir=str(foreign)))
