"""Peak device memory per rank: weights, gradients, optimizer states, activations and a fixed reserve.

Every pipeline stage is estimated; the breakdown reports the worst rank. GB means 10^9 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from navila_tune.planner.activations import StageActivations, stage_activations
from navila_tune.planner.params import StageParams, layer_params, stage_params
from navila_tune.planner.shape import RunShape

GB = 1e9
TERMS = ("weights", "gradients", "optimizer", "activations", "reserve")


@dataclass(frozen=True)
class Term:
    name: str
    gb: float
    detail: str


@dataclass(frozen=True)
class StageMemory:
    stage: int
    params: StageParams
    activations: StageActivations
    terms: tuple[Term, ...]

    @property
    def total_gb(self) -> float:
        return sum(t.gb for t in self.terms)

    def term(self, name: str) -> float:
        return next(t.gb for t in self.terms if t.name == name)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-rank peak memory of a run: one entry per pipeline stage, the worst one in front."""

    shape: RunShape
    stages: tuple[StageMemory, ...]

    @property
    def worst(self) -> StageMemory:
        return max(self.stages, key=lambda s: s.total_gb)

    @property
    def terms(self) -> tuple[Term, ...]:
        return self.worst.terms

    @property
    def total_gb(self) -> float:
        return self.worst.total_gb

    @property
    def usable_gb(self) -> float:
        return self.shape.usable_gb

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.usable_gb

    def term(self, name: str) -> float:
        return self.worst.term(name)

    def summary(self) -> str:
        """``weights 4.0 + gradients 8.0 + ... GB``"""
        return " + ".join(f"{t.name} {t.gb:.1f}" for t in self.terms) + " GB"

    def table(self, indent: str = "  ") -> str:
        """The per-term table of the worst rank."""
        w = self.worst
        where = f"stage {w.stage} of {self.shape.pp}" if self.shape.pp > 1 else "every rank"
        lines = [f"{indent}{'term':<12} {'GB':>7}  detail ({where})"]
        for t in w.terms:
            lines.append(f"{indent}{t.name:<12} {t.gb:>7.2f}  {t.detail}")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"{indent}{'total':<12} {self.total_gb:>7.2f}  {verdict}: {self.usable_gb:.1f} GB usable "
                     f"({self.shape.memory_gb:g} GB - {self.shape.memory_margin:.0%} margin)")
        if self.shape.pp > 1:
            per = ", ".join(f"{s.stage}: {s.total_gb:.1f}" for s in self.stages)
            lines.append(f"{indent}{'per stage':<12} {'':>7}  {per} GB")
        return "\n".join(lines)


def estimate_shape(shape: RunShape) -> MemoryBreakdown:
    """Peak memory of every stage of ``shape``."""
    return MemoryBreakdown(shape, tuple(_stage_memory(shape, p) for p in stage_params(shape)))


def _stage_memory(shape: RunShape, p: StageParams) -> StageMemory:
    lora = shape.finetune == "lora"
    trainable = p.lora if lora else p.total
    shards = shape.optimizer_shards if (shape.distributed_optimizer or shape.fsdp) else 1
    state_shards = shape.optimizer_shards if shape.fsdp else 1  # FSDP also shards weights and grads

    weights = (p.total + p.lora) * shape.weight_bytes / state_shards + p.total * shape.weight_cache_bytes
    w_detail = f"{p.total:,} params x {shape.weight_bytes:g} B"
    if lora:
        w_detail += f" (frozen) + {p.lora:,} LoRA params"
    if shape.weight_cache_bytes:
        w_detail += f" + {shape.weight_cache_bytes:g} B autocast copy"
    if shape.fsdp:  # gathered units: the root (embedding, output) and two layers (current + prefetch)
        gathered = (p.embedding + p.output + 2 * layer_params(shape.arch, shape.tp)) * shape.weight_bytes
        weights += gathered
        w_detail += f" / {state_shards} (FSDP) + {gathered / GB:.2f} GB gathered units"

    grads = trainable * shape.grad_bytes / state_shards
    g_detail = f"{trainable:,} trainable x {shape.grad_bytes:g} B"
    if shape.fsdp and not lora:
        grads += layer_params(shape.arch, shape.tp) * shape.grad_bytes  # unsharded grads of one unit
        g_detail += f" / {state_shards} + one unsharded layer"

    per_param = shape.master_bytes + shape.optim_state_bytes
    optimizer = trainable * per_param / shards
    o_detail = f"{trainable:,} x ({shape.master_bytes:g} master + {shape.optim_state_bytes:g} Adam) B"
    if shards > 1:
        o_detail += f" / {shards} ({'FSDP' if shape.fsdp else 'distributed optimizer'})"
    o_detail += f"; {shape.state_note}"

    act = stage_activations(shape, p)
    peak = "loss/logits" if act.loss_peak >= act.recompute_transient + act.workspace else "backward of a layer"
    a_detail = (f"{act.in_flight} micro-batch(es) x {act.stored_per_microbatch / GB:.2f} GB kept "
                f"({p.layers} layers, recompute {shape.recompute_label}) + peak transient "
                f"{act.transient / GB:.2f} GB ({peak})")
    terms = (
        Term("weights", weights / GB, w_detail),
        Term("gradients", grads / GB, g_detail),
        Term("optimizer", optimizer / GB, o_detail),
        Term("activations", act.total / GB, a_detail),
        Term("reserve", shape.reserve_gb, "framework reserve (runtime, communication buffers, allocator)"),
    )
    return StageMemory(p.stage, p, act, terms)


def estimate(cfg_or_shape: Any) -> MemoryBreakdown:
    """Per-rank peak memory (worst rank) of the configured run (a resolved config or a RunShape)."""
    shape = cfg_or_shape if isinstance(cfg_or_shape, RunShape) else RunShape.from_config(cfg_or_shape)
    return estimate_shape(shape)
