"""Two real torchrun processes (gloo, CPU) match single-process gradient accumulation on the same global batches."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import native_testkit as kit
from navila_tune.native import train as train_mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_single_process_accumulation(tiny, train_params, tmp_path):
    kw = dict(train_iters=6, global_batch_size=8, micro_batch_size=2, lr=1e-3, min_lr=1e-4, warmup_ratio=0.2,
              weight_decay=0.1, eval_prefix=tiny.held_prefix, eval_iters=1, eval_interval=3)
    single = train_params(save_dir=str(tmp_path / "single"), **kw)
    ref = train_mod.train(single)
    assert ref["grad_accum"] == 4 and ref["data_parallel_size"] == 1

    out = tmp_path / "ddp"
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "navila_tune.native.train",
            "--load-dir", str(tiny.base), "--data-prefix", tiny.train_prefix, "--save-dir", str(out),
            "--eval-prefix", tiny.held_prefix, "--eval-iters", "1", "--eval-interval", "3",
            "--train-iters", "6", "--global-batch-size", "8", "--micro-batch-size", "2", "--lr", "1e-3",
            "--min-lr", "1e-4", "--warmup-ratio", "0.2", "--weight-decay", "0.1", "--log-interval", "1",
            "--save-interval", "0", "--precision", "fp32", "--seq-length", "256", "--no-progress",
            "--seed", str(single.seed)]
    proc = subprocess.run(argv, env=kit.env_for_subprocess(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '"data_parallel_size": 2' in proc.stdout and '"grad_accum": 2' in proc.stdout

    records = {r["iteration"]: r for r in kit.read_jsonl(out / "metrics.jsonl") if "loss" in r}
    ref_records = {r["iteration"]: r for r in kit.read_jsonl(Path(single.save_dir) / "metrics.jsonl") if "loss" in r}
    assert sorted(records) == list(range(1, 7))
    for it, r in ref_records.items():
        assert records[it]["consumed_samples"] == r["consumed_samples"] == 8 * it
        assert records[it]["loss"] == pytest.approx(r["loss"], rel=1e-5)
        assert records[it]["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-4)
    evals = [r["eval_loss"] for r in kit.read_jsonl(out / "metrics.jsonl") if "eval_loss" in r]
    ref_evals = [r["eval_loss"] for r in kit.read_jsonl(Path(single.save_dir) / "metrics.jsonl") if "eval_loss" in r]
    assert evals == pytest.approx(ref_evals, rel=1e-5)
    a, b = kit.final_weights(single.save_dir), kit.final_weights(out)
    for name in a:
        # gradients are summed in another order (all-reduce), and Adam's update can turn a 1-ulp gradient
        # difference into a few ulps of weight (1 ulp at 1.0 is 1.2e-7: the norm weights sit there)
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
