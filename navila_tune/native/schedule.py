"""Megatron's learning-rate schedule (megatron/core/optimizer_param_scheduler.py, core 0.12).

Megatron counts scheduler steps in *samples*: with ``--train-iters`` the decay length is
``train_iters * global_batch_size`` samples, the warmup is ``lr_warmup_fraction`` of it (MindSpeed's
``--lr-warmup-fraction`` is our ``warmup_ratio``), and ``step(global_batch_size)`` runs after every
optimizer step. The optimizer step of iteration ``k`` (1-based) therefore uses the lr at
``num_steps = (k - 1) * global_batch_size``; iteration 1 runs at ``lr_warmup_init`` (0) when there is a
warmup. The warmup starts from ``lr_warmup_init`` = 0, Megatron's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root")


@dataclass(frozen=True)
class LRSchedule:
    """Warmup then decay, in Megatron's sample-count units."""

    max_lr: float
    min_lr: float
    warmup_steps: float  # samples
    decay_steps: int  # samples
    decay_style: str = "cosine"
    init_lr: float = 0.0

    @classmethod
    def for_run(cls, *, lr: float, min_lr: float, warmup_ratio: float, train_iters: int,
                global_batch_size: int, decay_style: str) -> "LRSchedule":
        if decay_style not in DECAY_STYLES:
            raise ValueError(f"lr_decay_style={decay_style!r} is not supported by the native backend; "
                             f"use one of {list(DECAY_STYLES)}")
        if not 0.0 <= warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={warmup_ratio} must be in [0, 1) (Megatron asserts warmup < decay)")
        if min_lr < 0 or min_lr > lr:
            raise ValueError(f"min_lr={min_lr} must be in [0, lr={lr}]")
        decay_steps = train_iters * global_batch_size
        return cls(max_lr=float(lr), min_lr=float(min_lr), warmup_steps=warmup_ratio * decay_steps,
                   decay_steps=decay_steps, decay_style=decay_style)

    def lr_at_samples(self, num_steps: float) -> float:
        """Megatron ``OptimizerParamScheduler.get_lr`` after ``num_steps`` samples."""
        if self.warmup_steps > 0 and num_steps <= self.warmup_steps:
            return self.init_lr + (self.max_lr - self.init_lr) * float(num_steps) / float(self.warmup_steps)
        if self.decay_style == "constant":
            return self.max_lr
        if num_steps > self.decay_steps:
            return self.min_lr
        if self.decay_style == "inverse-square-root":
            warmup = max(self.warmup_steps, 1)
            lr = self.max_lr * warmup ** 0.5 / (max(num_steps, 1) ** 0.5)
            return max(self.min_lr, lr)
        ratio = float(num_steps - self.warmup_steps) / float(self.decay_steps - self.warmup_steps)
        if self.decay_style == "linear":
            coeff = 1.0 - ratio
        else:  # cosine
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
        return self.min_lr + coeff * (self.max_lr - self.min_lr)

    def lr_for_iteration(self, iteration: int, global_batch_size: int) -> float:
        """The lr the optimizer step of ``iteration`` (1-based) uses."""
        return self.lr_at_samples((iteration - 1) * global_batch_size)

    def megatron_state_dict(self, num_steps: int, weight_decay: float) -> dict[str, Any]:
        """Megatron's ``opt_param_scheduler`` checkpoint entry after ``num_steps`` samples."""
        return {
            "max_lr": self.max_lr,
            "lr_warmup_steps": self.warmup_steps,
            "num_steps": num_steps,
            "lr_decay_style": self.decay_style,
            "lr_decay_steps": self.decay_steps,
            "min_lr": self.min_lr,
            "start_wd": weight_decay,
            "end_wd": weight_decay,
            "wd_incr_style": "constant",
            "wd_incr_steps": self.decay_steps,
        }
