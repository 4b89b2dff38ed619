"""Native training throughput next to a plain HF-transformers training loop, measured side by side.

Both train the llama3_tiny architecture from the same weights on the same global batches (MindSpeed's
sample order, the same micro-batches and dynamic padding), with AdamW and gradient clipping, on CPU.
Two measurements, both as native / plain-HF ratios:
1. whole runs: ``navila_tune.native.train.train`` (reads the Megatron checkpoint and the indexed dataset,
   logs metrics, writes the final Megatron checkpoint) against the plain loop, in rounds that alternate
   which one runs first. loop tokens/s = real (unpadded) tokens per second of the training iterations
   (native: its own measurement over every iteration, batch reading and logging included; the plain loop
   gets its batches prepared before the clock starts); run tokens/s = the same tokens over the whole call.
2. interleaved iterations: one native training iteration (``_train_iteration``: batch reading, forward,
   backward, clip, AdamW) and one plain-loop iteration alternate on two models of the same weights, so
   machine load hits both alike; the median of the per-pair time ratios is reported.

    python benchmarks/bench_train.py [--rounds 10] [--iters 12] [--pairs 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from navila_tune.arch import LlamaArch

ARCH = LlamaArch(num_layers=4, hidden_size=128, ffn_hidden_size=384, num_attention_heads=4, num_query_groups=2,
                 vocab_size=1024, max_position_embeddings=1024, rope_theta=500000.0, norm_epsilon=1e-5)
GBS, MBS, SEQ, PAD = 16, 8, 256, 8
LR, CLIP, WD = 1e-3, 1.0, 0.01


def make_inputs(root: Path, n_samples: int) -> tuple[Path, str]:
    """A converted base checkpoint and an indexed instruction dataset (random tokens, prompt masked)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from navila_tune.convert import save_megatron_state
    from navila_tune.native.modeling import build_model

    torch.manual_seed(0)
    state = build_model(ARCH, ARCH.vocab_size).state_dict()
    save_megatron_state(state, root / "base", arch=ARCH, tp=1, pp=1, num_layer_list=None, iteration=1,
                        padded_vocab_size=ARCH.vocab_size)
    rng = np.random.RandomState(0)
    prefix = str(root / "data" / "train")
    (root / "data").mkdir()
    samples = []
    for _ in range(n_samples):
        length = int(rng.randint(64, 200))
        ids = rng.randint(0, ARCH.vocab_size, size=length)
        cut = int(rng.randint(16, length // 2))
        samples.append((ids, np.concatenate([np.full(cut, -100), ids[cut:]])))
    for key in ("input_ids", "attention_mask", "labels"):
        p = f"{prefix}_packed_{key}_document"
        builder = IndexedDatasetBuilder(p + ".bin", dtype=np.int32)
        for ids, labels in samples:
            value = {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels}[key]
            builder.add_item(torch.from_numpy(value.astype(np.int32)))
            builder.end_document()
        builder.finalize(p + ".idx")
    return root / "base", prefix


def run_native(base: Path, prefix: str, out: Path, iters: int) -> tuple[float, float]:
    from navila_tune.native.train import TrainParams, train

    t0 = time.perf_counter()
    summary = train(TrainParams(load_dir=str(base), data_prefix=prefix, save_dir=str(out), train_iters=iters,
                                global_batch_size=GBS, micro_batch_size=MBS, lr=LR, min_lr=LR,
                                lr_decay_style="constant", weight_decay=WD, clip_grad=CLIP, log_interval=iters,
                                eval_interval=0, save_interval=0, precision="fp32", seq_length=SEQ,
                                pad_to_multiple_of=PAD, progress=False))
    wall = time.perf_counter() - t0
    tokens = summary["tokens_per_s"] * summary["train_time_s"]
    return summary["tokens_per_s"], tokens / wall


def hf_model_and_optimizer(base: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from navila_tune.convert import load_megatron_state

    _, state = load_megatron_state(str(base))
    config = LlamaConfig(**ARCH.hf_config("float32", use_cache=False))
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    model.train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR)
    return model, opt


def hf_batches(prefix: str, iters: int) -> list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]]:
    """The native run's micro-batches (same order and padding), with the usual HF padding mask."""
    from navila_tune.native.batching import BatchPlan, InstructionDataset, collate, mindspeed_sample_order

    data = InstructionDataset(prefix, SEQ)
    plan = BatchPlan(GBS, MBS, 1)
    order = mindspeed_sample_order(len(data), iters * GBS, seed=1234)
    batches = []
    for it in range(1, iters + 1):
        micro = []
        for idx in plan.rank_micro_batches(order, it, 0):
            b = collate([data.sample(i) for i in idx], PAD)
            lengths = torch.tensor([len(data.sample(i)["input_ids"]) for i in idx])
            mask = (torch.arange(b.input_ids.shape[1])[None] < lengths[:, None]).long()
            micro.append((b.input_ids, mask, b.labels, b.num_tokens))
        batches.append(micro)
    return batches


