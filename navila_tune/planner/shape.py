"""The run settings the memory planner needs, as plain values (``RunShape``), and the layout rules.

``RunShape.from_config(cfg)`` is the only place that reads the Hydra config; everything else in the
planner works on ``LlamaArch`` + ``RunShape``. Implementation facts (which tensors a framework keeps,
its loss kernel, its optimizer dtypes) are fields too, so the published measurements of other
frameworks (torchtune, FSDP) can be estimated with the same code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from navila_tune.arch import LlamaArch, layer_counts, padded_vocab_size

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
LORA_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")

# Bytes kept per logit at the loss peak (see docs/memory_planner.md, "Loss and logits").
# Megatron's vocab-parallel cross entropy keeps the fp32 softmax (4 B) and, in backward, writes the
# gradient in place and casts it to bf16 (2 B) for the output layer.
MEGATRON_LOSS_BYTES_PER_LOGIT = 6.0
# transformers' LlamaForCausalLM: bf16 logits kept in the output (2), fp32 log-softmax (4), and in
# backward the nll gradient (4) plus the log-softmax input gradient (4).
HF_LOSS_BYTES_PER_LOGIT = 14.0
# Ascend's npu_fusion_attention keeps softmax_max and softmax_sum as fp32 [b, heads, s, 8]: 64 B per
# head and token. FlashAttention-2 on CUDA keeps one fp32 log-sum-exp: 4 B.
FLASH_STATS_BYTES_PER_HEAD = {"npu": 64.0, "cuda": 4.0, "cpu": 4.0}
DEFAULT_RESERVE_GB = 3.0


@dataclass(frozen=True)
class RunShape:
    """Everything about a training run that decides its per-device memory."""

    arch: LlamaArch
    seq_length: int
    micro_batch_size: int
    global_batch_size: int
    world_size: int
    tp: int = 1
    pp: int = 1
    cp: int = 1
    model_parallel: bool = True  # False: the native backend runs plain DP (TP/PP only shape its checkpoints)
    sequence_parallel: bool = False  # effective only with tp > 1 (Megatron turns it off at TP1)
    num_layer_list: Optional[tuple[int, ...]] = None
    grad_accum: Optional[int] = None  # derived as GBS / (MBS x DP) unless given
    make_vocab_size_divisible_by: int = 1
    # optimizer and precision
    precision: str = "bf16"
    finetune: str = "full"  # full | lora
    lora_r: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    distributed_optimizer: bool = False
    # bytes per parameter of each model/optimizer state (see state_bytes(); sharded ones marked)
    weight_bytes: float = 2.0  # model parameters as stored
    weight_cache_bytes: float = 0.0  # autocast's low-precision weight copies (native bf16)
    grad_bytes: float = 4.0  # gradient buffers (Megatron DDP: fp32 main_grad for bf16 params)
    master_bytes: float = 4.0  # fp32 master copy (optimizer state; sharded by the distributed optimizer)
    optim_state_bytes: float = 8.0  # Adam exp_avg + exp_avg_sq (sharded by the distributed optimizer)
    state_note: str = "Megatron bf16 mixed precision"
    fsdp: bool = False  # ZeRO-3 / FSDP full shard over DP (only for published comparisons)
    # recompute
    recompute_granularity: Optional[str] = None  # None | selective | full
    recompute_method: str = "uniform"  # uniform | block (full only)
    recompute_num_layers: int = 1
    # what the implementation keeps for backward
    flash_attention: bool = True
    flash_stats_bytes_per_head: float = 64.0
    fused_swiglu: bool = True  # Megatron/MindSpeed swiglu keeps its input only; HF keeps four tensors
    mlp_activation: str = "swiglu"  # swiglu (Llama) | gelu (GPT, for Megatron's published formula)
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    loss_bytes_per_logit: float = MEGATRON_LOSS_BYTES_PER_LOGIT
    wgrad_temp: bool = True  # --no-gradient-accumulation-fusion: weight grads land in a bf16 temp first
    # hardware
    memory_gb: float = 64.0
    memory_margin: float = 0.05
    reserve_gb: float = DEFAULT_RESERVE_GB
    hardware_name: str = "?"
    chip: str = "910b"
    accelerator: str = "npu"
    devices_per_node: int = 1
    labels: dict = field(default_factory=dict, compare=False)  # display only (experiment name ...)

    # ---- derived values -------------------------------------------------------------------------
    @property
    def model_parallel_size(self) -> int:
        return self.tp * self.pp * self.cp

    @property
    def dp(self) -> int:
        return self.world_size // self.model_parallel_size

    @property
    def optimizer_shards(self) -> int:
        """Ranks the distributed optimizer (or FSDP) shards over: Megatron uses the DP x CP group."""
        return self.dp * self.cp

    @property
    def ga(self) -> int:
        """Micro batches per pipeline per step (gradient accumulation steps)."""
        if self.grad_accum is not None:
            return self.grad_accum
        return max(1, self.global_batch_size // max(1, self.micro_batch_size * self.dp))

    @property
    def sp(self) -> bool:
        return self.sequence_parallel and self.tp > 1

    @property
    def padded_vocab(self) -> int:
        return padded_vocab_size(self.arch.vocab_size, self.make_vocab_size_divisible_by, self.tp)

    @property
    def stage_layers(self) -> list[int]:
        return layer_counts(self.arch.num_layers, self.pp, list(self.num_layer_list or []) or None)

    @property
    def act_bytes(self) -> int:
        return DTYPE_BYTES[self.precision]

    @property
    def usable_gb(self) -> float:
        return self.memory_gb * (1.0 - self.memory_margin)

    @property
    def recompute_label(self) -> str:
        if self.recompute_granularity == "full":
            return f"full/{self.recompute_method}/{self.recompute_num_layers}"
        return self.recompute_granularity or "off"

    def replace(self, **changes: Any) -> "RunShape":
        return dataclasses.replace(self, **changes)

    # ---- from the config ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Any) -> "RunShape":
        """The run the resolved config describes (the only function reading the Hydra config)."""
        from omegaconf import OmegaConf

        model, par, optim, hw, data = cfg.model, cfg.parallelism, cfg.optim, cfg.hardware, cfg.data
        arch = LlamaArch.from_mapping(dict(model.arch))
        megatron = cfg.backend.name == "mindspeed"
        # The native backend runs plain data parallel: TP/PP only describe its checkpoint files.
        tp, pp, cp = (par.tp, par.pp, par.cp) if megatron else (1, 1, 1)
        nll = tuple(par.num_layer_list) if (megatron and par.num_layer_list) else None
        rc = par.recompute
        granularity = rc.granularity if megatron else None
        precision = optim.precision

        def opt(key: str) -> bool:  # MindSpeed memory options, read once the schema carries them
            return bool(OmegaConf.select(cfg, key, default=False))

        return cls(
            arch=arch,
            seq_length=data.seq_length,
            micro_batch_size=optim.micro_batch_size,
            global_batch_size=optim.global_batch_size,
            world_size=hw.devices_per_node * hw.nnodes,
            tp=tp,
            pp=pp,
            cp=cp,
            model_parallel=megatron,
            sequence_parallel=bool(par.sequence_parallel) and megatron,
            num_layer_list=nll,
            grad_accum=optim.grad_accum,
            make_vocab_size_divisible_by=model.make_vocab_size_divisible_by,
            precision=precision,
            finetune=optim.finetune,
            lora_r=optim.lora.r,
            lora_targets=tuple(optim.lora.targets),
            distributed_optimizer=bool(par.distributed_optimizer) and megatron,
            **(megatron_state_bytes(precision, reuse_fp32_param=opt("parallelism.reuse_fp32_param"),
                                    o2_optimizer=opt("optim.o2_optimizer"),
                                    o2_gradient=opt("optim.o2_gradient"))
               if megatron else native_state_bytes(precision)),
            recompute_granularity=granularity,
            recompute_method=(rc.method or "uniform") if granularity == "full" else "uniform",
            recompute_num_layers=(rc.num_layers or 1) if granularity == "full" else 1,
            flash_attention=megatron or hw.accelerator == "cuda",
            flash_stats_bytes_per_head=FLASH_STATS_BYTES_PER_HEAD.get(hw.accelerator, 4.0),
            fused_swiglu=megatron,
            loss_bytes_per_logit=MEGATRON_LOSS_BYTES_PER_LOGIT if megatron else HF_LOSS_BYTES_PER_LOGIT,
            wgrad_temp=megatron,
            memory_gb=float(hw.memory_gb),
            memory_margin=float(hw.memory_margin),
            reserve_gb=float(OmegaConf.select(cfg, "hardware.reserve_gb", default=DEFAULT_RESERVE_GB)),
            hardware_name=hw.name,
            chip=hw.chip,
            accelerator=hw.accelerator,
            devices_per_node=hw.devices_per_node,
            labels={"experiment": cfg.get("experiment_name", "?"), "backend": cfg.backend.name},
        )


def megatron_state_bytes(precision: str, *, reuse_fp32_param: bool = False, o2_optimizer: bool = False,
                         o2_gradient: bool = False) -> dict[str, Any]:
    """Bytes per parameter of Megatron-LM's model and optimizer states (MindSpeed options included).

    bf16: bf16 params (2), fp32 main_grad buffers (4; Megatron-LM forces accumulate_allreduce_grads_in_fp32
    for bf16), fp32 master params (4) and Adam moments (8) = 18 B, or 6 + 12/d with the distributed
    optimizer (Megatron-LM README, "Distributed Optimizer"). fp16: fp16 grads (2) and the optimizer's own
    fp32 main grads (4, counted with the master) = 20 B, 4 + 16/d. fp32: 16 B, 8 + 8/d.
    --reuse-fp32-param keeps the bf16 params inside the fp32 master buffer: master 2 B (saves 2N/d).
    --o2-optimizer keeps the Adam moments in bf16 (saves 4N/d); --o2-gradient bf16 grads (saves 2N).
    """
    p = DTYPE_BYTES[precision]
    if p == 4:
        return dict(weight_bytes=4.0, grad_bytes=4.0, master_bytes=0.0, optim_state_bytes=8.0,
                    state_note="Megatron fp32")
    grad, master = (2.0, 8.0) if precision == "fp16" else (4.0, 4.0)  # fp16: master + fp32 main-grad copy
    notes = [f"Megatron {precision} mixed precision"]
    if reuse_fp32_param and precision == "bf16":
        master -= 2.0
        notes.append("--reuse-fp32-param")
    adam = 8.0
    if o2_optimizer and precision == "bf16":
        adam = 4.0
        notes.append("--o2-optimizer")
    if o2_gradient and precision == "bf16":
        grad = 2.0
        notes.append("--o2-gradient")
    return dict(weight_bytes=2.0, grad_bytes=grad, master_bytes=master, optim_state_bytes=adam,
                state_note=", ".join(notes))


def native_state_bytes(precision: str) -> dict[str, Any]:
    """The native backend: fp32 params, grads and AdamW moments; bf16 runs under autocast, which caches
    a bf16 copy of every weight for the duration of the forward/backward."""
    cache = 2.0 if precision in ("bf16", "fp16") else 0.0
    note = f"native fp32 weights under {precision} autocast" if cache else "native fp32"
    return dict(weight_bytes=4.0, weight_cache_bytes=cache, grad_bytes=4.0, master_bytes=0.0,
                optim_state_bytes=8.0, state_note=note)


def pure_state_bytes(precision: str) -> dict[str, Any]:
    """Pure low-precision training (torchtune's dtype=bf16): params, grads and AdamW moments all in the
    parameter dtype, no master copy."""
    p = float(DTYPE_BYTES[precision])
    return dict(weight_bytes=p, grad_bytes=p, master_bytes=0.0, optim_state_bytes=2 * p,
                state_note=f"pure {precision}")


def layout_problems(shape: RunShape) -> list[str]:
    """Why the layout cannot run (the same rules navila_tune.validate enforces); [] when it can."""
    a, out = shape.arch, []
    mp = shape.model_parallel_size
    if min(shape.tp, shape.pp, shape.cp) < 1:
        return ["tp, pp and cp must be >= 1"]
    if shape.world_size < mp or shape.world_size % mp:
        out.append(f"world size {shape.world_size} is not a multiple of TP x PP x CP = {mp}")
    for name, value in (("heads", a.num_attention_heads), ("query groups", a.num_query_groups)):
        if value % shape.tp:
            out.append(f"TP {shape.tp} does not divide the {value} {name}")
    if shape.num_layer_list:
        nll = list(shape.num_layer_list)
        if shape.pp < 2 or len(nll) != shape.pp or sum(nll) != a.num_layers or min(nll) < 1:
            out.append(f"num_layer_list {nll} does not split {a.num_layers} layers over PP {shape.pp}")
    elif a.num_layers % shape.pp:
        out.append(f"PP {shape.pp} does not divide the {a.num_layers} layers")
    if not out:
        per_step = shape.micro_batch_size * shape.dp
        if shape.micro_batch_size < 1 or shape.global_batch_size % per_step:
            out.append(f"global batch {shape.global_batch_size} is not divisible by MBS x DP = {per_step}")
        elif shape.grad_accum is not None and shape.grad_accum * per_step != shape.global_batch_size:
            out.append(f"MBS x GA x DP != global batch {shape.global_batch_size}")
    return out


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
