"""Values derived from the resolved config. Nothing here is configured; everything is computed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from navila_tune.arch import LlamaArch, padded_vocab_size


@dataclass(frozen=True)
class Layout:
    """How the run maps onto devices, and the batch arithmetic that follows from it."""

    world_size: int  # processes of the training job
    tp: int
    pp: int
    cp: int
    model_parallel: bool  # False: TP/PP describe checkpoint files only (native backend runs DP)
    micro_batch_size: int
    global_batch_size: int
    grad_accum_configured: int | None
    padded_vocab_size: int

    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp * self.cp if self.model_parallel else 1

    @property
    def dp(self) -> int:
        """Data-parallel size (may be fractional before validation; validated to be integral)."""
        return self.world_size // self.model_parallel_size

    @property
    def dp_is_integral(self) -> bool:
        return self.world_size % self.model_parallel_size == 0 and self.world_size >= self.model_parallel_size

    @property
    def grad_accum(self) -> int:
        """Given, or GBS / (MBS x DP)."""
        if self.grad_accum_configured is not None:
            return self.grad_accum_configured
        return self.global_batch_size // max(1, self.micro_batch_size * self.dp)

    @property
    def inference_world_size(self) -> int:
        """Processes for MindSpeed inference on the training layout (DP 1)."""
        return self.tp * self.pp


def arch_of(cfg: Any) -> LlamaArch:
    return LlamaArch.from_mapping(dict(cfg.model.arch))


def layout_of(cfg: Any) -> Layout:
    hw, par, optim = cfg.hardware, cfg.parallelism, cfg.optim
    return Layout(
        world_size=hw.devices_per_node * hw.nnodes,
        tp=par.tp,
        pp=par.pp,
        cp=par.cp,
        model_parallel=cfg.backend.name == "mindspeed",
        micro_batch_size=optim.micro_batch_size,
        global_batch_size=optim.global_batch_size,
        grad_accum_configured=optim.grad_accum,
        padded_vocab_size=padded_vocab_size(
            cfg.model.arch.vocab_size, cfg.model.make_vocab_size_divisible_by, par.tp
        ),
    )
