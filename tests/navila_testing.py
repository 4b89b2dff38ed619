"""Helpers shared by the test modules (tests/ is on sys.path via pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# Cluster paths used by tests that render 8B commands (nothing there needs to exist).
PINNED_PATHS = [
    "paths.models=/models",
    "paths.data=/datasets",
    "paths.mindspeed_home=/opt/MindSpeed-LLM",
    "paths.work_dir=/work",
]

# config.json of Meta-Llama-3-8B-Instruct (the values the model group must agree with).
LLAMA3_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128009,
}


def compose(*overrides: str):
    from navila_tune.config import compose as _compose

    return _compose([*PINNED_PATHS, *overrides])


def experiments() -> list[str]:
    return sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                  for p in (CONF / "experiment").rglob("*.yaml"))


def standin_calls(home: Path) -> list[dict]:
    """What the stand-in MindSpeed-LLM scripts were given, in call order."""
    import json

    return [json.loads(line) for line in (home / "calls.jsonl").read_text().splitlines()]
