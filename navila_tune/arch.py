"""Llama architecture facts, mapped once between the model group, HF config.json and Megatron.

One table (``FIELDS``) names every architecture value in its three spellings: the key in the model
group's ``arch`` section, the HF ``config.json`` key, and the Megatron argument (the ``args`` attribute
stored in checkpoints and the MindSpeed-LLM command-line flag). Every consumer reads the table: the
MindSpeed renderer for flags, the converter for checkpoint ``args`` and config.json, and validation for
comparing a model directory with the configured architecture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class ArchField:
    """One architecture value and its names on each side."""

    name: str  # model group ``arch.<name>`` and attribute of ``LlamaArch``
    hf_key: str  # HF config.json key
    megatron: str  # Megatron args attribute (``dest``)
    flag: str | None  # MindSpeed-LLM flag; None when the value is rendered another way
    inverse_bool_flag: bool = False  # flag is given when the value is False (e.g. untie)


FIELDS: tuple[ArchField, ...] = (
    ArchField("num_layers", "num_hidden_layers", "num_layers", "--num-layers"),
    ArchField("hidden_size", "hidden_size", "hidden_size", "--hidden-size"),
    ArchField("ffn_hidden_size", "intermediate_size", "ffn_hidden_size", "--ffn-hidden-size"),
    ArchField("num_attention_heads", "num_attention_heads", "num_attention_heads", "--num-attention-heads"),
    ArchField("num_query_groups", "num_key_value_heads", "num_query_groups", "--num-query-groups"),
    ArchField("vocab_size", "vocab_size", "vocab_size", None),
    ArchField("max_position_embeddings", "max_position_embeddings", "max_position_embeddings",
              "--max-position-embeddings"),
    ArchField("rope_theta", "rope_theta", "rotary_base", "--rotary-base"),
    ArchField("norm_epsilon", "rms_norm_eps", "norm_epsilon", "--norm-epsilon"),
    ArchField("tie_word_embeddings", "tie_word_embeddings", "untie_embeddings_and_output_weights",
              "--untie-embeddings-and-output-weights", inverse_bool_flag=True),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}

# Values every Llama-3 model has; checked in config.json and written into checkpoints, never configured.
HF_CONSTANTS: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "rope_scaling": None,
    "pretraining_tp": 1,
}
MEGATRON_CONSTANTS: dict[str, Any] = {
    "position_embedding_type": "rope",
    "normalization": "RMSNorm",
    "swiglu": True,
    "add_bias_linear": False,
    "add_qkv_bias": False,
    "rotary_percent": 1.0,
    "rotary_interleaved": False,
}
# MindSpeed-LLM flags implied by the Llama family (rendered after the table's flags).
MINDSPEED_FAMILY_FLAGS: tuple[str, ...] = (
    "--position-embedding-type", "rope",
    "--normalization", "RMSNorm",
    "--swiglu",
    "--disable-bias-linear",
)


@dataclass(frozen=True)
class LlamaArch:
    """The architecture of a Llama-3-family decoder."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    norm_epsilon: float
    tie_word_embeddings: bool = False

    @property
    def kv_channels(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def group_query_attention(self) -> bool:
        return self.num_query_groups != self.num_attention_heads

    @property
    def qkv_rows(self) -> int:
        """Rows of the fused Megatron ``linear_qkv`` weight at TP1."""
        return (self.num_attention_heads + 2 * self.num_query_groups) * self.kv_channels

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "LlamaArch":
        """Build from a model group's ``arch`` section (extra keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise KeyError(f"unknown architecture keys {unknown}; known: {sorted(known)}")
        return cls(**{k: values[k] for k in values})

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "LlamaArch":
        """Read the architecture from an HF config.json dict."""
        missing = [f.hf_key for f in FIELDS if f.hf_key not in config and f.name != "tie_word_embeddings"]
        if missing:
            raise KeyError(f"config.json lacks {missing}")
        values = {f.name: config.get(f.hf_key, False) for f in FIELDS}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hf_config(self, torch_dtype: str, **extra: Any) -> dict[str, Any]:
        """An HF config.json dict for this architecture."""
        config = dict(HF_CONSTANTS)
        config.update({f.hf_key: getattr(self, f.name) for f in FIELDS})
        config["head_dim"] = self.kv_channels
        config["torch_dtype"] = torch_dtype
        config.update(extra)
        return config

    def megatron_args(self, padded_vocab_size: int) -> dict[str, Any]:
        """Megatron ``args`` attributes describing this architecture."""
        values: dict[str, Any] = dict(MEGATRON_CONSTANTS)
        for f in FIELDS:
            value = getattr(self, f.name)
            values[f.megatron] = (not value) if f.inverse_bool_flag else value
        values.update(
            kv_channels=self.kv_channels,
            group_query_attention=self.group_query_attention,
            padded_vocab_size=padded_vocab_size,
        )
        return values

    def mindspeed_flags(self) -> list[str]:
        """Architecture flags for MindSpeed-LLM's training, inference and conversion parsers."""
        argv: list[str] = []
        for f in FIELDS:
            if f.flag is None:
                continue
            value = getattr(self, f.name)
            if f.inverse_bool_flag:
                if not value:
                    argv.append(f.flag)
            elif f.name == "num_query_groups":
                if self.group_query_attention:
                    argv += ["--group-query-attention", f.flag, str(value)]
            else:
                argv += [f.flag, format_number(value)]
        argv += MINDSPEED_FAMILY_FLAGS
        return argv

    def mismatches(self, other: "LlamaArch") -> list[tuple[str, Any, Any]]:
        """(field, self value, other value) for every field that differs."""
        out = []
        for f in FIELDS:
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, float) or isinstance(b, float):
                if not math.isclose(float(a), float(b), rel_tol=1e-9):
                    out.append((f.name, a, b))
            elif a != b:
                out.append((f.name, a, b))
        return out


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """MindSpeed/Megatron rule: round up to a multiple of ``divisible_by * tp``."""
    multiple = divisible_by * tp
    return int(math.ceil(vocab_size / multiple) * multiple)


def format_number(value: Any) -> str:
    """Render a number for a command line: integral floats without a trailing ``.0``."""
    if isinstance(value, bool):
        raise TypeError("booleans are flags, not values")
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 1:
            return str(int(value))
        return repr(value)
    return str(value)


def layer_counts(num_layers: int, pp: int, num_layer_list: list[int] | None) -> list[int]:
    """Layers held by each pipeline stage."""
    if num_layer_list:
        return list(num_layer_list)
    return [num_layers // pp] * pp


def layer_offsets(counts: list[int]) -> list[int]:
    """Global index of each stage's first layer."""
    offsets, total = [], 0
    for c in counts:
        offsets.append(total)
        total += c
    return offsets
