"""Native SFT (full or LoRA) on the Megatron checkpoint layout, with MindSpeed-LLM's training semantics.

Semantics (each backed by a test in tests/native):
- Batches: global batch = micro batch x accumulation x data-parallel size; sample order, DP slicing and
  dynamic padding as MindSpeed (see ``batching``).
- Loss: MindSpeed's ``SFTTrainer.loss_func`` takes the token mean of each micro-batch (shifted labels,
  -100 ignored); Megatron's schedule divides it by the number of micro-batches and its DDP averages
  gradients over DP ranks. So the optimised loss is the mean over the GA x DP micro-batches of the global
  batch of their own token means (not one token mean over the global batch). With
  ``calculate_per_token_loss`` (Megatron ``--calculate-per-token-loss``) it is the token mean over the
  global batch instead. A micro-batch without any label token contributes 0.
- Optimizer: AdamW (decoupled decay) with Megatron's groups: no weight decay on 1-D tensors (norms) and
  biases; gradients clipped to ``clip_grad`` by their global L2 norm after the DP average (the reported
  grad norm is the norm before clipping).
- Schedule: Megatron's (see ``schedule``); ``lr`` logged for an iteration is the lr its step used.
- Precision: ``fp32``, or ``bf16`` as autocast over fp32 master weights (checkpoint weights are bf16, the
  fp32 masters go into the native train state, like Megatron's fp32 optimizer copies).
- Evaluation: held-out loss over the first ``eval_iters x global_batch_size`` samples of ``eval_prefix``
  (the same samples every time, so the curve is comparable), averaged like the training loss; at
  iteration 0 of a fresh run, every ``eval_interval`` and at the end.
- Metrics (rank 0, into ``output_dir``): every ``log_interval`` iterations one ``metrics.jsonl`` record
  and TensorBoard scalars with the loss averaged over the interval, the lr and grad norm of the last
  iteration, tokens/s (real, unpadded tokens of all ranks) and samples/s over the interval, ``elapsed_s``
  (training time of this process; evaluation and checkpointing excluded) and ``remaining_s``; eval
  records carry ``eval_loss``/``eval_ppl``. The console shows one updating tqdm line (``progress``), or
  one plain line per log interval without it. ``loss_curve.png`` is drawn from ``metrics.jsonl`` at the end.
- Checkpoints and resume: see ``checkpointing``. A run finding a complete checkpoint in ``save_dir``
  continues from it; otherwise it starts from ``load_dir`` as MindSpeed's ``--finetune`` does
  (iteration 0, fresh optimizer). Resume on CPU in fp32 ends bitwise equal to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from navila_tune.arch import LlamaArch
from navila_tune.native import checkpointing as ckpt
from navila_tune.native.batching import BatchPlan, InstructionDataset, collate, mindspeed_sample_order
from navila_tune.native.distributed import (DistContext, all_reduce_sum, average_gradients, barrier,
                                            init_distributed, shutdown)
from navila_tune.native.metrics import METRICS_FILE, TENSORBOARD_DIR, MetricsLogger
from navila_tune.native.modeling import (DTYPES, apply_lora, build_model, check_arch, masked_ce_sum,
                                         merged_state_dict)
from navila_tune.native.schedule import LRSchedule


class TrainingDiverged(RuntimeError):
    """Loss or gradient norm became NaN/inf."""


@dataclass(kw_only=True)
class TrainParams:
    load_dir: str  # Megatron checkpoint root to start from (convert stage output)
    data_prefix: str  # indexed dataset prefix (preprocess stage output)
    save_dir: str  # Megatron checkpoint root to write (and resume from)
    eval_prefix: str | None = None
    tp: int = 1  # layout the checkpoints are written at (training itself runs data-parallel)
    pp: int = 1
    num_layer_list: list[int] | None = None
    finetune: str = "full"  # full | lora
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: list[str] = field(
        default_factory=lambda: ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"])
    lr: float = 1e-5
    min_lr: float = 0.0
    lr_decay_style: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    clip_grad: float = 1.0
    train_iters: int
    global_batch_size: int
    micro_batch_size: int
    log_interval: int = 10
    eval_interval: int = 100  # 0: evaluate only at iteration 0 and at the end
    eval_iters: int = 10  # global batches of eval_prefix per evaluation
    save_interval: int = 1000  # 0: save only at the end
    seed: int = 1234
    precision: str = "bf16"  # bf16 | fp32
    seq_length: int = 4096
    pad_to_multiple_of: int = 8
    device: str = "cpu"  # cpu | cuda
    expected_arch: LlamaArch | None = None
    progress: bool = True
    output_dir: str | None = None  # metrics.jsonl, tensorboard/, loss_curve.png; default save_dir
    calculate_per_token_loss: bool = False
    exit_interval: int | None = None  # Megatron --exit-interval: save and stop at a multiple of this
    threads: int | None = None  # torch CPU threads


def train(params: TrainParams) -> dict[str, Any]:
    """Run (or resume) training; returns a summary dict."""
    p = _normalised(params)
    if p.threads:
        torch.set_num_threads(p.threads)
    ctx = init_distributed(p.device)
    finished = False
    try:
        result = _Trainer(p, ctx).run()
        finished = True
        return result
    finally:
        shutdown(ctx, synchronize=finished)


def _normalised(p: TrainParams) -> TrainParams:
    if isinstance(p.expected_arch, dict):
        p.expected_arch = LlamaArch.from_mapping(p.expected_arch)
    problems = []
    if p.finetune not in ("full", "lora"):
        problems.append(f"finetune={p.finetune!r}: use 'full' or 'lora'")
    if p.precision not in ("bf16", "fp32"):
        problems.append(f"precision={p.precision!r}: the native backend trains in 'bf16' (autocast over fp32 "
                        f"masters) or 'fp32'; fp16 needs Megatron's loss scaler, use bf16 instead")
    if p.train_iters < 1:
        problems.append(f"train_iters={p.train_iters} must be >= 1")
    for name in ("log_interval", "eval_iters", "pad_to_multiple_of", "seq_length"):
        if getattr(p, name) < 1:
            problems.append(f"{name}={getattr(p, name)} must be >= 1")
    if problems:
        raise ValueError("invalid training parameters: " + "; ".join(problems))
    return p


class _NullLogger:
    def advance(self, n: int = 1) -> None: ...
    def log_train(self, record: dict) -> None: ...
    def log_eval(self, record: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...
    def plot(self): return None


class _Trainer:
    def __init__(self, p: TrainParams, ctx: DistContext) -> None:
        self.p, self.ctx = p, ctx
        self.out_dir = Path(p.output_dir or p.save_dir)
        self.plan = BatchPlan(p.global_batch_size, p.micro_batch_size, ctx.world_size)
        self.data = InstructionDataset(p.data_prefix, p.seq_length, "data_prefix")
        self.plan.check_fits(len(self.data), f"data_prefix={p.data_prefix!r}")
        self.eval_data = (InstructionDataset(p.eval_prefix, p.seq_length, "eval_prefix")
                          if p.eval_prefix else None)
        self.schedule = LRSchedule.for_run(lr=p.lr, min_lr=p.min_lr, warmup_ratio=p.warmup_ratio,
                                           train_iters=p.train_iters, global_batch_size=p.global_batch_size,
                                           decay_style=p.lr_decay_style)
        self.order = mindspeed_sample_order(len(self.data), p.train_iters * p.global_batch_size, p.seed)
        self.autocast = (lambda: torch.autocast(ctx.device.type, dtype=torch.bfloat16)) \
            if p.precision == "bf16" else contextlib.nullcontext
        self.save_dtype = DTYPES[p.precision]

    # ----------------------------------------------------------------------------------------- setup
    def _resume_point(self) -> tuple[int | None, dict | None]:
        root = Path(self.p.save_dir)
        if not (root / ckpt.TRACKER).is_file():
            return None, None
        it = ckpt.latest_complete_iteration(root)
        if it is None:
            return None, None
        state = ckpt.load_train_state(root, it)
        if state is None:
            raise ckpt.CheckpointError(
                f"save_dir={str(root)!r} already holds checkpoint iteration {it} without the native training "
                f"state ({ckpt.TRAIN_STATE}); it was not written by native training, so it cannot be resumed. "
                f"Fix: choose an empty save_dir, or remove that folder.")
        self._check_resumable(state, it)
        return it, state

    def _check_resumable(self, state: dict, it: int) -> None:
        run = state["run"]
        diffs = [f"{k}: checkpoint {run[k]!r}, now {getattr(self.p, k)!r}"
                 for k in ("global_batch_size", "seed", "finetune", "lora_r", "lora_alpha", "lora_targets")
                 if run.get(k) != getattr(self.p, k)]
        if state["data"]["num_samples"] != len(self.data):
            diffs.append(f"training samples: checkpoint {state['data']['num_samples']}, now {len(self.data)}")
        if diffs:
            raise ckpt.CheckpointError(
                f"cannot resume from {self.p.save_dir!r} iteration {it}: " + "; ".join(diffs) +
                ". Fix: restore those settings, or start the run in an empty save_dir.")

    def _load_weights(self, resume_iter: int | None, train_state: dict | None):
        p = self.p
        from_resume = resume_iter is not None and p.finetune == "full"
        src = p.save_dir if from_resume else p.load_dir
        meta, state = ckpt.load_state(src, resume_iter if from_resume else None)
        check_arch(meta.arch, p.expected_arch, src)
        self.meta = meta
        self.base_fingerprint = _fingerprint(state) if p.finetune == "lora" else None
        if p.finetune == "lora" and train_state is not None \
                and self.base_fingerprint != train_state["base"]["fingerprint"]:
            raise ckpt.CheckpointError(
                f"load_dir={p.load_dir!r} is not the base checkpoint the LoRA run in {p.save_dir!r} started "
                f"from (weights differ). Fix: point load_dir at {train_state['base']['load_dir']!r}.")
        model = build_model(meta.arch, meta.padded_vocab_size, state)
        del state
        return model

    def _optimizer(self, model) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        self.param_names = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            self.param_names.append(name)
            (no_decay if param.ndim == 1 or name.endswith(".bias") else decay).append(param)
        self.params = decay + no_decay
        groups = [{"params": decay, "weight_decay": self.p.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.schedule.lr_at_samples(0),
                                 betas=(self.p.adam_beta1, self.p.adam_beta2), eps=self.p.adam_eps)

    # ------------------------------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        p, ctx = self.p, self.ctx
        _seed_everything(p.seed)
        resume_iter, train_state = self._resume_point()
        model = self._load_weights(resume_iter, train_state)
        if p.finetune == "lora":
            torch.manual_seed(p.seed)
            model = apply_lora(model, p.lora_r, p.lora_alpha, p.lora_targets)
        if train_state is not None and "trainable" in train_state:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for name, value in train_state["trainable"].items():
                    named[name].copy_(value)
        model.to(ctx.device)
        model.train()
        self.model = model
        self.optimizer = self._optimizer(model)
        start = 0
        if train_state is not None:
            if train_state["param_names"] != self.param_names:
                raise ckpt.CheckpointError(f"{p.save_dir!r}: trainable parameters differ from the checkpoint's")
            self.optimizer.load_state_dict(train_state["optimizer"])
            _set_rng_state(train_state["rng_state"])
            start = train_state["iteration"]
        logger = (MetricsLogger(self.out_dir, total_iters=p.train_iters, start_iter=start, progress=p.progress,
                                resume_from=start) if ctx.is_main else _NullLogger())
        self.logger = logger
        if resume_iter is not None:
            logger.message(f"resuming from {p.save_dir}/{ckpt.iter_dir_name(resume_iter)} (iteration {start})")
        try:
            return self._loop(start)
        finally:
            logger.close()

    def _loop(self, start: int) -> dict[str, Any]:
        p, ctx, logger = self.p, self.ctx, self.logger
        eval_initial = eval_last = None
        if self.eval_data is not None and start == 0:
            eval_initial = eval_last = self._evaluate(0)
        window_loss, window_iters, window_tokens, window_time = 0.0, 0, 0, 0.0
        train_time, train_tokens, done_iters = 0.0, 0, 0
        last_loss = float("nan")
        saved_at = None
        last_ckpt = None
        for iteration in range(start + 1, p.train_iters + 1):
            t0 = time.perf_counter()
            loss, grad_norm, lr = _train_iteration(self, iteration)
            dt = time.perf_counter() - t0
            tokens = int(self.data.lengths[self.plan.global_batch(self.order, iteration)].sum())
            window_loss += loss
            window_iters += 1
            window_tokens += tokens
            window_time += dt
            train_time += dt
            train_tokens += tokens
            done_iters += 1
            last_loss = loss
            logger.advance()
            if iteration % p.log_interval == 0 or iteration == p.train_iters:
                avg_it = train_time / done_iters
                logger.log_train({
                    "iteration": iteration, "train_iters": p.train_iters, "loss": window_loss / window_iters,
                    "lr": lr, "grad_norm": grad_norm, "tokens_per_s": window_tokens / window_time,
                    "samples_per_s": window_iters * p.global_batch_size / window_time,
                    "consumed_samples": iteration * p.global_batch_size, "elapsed_s": train_time,
                    "remaining_s": avg_it * (p.train_iters - iteration)})
                window_loss, window_iters, window_tokens, window_time = 0.0, 0, 0, 0.0
            exiting = bool(p.exit_interval) and iteration % p.exit_interval == 0 and iteration < p.train_iters
            if (p.save_interval and iteration % p.save_interval == 0) or iteration == p.train_iters or exiting:
                last_ckpt = self._save(iteration)
                saved_at = iteration
            if self.eval_data is not None and ((p.eval_interval and iteration % p.eval_interval == 0)
                                               or iteration == p.train_iters):
                eval_last = self._evaluate(iteration)
            if exiting:
                logger.message(f"exit_interval={p.exit_interval}: stopping after iteration {iteration}")
                break
        png = logger.plot()
        final_iter = start + done_iters
        return {
            "iterations": final_iter, "start_iteration": start, "train_iters": p.train_iters,
            "final_loss": last_loss, "eval_loss": eval_last, "eval_loss_initial": eval_initial,
            "tokens_per_s": train_tokens / train_time if train_time else None,
            "samples_per_s": done_iters * p.global_batch_size / train_time if train_time else None,
            "train_time_s": train_time, "grad_accum": self.plan.grad_accum,
            "data_parallel_size": ctx.world_size, "global_batch_size": p.global_batch_size,
            "save_dir": str(Path(p.save_dir)),
            "last_checkpoint": str(last_ckpt) if last_ckpt else (
                str(Path(p.save_dir) / ckpt.iter_dir_name(start)) if start else None),
            "saved_iteration": saved_at, "output_dir": str(self.out_dir),
            "metrics": str(self.out_dir / METRICS_FILE), "tensorboard": str(self.out_dir / TENSORBOARD_DIR),
            "loss_curve": str(png) if png else None,
        }

    # ------------------------------------------------------------------------------- eval and save
    def _evaluate(self, iteration: int) -> float:
        p, ctx = self.p, self.ctx
        n = min(len(self.eval_data), p.eval_iters * p.global_batch_size)
        mbs = p.micro_batch_size
        chunks = [range(i, min(i + mbs, n)) for i in range(0, n, mbs)][ctx.rank::ctx.world_size]
        sum_means = sum_loss = 0.0
        n_micro = n_tokens = 0
        self.model.eval()
        with torch.no_grad():
            for chunk in chunks:
                batch = collate([self.eval_data.sample(i) for i in chunk], p.pad_to_multiple_of).to(ctx.device)
                with self.autocast():
                    logits = self.model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                        use_cache=False).logits
                loss_sum, count = masked_ce_sum(logits, batch.labels)
                if count:
                    sum_means += float(loss_sum) / count
                    sum_loss += float(loss_sum)
                    n_tokens += count
                n_micro += 1
        self.model.train()
        sum_means, n_micro, sum_loss, n_tokens = all_reduce_sum(ctx, [sum_means, n_micro, sum_loss, n_tokens])
        loss = sum_loss / max(n_tokens, 1) if p.calculate_per_token_loss else sum_means / max(n_micro, 1)
        self.logger.log_eval({"iteration": iteration, "eval_loss": loss, "eval_ppl": _ppl(loss),
                              "eval_samples": n})
        return loss

    def _save(self, iteration: int) -> Path | None:
        p, ctx = self.p, self.ctx
        path = None
        if ctx.is_main:
            state = merged_state_dict(self.model, self.save_dtype)
            state = {k: v.detach().cpu() for k, v in state.items()}
            path = ckpt.save_checkpoint(
                p.save_dir, iteration, state, arch=self.meta.arch, tp=p.tp, pp=p.pp,
                num_layer_list=p.num_layer_list, padded_vocab_size=self.meta.padded_vocab_size,
                args_overrides=self._megatron_args(iteration),
                extra={"opt_param_scheduler": self.schedule.megatron_state_dict(
                    iteration * p.global_batch_size, p.weight_decay)},
                train_state=self._train_state(iteration))
        barrier(ctx)
        return path if path is not None else Path(p.save_dir) / ckpt.iter_dir_name(iteration)

    def _megatron_args(self, iteration: int) -> dict[str, Any]:
        p = self.p
        return {
            "iteration": iteration, "consumed_train_samples": iteration * p.global_batch_size,
            "consumed_valid_samples": 0, "train_iters": p.train_iters, "global_batch_size": p.global_batch_size,
            "micro_batch_size": p.micro_batch_size, "lr": p.lr, "min_lr": p.min_lr,
            "lr_decay_style": p.lr_decay_style, "lr_warmup_fraction": p.warmup_ratio,
            "weight_decay": p.weight_decay, "adam_beta1": p.adam_beta1, "adam_beta2": p.adam_beta2,
            "adam_eps": p.adam_eps, "clip_grad": p.clip_grad, "seed": p.seed, "seq_length": p.seq_length,
            "bf16": p.precision == "bf16", "fp16": False,
        }

    def _train_state(self, iteration: int) -> dict[str, Any]:
        p = self.p
        trainable = None
        if p.finetune == "lora" or p.precision != "fp32":
            trainable = {n: t.detach().float().cpu().clone()
                         for n, t in self.model.named_parameters() if t.requires_grad}
        state = {
            "format": ckpt.TRAIN_STATE_FORMAT, "iteration": iteration,
            "consumed_train_samples": iteration * p.global_batch_size,
            "optimizer": _cpu(self.optimizer.state_dict()), "param_names": list(self.param_names),
            "opt_param_scheduler": self.schedule.megatron_state_dict(iteration * p.global_batch_size,
                                                                     p.weight_decay),
            "rng_state": _rng_state(),
            "data": {"prefix": os.path.abspath(p.data_prefix), "num_samples": len(self.data), "seed": p.seed},
            "run": {k: v for k, v in asdict(p).items() if k != "expected_arch"},
        }
        if trainable is not None:
            state["trainable"] = trainable
        if p.finetune == "lora":
            state["base"] = {"load_dir": os.path.abspath(p.load_dir), "fingerprint": self.base_fingerprint}
        return state


def _train_iteration(tr: _Trainer, iteration: int) -> tuple[float, float, float]:
    """Forward/backward over this rank's micro-batches, DP average, clip, AdamW step."""
    p, ctx, plan = tr.p, tr.ctx, tr.plan
    lr = tr.schedule.lr_for_iteration(iteration, p.global_batch_size)
    for group in tr.optimizer.param_groups:
        group["lr"] = lr
    batches = [collate([tr.data.sample(i) for i in idx], p.pad_to_multiple_of).to(ctx.device)
               for idx in plan.rank_micro_batches(tr.order, iteration, ctx.rank)]
    if p.calculate_per_token_loss:
        (global_tokens,) = all_reduce_sum(ctx, [sum(b.num_label_tokens for b in batches)])
    tr.optimizer.zero_grad(set_to_none=True)
    reported = 0.0
    for batch in batches:
        with tr.autocast():
            logits = tr.model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        loss_sum, count = masked_ce_sum(logits, batch.labels)
        if p.calculate_per_token_loss:
            loss = loss_sum * (ctx.world_size / max(global_tokens, 1))
        else:
            loss = loss_sum / (max(count, 1) * plan.grad_accum)
        loss.backward()
        reported += float(loss.detach())
        del logits, loss, loss_sum
    average_gradients(ctx, tr.params)
    (reported,) = all_reduce_sum(ctx, [reported])
    reported /= ctx.world_size
    if not math.isfinite(reported):
        _diverged(tr, iteration, f"loss is {reported}")
    max_norm = p.clip_grad if p.clip_grad and p.clip_grad > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(tr.params, max_norm))
    if not math.isfinite(grad_norm):
        _diverged(tr, iteration, f"gradient norm is {grad_norm} (loss {reported:.4f})")
    tr.optimizer.step()
    return reported, grad_norm, lr


