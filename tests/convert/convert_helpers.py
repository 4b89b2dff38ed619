"""Tiny random Llama models written as HF directories (shared by the conversion tests)."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from navila_tune.arch import LlamaArch


@dataclass(frozen=True)
class Tiny:
    """A head layout small enough to convert in milliseconds."""

    name: str
    heads: int
    groups: int
    hidden: int
    ffn: int
    layers: int = 4
    vocab: int = 101  # prime: every TP > 1 (and any divisor > 1) needs padding rows

    def config(self) -> "transformers.LlamaConfig":
        return transformers.LlamaConfig(
            vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.ffn,
            num_hidden_layers=self.layers, num_attention_heads=self.heads, num_key_value_heads=self.groups,
            max_position_embeddings=64, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, attn_implementation="eager")

    def arch(self) -> LlamaArch:
        return LlamaArch.from_hf_config(self.config().to_dict())


GQA = Tiny("gqa", heads=8, groups=4, hidden=64, ffn=48)
MHA = Tiny("mha", heads=4, groups=4, hidden=32, ffn=32)
MQA = Tiny("mqa", heads=4, groups=1, hidden=32, ffn=32)
LAYOUTS = {t.name: t for t in (GQA, MHA, MQA)}

# Files copied byte for byte into exported HF dirs (odd bytes on purpose: never re-serialised).
TOKENIZER_FILES = {
    "tokenizer.json": '{"version": "1.0",  "model": {"type": "BPE"}, "note": "caf\u00e9"}\n',
    "tokenizer_config.json": '{"tokenizer_class": "PreTrainedTokenizerFast",\n "model_max_length": 64}',
    "special_tokens_map.json": '{"bos_token": "<|begin_of_text|>"}',
}


def write_hf_model(out: Path, tiny: Tiny, *, dtype: "torch.dtype" = None, seed: int = 0,
                   max_shard_size: str | None = "20KB") -> Path:
    """A random LlamaForCausalLM saved by transformers (sharded + index unless max_shard_size is None)."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(tiny.config())
    with torch.no_grad():  # norms away from 1 so a swapped/replicated norm is visible
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    if dtype is not None:
        model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {"max_shard_size": "10GB"}
    model.save_pretrained(out, **kwargs)
    for name, text in TOKENIZER_FILES.items():
        (out / name).write_bytes(text.encode())
    return out


def read_hf_tensors(hf_dir: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
