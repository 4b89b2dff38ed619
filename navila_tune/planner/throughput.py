"""A relative throughput estimate for ranking layouts (not a performance prediction).

Step time = pipeline schedule x slowest stage's time per micro batch + data-parallel gradient sync.
  - compute: 6 x params FLOPs per token for full training (4 x for LoRA: frozen weights get no weight
    gradient) plus causal attention, at an assumed fraction of the chip's peak;
  - recompute overhead: full recompute repeats the forward of the recomputed layers (selective: of the
    attention core);
  - pipeline bubble: 1F1B runs m + p - 1 slots for m micro batches, bubble fraction (p-1)/(m+p-1);
    the last stage also carries the output layer, so uneven stages show up as a slower slot;
  - TP communication: per layer and micro batch, 4 all-gather/reduce-scatter (or 2 all-reduce) in
    forward and 4 in backward, each moving (t-1)/t of the micro batch's hidden states, not overlapped;
  - DP: one reduce-scatter/all-reduce of the trainable gradients per step.
The chip numbers below are planning assumptions; only their ratio (compute vs link speed) changes the
ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

from navila_tune.planner.activations import tokens_per_microbatch
from navila_tune.planner.params import linear_shapes, lora_layer_params, stage_params
from navila_tune.planner.shape import RunShape


@dataclass(frozen=True)
class ChipPerf:
    tflops: float  # dense bf16 peak per device
    mfu: float  # fraction of peak assumed for planning
    intra_node_gbps: float  # per device, GB/s one way: per peer link for a mesh, else through the switch
    inter_node_gbps: float  # per device across nodes, GB/s
    mesh: bool = False  # devices of a node are linked pairwise (a group of t uses t-1 links)

    def group_gbps(self, size: int, inside_node: bool) -> float:
        """Collective bandwidth of a group of ``size`` devices."""
        if not inside_node:
            return self.inter_node_gbps
        return self.intra_node_gbps * (size - 1) if self.mesh else self.intra_node_gbps


CHIPS = {
    # Ascend 910B (Atlas 800T A2): ~313 bf16 TFLOPS; the 8 NPUs of a node form an HCCS full mesh
    # (7 links of 56 GB/s both ways, 28 GB/s each way); 200 Gb/s RoCE per NPU between nodes.
    "910b": ChipPerf(tflops=313.0, mfu=0.45, intra_node_gbps=28.0, inter_node_gbps=25.0, mesh=True),
    "a100": ChipPerf(tflops=312.0, mfu=0.45, intra_node_gbps=200.0, inter_node_gbps=25.0),
    "h100": ChipPerf(tflops=989.0, mfu=0.40, intra_node_gbps=350.0, inter_node_gbps=50.0),
    "cpu": ChipPerf(tflops=1.0, mfu=0.5, intra_node_gbps=10.0, inter_node_gbps=1.0),
}
DEFAULT_CHIP = ChipPerf(tflops=100.0, mfu=0.4, intra_node_gbps=50.0, inter_node_gbps=12.5)
COLLECTIVES_PER_LAYER = 8  # 4 forward + 4 backward TP collectives (sequence parallel or not)


@dataclass(frozen=True)
class Throughput:
    step_seconds: float
    tokens_per_second: float
    bubble: float  # (p-1)/(m+p-1)
    tp_comm: float  # TP communication time / compute time
    recompute: float  # recompute time / compute time without it


def throughput(shape: RunShape) -> Throughput:
    a = shape.arch
    chip = CHIPS.get(shape.chip.lower(), DEFAULT_CHIP)
    flops_per_s = chip.tflops * 1e12 * chip.mfu
    t, p, m = shape.tp, shape.pp, shape.ga
    tokens = tokens_per_microbatch(shape)
    lora = shape.finetune == "lora"
    train_factor = 2.0 if lora else 3.0  # forward + backward (without weight grads for frozen weights)
    h, s = a.hidden_size, shape.seq_length
    layer_linear = _layer_linear_params(shape)
    fwd_linear = 2.0 * layer_linear  # per token, per layer, TP1
    fwd_attn = 2.0 * s * h / shape.cp  # QK^T and AV, causal half, per token per layer
    fwd_output = 2.0 * shape.padded_vocab * h
    comm_bw = chip.group_gbps(t, t <= shape.devices_per_node) * 1e9
    hidden_bytes = tokens * shape.act_bytes * h

    stage_times, comm_total, compute_total, recompute_total = [], 0.0, 0.0, 0.0
    for sp in stage_params(shape):
        layers = sp.layers
        recomputed = _recomputed_layers(shape, layers)
        compute = layers * (fwd_linear * train_factor + fwd_attn * 3.0)
        extra = recomputed * (fwd_linear + fwd_attn)
        if shape.recompute_granularity == "selective":
            extra = layers * fwd_attn
        if sp.stage == p - 1:
            compute += fwd_output * (2.0 if lora else 3.0)
        compute_s = tokens * compute / t / flops_per_s
        extra_s = tokens * extra / t / flops_per_s
        collectives = layers * COLLECTIVES_PER_LAYER + recomputed * (COLLECTIVES_PER_LAYER // 2)
        comm_s = collectives * hidden_bytes * (t - 1) / t / comm_bw if t > 1 else 0.0
        stage_times.append(compute_s + extra_s + comm_s)
        compute_total += compute_s
        recompute_total += extra_s
        comm_total += comm_s
    slots = m + p - 1 if p > 1 else m
    step = slots * max(stage_times)
    dp_ranks = shape.dp * shape.cp
    if dp_ranks > 1:
        trainable = max(sp.lora if lora else sp.total for sp in stage_params(shape))
        dp_bw = chip.group_gbps(min(dp_ranks, shape.devices_per_node),
                                shape.world_size <= shape.devices_per_node) * 1e9
        step += trainable * shape.grad_bytes * 2.0 * (dp_ranks - 1) / dp_ranks / dp_bw
    tokens_step = shape.global_batch_size * shape.seq_length
    return Throughput(
        step_seconds=step,
        tokens_per_second=tokens_step / step,
        bubble=(p - 1) / (m + p - 1),
        tp_comm=comm_total / compute_total if compute_total else 0.0,
        recompute=recompute_total / compute_total if compute_total else 0.0,
    )


def _layer_linear_params(shape: RunShape) -> float:
    base = sum(i * o for i, o in linear_shapes(shape.arch).values())
    if shape.finetune == "lora":
        base += lora_layer_params(shape.arch, shape.lora_r, shape.lora_targets)
    return float(base)


def _recomputed_layers(shape: RunShape, layers: int) -> int:
    if shape.recompute_granularity != "full":
        return 0
    if shape.recompute_method == "block":
        return min(layers, max(1, shape.recompute_num_layers))
    return layers