def _diverged(tr: _Trainer, iteration: int, what: str) -> None:
    root = Path(tr.p.save_dir)
    good = ckpt.latest_complete_iteration(root) if (root / ckpt.TRACKER).is_file() else None
    kept = (f"the last good checkpoint is {root / ckpt.iter_dir_name(good)} (iteration {good}); nothing was saved "
            f"after it" if good is not None else "no checkpoint was saved before it (lower save_interval to keep one)")
    raise TrainingDiverged(
        f"training diverged at iteration {iteration}: {what}; stopped before the optimizer step; {kept}. "
        f"Fix: lower lr (now {tr.p.lr}), raise warmup_ratio (now {tr.p.warmup_ratio}) or clip_grad, use "
        f"precision=fp32 to rule out bf16 overflow, and check the data near sample "
        f"{(iteration - 1) * tr.p.global_batch_size}.")


# ------------------------------------------------------------------------------------------ helpers
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fingerprint(state: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], float]]:
    return [(k, tuple(v.shape), float(v.double().sum())) for k, v in sorted(state.items())]


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


def main(argv: list[str] | None = None) -> int:
    from navila_tune.native.cli import parse_params, print_json

    params = parse_params(TrainParams, argv, prog="python -m navila_tune.native.train",
                          description="Native SFT on a Megatron checkpoint and an indexed dataset "
                                      "(run under torchrun for data parallelism).")
    summary = train(params)
    if int(os.environ.get("RANK", "0")) == 0:
        print_json(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