def hf_step(model, opt, micro) -> int:
    """One plain iteration: HF loss with labels / GA, backward, clip, AdamW."""
    opt.zero_grad(set_to_none=True)
    tokens = 0
    for ids, mask, labels, n in micro:
        (model(input_ids=ids, attention_mask=mask, labels=labels).loss / len(micro)).backward()
        tokens += n
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()
    return tokens


def run_hf(base: Path, prefix: str, iters: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    model, opt = hf_model_and_optimizer(base)
    batches = hf_batches(prefix, iters)  # prepared up front: the plain loop pays no I/O in its loop time
    tokens = 0
    loop_start = time.perf_counter()
    for micro in batches:
        tokens += hf_step(model, opt, micro)
    loop = time.perf_counter() - loop_start
    return tokens / loop, tokens / (time.perf_counter() - t0)


def interleaved(base: Path, prefix: str, root: Path, pairs: int) -> list[float]:
    """Per-iteration time ratios hf / native, the two alternating which goes first."""
    from navila_tune.native import train as native
    from navila_tune.native.distributed import init_distributed

    params = native.TrainParams(load_dir=str(base), data_prefix=prefix, save_dir=str(root / "pairs"),
                                train_iters=pairs, global_batch_size=GBS, micro_batch_size=MBS, lr=LR, min_lr=LR,
                                lr_decay_style="constant", weight_decay=WD, clip_grad=CLIP, precision="fp32",
                                seq_length=SEQ, pad_to_multiple_of=PAD, progress=False)
    trainer = native._Trainer(params, init_distributed("cpu"))
    trainer.model = trainer._load_weights(None, None).train()
    trainer.optimizer = trainer._optimizer(trainer.model)
    model, opt = hf_model_and_optimizer(base)
    batches = hf_batches(prefix, pairs)
    ratios = []
    for it in range(1, pairs + 1):
        times = {}
        for which in (("native", "hf") if it % 2 else ("hf", "native")):
            t0 = time.perf_counter()
            if which == "native":
                native._train_iteration(trainer, it)
            else:
                hf_step(model, opt, batches[it - 1])
            times[which] = time.perf_counter() - t0
        if it > 3:  # first steps allocate gradients and optimizer state
            ratios.append(times["hf"] / times["native"])
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        base, prefix = make_inputs(root, n_samples=256)
        run_native(base, prefix, root / "warm", 2)  # imports and first-call costs out of the way
        run_hf(base, prefix, 2)
        native_loop, native_run, hf_loop, hf_run = [], [], [], []
        for r in range(args.rounds):
            order = ("hf", "native") if r % 2 == 0 else ("native", "hf")
            for which in order:
                if which == "hf":
                    loop, run = run_hf(base, prefix, args.iters)
                    hf_loop.append(loop)
                    hf_run.append(run)
                else:
                    loop, run = run_native(base, prefix, root / f"out{r}", args.iters)
                    native_loop.append(loop)
                    native_run.append(run)
            print(f"round {r + 1}: loop tokens/s native {native_loop[-1]:8.0f}  hf {hf_loop[-1]:8.0f}  ratio "
                  f"{native_loop[-1] / hf_loop[-1]:.3f} | run tokens/s native {native_run[-1]:8.0f}  hf "
                  f"{hf_run[-1]:8.0f}  ratio {native_run[-1] / hf_run[-1]:.3f}", flush=True)
        pair_ratios = interleaved(base, prefix, root, args.pairs)
    med = statistics.median
    loop_ratio = med([a / b for a, b in zip(native_loop, hf_loop)])  # each pair ran back to back
    run_ratio = med([a / b for a, b in zip(native_run, hf_run)])
    print(f"\nllama3_tiny arch, GBS {GBS}, MBS {MBS} (GA 2), {args.iters} iterations x {args.rounds} rounds, "
          f"{args.threads} thread(s)")
    print(f"loop tokens/s (median): native {med(native_loop):.0f}, plain HF {med(hf_loop):.0f}; median per-round "
          f"ratio {loop_ratio:.3f} (rounds: {', '.join(f'{a / b:.3f}' for a, b in zip(native_loop, hf_loop))})")
    print(f"run  tokens/s (median): native {med(native_run):.0f}, plain HF {med(hf_run):.0f}; median per-round "
          f"ratio {run_ratio:.3f}")
    q = statistics.quantiles(pair_ratios, n=4)
    print(f"interleaved iterations ({len(pair_ratios)} pairs): native/HF throughput median {med(pair_ratios):.3f} "
          f"(quartiles {q[0]:.3f} .. {q[2]:.3f})")
    worst = min(loop_ratio, med(pair_ratios))
    print(f"target >= 0.9x: {'met' if worst >= 0.9 else 'NOT met'} (lower of the two: {worst:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
