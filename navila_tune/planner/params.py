"""Parameter counts of a Llama decoder, whole and per rank under TP/PP (Megatron's sharding rules).

Per layer: fused QKV ``h x (heads + 2 groups) x head_dim``, output projection ``h x h``, SwiGLU fc1
``h x 2 ffn``, fc2 ``ffn x h`` (all split by TP), and two RMSNorm weights ``h`` (replicated on every TP
rank). The word embedding sits on the first pipeline stage, the output layer and the final norm on the
last; both are split over the padded vocabulary by TP. With tied embeddings and PP > 1 the last stage
keeps its own copy of the embedding for the output layer, as Megatron does.
"""

from __future__ import annotations

from dataclasses import dataclass

from navila_tune.arch import LlamaArch
from navila_tune.planner.shape import RunShape


@dataclass(frozen=True)
class StageParams:
    """Parameters held by one rank of a pipeline stage."""

    stage: int
    layers: int
    layer_params: int  # all transformer layers of the stage, this rank's TP shard
    embedding: int  # word embedding shard (first stage)
    output: int  # output layer shard + final norm (last stage)
    lora: int  # trainable LoRA parameters of this rank (0 for full fine-tuning)
    largest_linear: int  # this rank's biggest weight matrix (for the bf16 weight-gradient temp)

    @property
    def total(self) -> int:
        """Model parameters of this rank (base model; LoRA adapters are counted in ``lora``)."""
        return self.layer_params + self.embedding + self.output


def linear_shapes(arch: LlamaArch) -> dict[str, tuple[int, int]]:
    """(in, out) of each Megatron linear layer of one transformer layer, at TP1."""
    h, f = arch.hidden_size, arch.ffn_hidden_size
    return {
        "linear_qkv": (h, arch.qkv_rows),
        "linear_proj": (arch.num_attention_heads * arch.kv_channels, h),
        "linear_fc1": (h, 2 * f),
        "linear_fc2": (f, h),
    }


def hf_linear_shapes(arch: LlamaArch) -> dict[str, tuple[int, int]]:
    """(in, out) of the HF/torchtune projections, for LoRA targets named that way (comparisons)."""
    h, f, kv = arch.hidden_size, arch.ffn_hidden_size, arch.num_query_groups * arch.kv_channels
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, f), "up_proj": (h, f), "down_proj": (f, h)}


# Output split by TP; the others split their input.
COLUMN_PARALLEL = ("linear_qkv", "linear_fc1", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


def layer_params(arch: LlamaArch, tp: int = 1) -> int:
    """Parameters of one transformer layer on one TP rank (norm weights are replicated)."""
    linear = sum(i * o for i, o in linear_shapes(arch).values())
    return linear // tp + 2 * arch.hidden_size


def lora_layer_params(arch: LlamaArch, r: int, targets: tuple[str, ...], tp: int = 1) -> int:
    """Trainable LoRA parameters of one layer on one TP rank.

    peft's LoraParallelLinear: on a column-parallel base, lora_A (in x r) is whole and lora_B (r x out)
    is split; on a row-parallel base, lora_A (in x r) is split and lora_B (r x out) is whole.
    """
    total = 0
    shapes = {**linear_shapes(arch), **hf_linear_shapes(arch)}
    for name in targets:
        i, o = shapes[name]
        total += (r * i + r * o // tp) if name in COLUMN_PARALLEL else (r * i // tp + r * o)
    return total


def total_params(arch: LlamaArch, padded_vocab: int | None = None) -> int:
    """All parameters of the model (vocab unpadded unless given)."""
    v = padded_vocab or arch.vocab_size
    embeddings = v * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
    return arch.num_layers * layer_params(arch) + embeddings + arch.hidden_size


def stage_params(shape: RunShape) -> list[StageParams]:
    """Parameters per rank for every pipeline stage of the run."""
    arch, tp, pp = shape.arch, shape.tp, shape.pp
    vocab_shard = shape.padded_vocab * arch.hidden_size // tp
    per_layer = layer_params(arch, tp)
    lora_per_layer = lora_layer_params(arch, shape.lora_r, shape.lora_targets, tp) if shape.finetune == "lora" else 0
    largest = max(i * o for i, o in linear_shapes(arch).values()) // tp
    out = []
    for stage, layers in enumerate(shape.stage_layers):
        first, last = stage == 0, stage == pp - 1
        output = 0
        if last:
            output = arch.hidden_size  # final norm
            if not arch.tie_word_embeddings or pp > 1:
                output += vocab_shard
        out.append(StageParams(
            stage=stage,
            layers=layers,
            layer_params=layers * per_layer,
            embedding=vocab_shard if first else 0,
            output=output,
            lora=layers * lora_per_layer,
            largest_linear=max(largest, vocab_shard if (first or last) else 0),
        ))
    return out
