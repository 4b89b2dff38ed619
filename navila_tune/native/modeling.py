"""HF ``LlamaForCausalLM`` at Megatron's padded vocab, LoRA on MindSpeed's linear layers, masked loss."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from navila_tune.arch import LlamaArch
from navila_tune.native.batching import IGNORE_INDEX

# MindSpeed-LLM ``--lora-target-modules`` name -> the HF Llama modules holding the same weights.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "linear_qkv": ("q_proj", "k_proj", "v_proj"),
    "linear_proj": ("o_proj",),
    "linear_fc1": ("gate_proj", "up_proj"),
    "linear_fc2": ("down_proj",),
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


class ArchitectureError(ValueError):
    """A checkpoint's architecture is not the expected one."""


def check_arch(found: LlamaArch, expected: LlamaArch | None, where: str) -> None:
    if expected is None:
        return
    diffs = expected.mismatches(found)
    if diffs:
        listed = ", ".join(f"{name}: checkpoint {b!r}, expected {a!r}" for name, a, b in diffs)
        raise ArchitectureError(
            f"checkpoint {where!r} does not have the configured architecture ({listed}). Fix: point the "
            f"load directory at a checkpoint converted from this model, or re-run the convert stage.")


def hf_lora_targets(targets: Iterable[str]) -> list[str]:
    out: list[str] = []
    for t in targets:
        if t not in LORA_TARGETS:
            raise ValueError(f"lora_targets contains {t!r}; MindSpeed-LLM knows {sorted(LORA_TARGETS)}")
        out += LORA_TARGETS[t]
    if not out:
        raise ValueError("lora_targets is empty; give at least one of " + ", ".join(LORA_TARGETS))
    return out


def build_model(arch: LlamaArch, padded_vocab_size: int, state: dict[str, torch.Tensor] | None = None,
                dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """``LlamaForCausalLM`` with ``padded_vocab_size`` embedding rows (as Megatron holds them)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_utils import no_init_weights

    config = LlamaConfig(**arch.hf_config("float32", vocab_size=padded_vocab_size, use_cache=False,
                                          attention_dropout=0.0))
    config._attn_implementation = attn_implementation
    if state is None:
        model = LlamaForCausalLM(config)
    else:
        with no_init_weights():
            model = LlamaForCausalLM(config)
        load_hf_state(model, state)
    return model.to(dtype)


def load_hf_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict load that names missing, unexpected and wrongly shaped tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if model.config.tie_word_embeddings and "lm_head.weight" in missing:
        missing.remove("lm_head.weight")
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in sorted(set(state) & set(own)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise ArchitectureError(
            "checkpoint tensors do not fit the model built from its architecture: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}, shape mismatches {shapes[:8]}. Fix: re-convert the "
            "checkpoint with the converter of this version.")
    with torch.no_grad():
        for name, tensor in own.items():
            if name in state:
                tensor.copy_(state[name])


def apply_lora(model, r: int, alpha: int, targets: Iterable[str]):
    """Wrap ``model`` in a peft LoRA model; only the adapters stay trainable."""
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ValueError(f"lora_r={r} must be >= 1")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                        target_modules=hf_lora_targets(targets))
    return get_peft_model(model, config)


def is_peft(model) -> bool:
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def merged_state_dict(model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """HF-named weights with every LoRA adapter folded in: ``W + (alpha / r) * B @ A``.

    The model is left untouched (nothing is merged in place), so training can continue.
    """
    if not is_peft(model):
        state = {k: v.detach() for k, v in model.state_dict().items()}
    else:
        from peft.tuners.lora import LoraLayer

        base = model.get_base_model()
        state = {}
        for name, tensor in base.state_dict().items():
            if ".lora_" in name:
                continue
            state[name.replace(".base_layer.", ".")] = tensor.detach()
        with torch.no_grad():
            for name, module in base.named_modules():
                if isinstance(module, LoraLayer):
                    weight = module.base_layer.weight
                    delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                    state[name + ".weight"] = (weight.float() + delta.float()).to(weight.dtype)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    if model_config(model).tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def model_config(model):
    return model.get_base_model().config if is_peft(model) else model.config


def masked_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over labels != -100 (logits[:, :-1] vs labels[:, 1:]), and the count."""
    # Shift the labels, not the logits: logits[:, :-1] would copy the whole [B, L, V] tensor.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    count = int((targets != IGNORE_INDEX).sum())
    flat = logits.reshape(-1, logits.shape[-1])
    loss = F.cross_entropy(flat.float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, count
