"""Random initial weights for a model directory that ships only config and tokenizer (the tiny model)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def has_weights(hf_dir: Path) -> bool:
    return any(Path(hf_dir).glob("*.safetensors"))


def init_random_weights(source: Path, out: Path, *, seed: int, dtype: str) -> Path:
    """Write ``config.json`` + safetensors of a LlamaForCausalLM initialised from ``seed`` into ``out``.

    Deterministic: the same config and seed give byte-identical weights.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_json_file(str(Path(source) / "config.json"))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, DTYPES[dtype]))
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    cfg_file = tmp / "config.json"
    import json

    cfg = json.loads(cfg_file.read_text())
    cfg["torch_dtype"] = DTYPES[dtype]
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
