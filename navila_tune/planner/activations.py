"""Activation memory: what one transformer layer keeps for backward, and what a pipeline stage holds.

The per-layer count follows Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (section 4): every tensor a layer saves for backward, in bytes per token of a
micro-batch. For their GPT layer (LayerNorm, MHA, 4h GeLU MLP, dropout, no flash attention) the terms
add up to their ``sbh (34 + 5as/h)``; split by tensor parallelism it is ``sbh (10 + 24/t + 5as/(ht))``,
with sequence parallelism ``sbh/t (34 + 5as/h)``, with selective recompute the ``5as/h`` term goes.

Adapted to Llama-3 as Megatron-core/MindSpeed run it (``--use-flash-attn``, dropout 0, fused SwiGLU):
  norms        2 x 2h         RMSNorm inputs (attention and MLP)
  qkv input    2h             input of linear_qkv (the norm output)
  q, k, v      2h + 2 x 2gd   flash attention inputs; GQA makes k and v g x d wide, not h
  attention    2h             flash attention output = linear_proj input (one tensor)
  flash stats  64a            npu_fusion_attention softmax max/sum, fp32 [b, a, s, 8] (4a on CUDA)
  mlp input    2h             input of linear_fc1
  swiglu       2 x 2f + 2f    fc1 output (gate and up, the fused SwiGLU's input) and its output
For Llama-3-8B (h 4096, g x d 1024, f 14336, a 32) that is 34.5 h bytes per token: close to GPT's 34,
because GQA's smaller k/v offset the wider SwiGLU. Without sequence parallelism the norm, qkv-input
and mlp-input terms (8h) are replicated on every TP rank; with it, everything is split by t.
"""

from __future__ import annotations

from dataclasses import dataclass

from navila_tune.planner.params import StageParams
from navila_tune.planner.shape import RunShape, ceil_div


@dataclass(frozen=True)
class LayerTerms:
    """Bytes per token (whole micro-batch sequence, before TP) one layer keeps for backward."""

    replicated: float  # norm / linear inputs and dropout masks: split by TP only with sequence parallel
    split: float  # q, k, v, attention output, MLP intermediates: always split by TP
    attention_core: float  # softmax (and dropout) of non-flash attention, or flash statistics

    def per_token(self, shape: RunShape, *, selective: bool = False) -> float:
        """Bytes per token on one TP rank."""
        t = shape.tp
        core = 0.0 if selective else self.attention_core
        return self.replicated / (t if shape.sp else 1) + (self.split + core) / t


def layer_terms(shape: RunShape) -> LayerTerms:
    """Korthikanti's per-layer accounting, term by term, for the run's implementation."""
    a = shape.arch
    e = shape.act_bytes
    h, f, heads = a.hidden_size, a.ffn_hidden_size, a.num_attention_heads
    kv = a.num_query_groups * a.kv_channels
    s = shape.seq_length
    norms = 2 * e * h
    linear_inputs = e * h + e * h  # linear_qkv input, linear_fc1 input
    masks = (2 * h if shape.hidden_dropout > 0 else 0)  # 1-byte masks after attention and MLP
    q_k_v = e * h + 2 * e * kv
    attention_out = e * h
    if shape.mlp_activation == "gelu":
        mlp = e * f + e * f  # GeLU input (fc1 output), fc2 input
    elif shape.fused_swiglu:
        mlp = e * 2 * f + e * f  # fused SwiGLU keeps its input (gate, up) and fc2 keeps the output
    else:
        mlp = 4 * e * f  # unfused: gate, silu(gate), up, product each kept once
    lora = 0.0
    if shape.finetune == "lora":
        lora = e * shape.lora_r * len(shape.lora_targets)  # lora_A outputs (rank-r, replicated)
    if shape.flash_attention:
        core = shape.flash_stats_bytes_per_head * heads
    else:
        core = e * heads * s  # softmax output
        if shape.attention_dropout > 0:
            core += heads * s + e * heads * s  # dropout mask and dropout output
    return LayerTerms(replicated=norms + linear_inputs + masks + lora,
                      split=q_k_v + attention_out + mlp,
                      attention_core=core)


@dataclass(frozen=True)
class StageActivations:
    """Activation memory of one pipeline-stage rank at its peak."""

    stage: int
    in_flight: int  # micro batches whose activations are alive at once (1F1B)
    stored_per_microbatch: int  # bytes kept per micro batch until its backward
    recompute_transient: int  # bytes of one recomputed chunk, materialised in backward
    workspace: int  # backward temporaries of one layer (activation and weight gradients)
    loss_peak: int  # logits and loss buffers (last stage only)

    @property
    def stored(self) -> int:
        return self.in_flight * self.stored_per_microbatch

    @property
    def transient(self) -> int:
        return max(self.recompute_transient + self.workspace, self.loss_peak)

    @property
    def total(self) -> int:
        return self.stored + self.transient


def tokens_per_microbatch(shape: RunShape) -> int:
    """Tokens one rank processes per micro batch (context parallel splits the sequence)."""
    return shape.micro_batch_size * shape.seq_length // shape.cp


def layer_bytes(shape: RunShape, *, selective: bool = False) -> int:
    """One layer's saved activations for one micro batch on one rank."""
    return int(tokens_per_microbatch(shape) * layer_terms(shape).per_token(shape, selective=selective))


def layer_input_bytes(shape: RunShape) -> int:
    """A checkpointed chunk's input (hidden states; sequence-split with SP)."""
    a = shape.arch
    return int(tokens_per_microbatch(shape) * shape.act_bytes * a.hidden_size / (shape.tp if shape.sp else 1))


def in_flight(shape: RunShape, stage: int) -> int:
    """Micro batches stage ``stage`` holds under 1F1B: min(PP - stage, number of micro batches)."""
    if shape.pp == 1:
        return 1
    return max(1, min(shape.pp - stage, shape.ga))


def stage_activations(shape: RunShape, params: StageParams) -> StageActivations:
    a, t = shape.arch, shape.tp
    tokens = tokens_per_microbatch(shape)
    layers = params.layers
    full = layer_bytes(shape)
    kept = layer_bytes(shape, selective=shape.recompute_granularity == "selective")
    recompute_transient = 0
    if shape.recompute_granularity == "full":
        n = max(1, shape.recompute_num_layers)
        if shape.recompute_method == "block":
            k = min(n, layers)
            stored = k * layer_input_bytes(shape) + (layers - k) * full
            recompute_transient = full if k else 0
        else:  # uniform: chunks of n layers, each keeping only its input
            stored = ceil_div(layers, n) * layer_input_bytes(shape)
            recompute_transient = min(n, layers) * full
    else:
        stored = layers * kept
    last = params.stage == shape.pp - 1
    if last:  # final norm input and output-layer input
        stored += 2 * layer_input_bytes(shape)
    trains_base = shape.finetune == "full"
    wgrad = 2 * params.largest_linear if (trains_base and shape.wgrad_temp) else 0
    # The largest activation gradient of a layer: d(fc1 output), 2f wide (f for GeLU).
    fc1_width = a.ffn_hidden_size * (1 if shape.mlp_activation == "gelu" else 2)
    workspace = int(tokens * shape.act_bytes * fc1_width / t) + wgrad
    loss_peak = 0
    if last:
        loss_peak = int(tokens * shape.padded_vocab / t * shape.loss_bytes_per_logit) + wgrad
    return StageActivations(
        stage=params.stage,
        in_flight=in_flight(shape, params.stage),
        stored_per_microbatch=int(stored),
        recompute_transient=int(recompute_transient),
        workspace=workspace,
        loss_peak=loss_peak,
    )
