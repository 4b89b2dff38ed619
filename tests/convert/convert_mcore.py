"""megatron-core GPTModel (local layer spec) for a LlamaArch, and a CPU forward. Test-only helper."""

from __future__ import annotations

import torch

from navila_tune.arch import LlamaArch


def build_gpt_model(arch: LlamaArch, padded_vocab: int):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    config = TransformerConfig(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads, num_query_groups=arch.num_query_groups,
        kv_channels=arch.kv_channels, normalization="RMSNorm", layernorm_epsilon=arch.norm_epsilon,
        gated_linear_unit=True, activation_func=torch.nn.functional.silu, add_bias_linear=False,
        add_qkv_bias=False, hidden_dropout=0.0, attention_dropout=0.0, use_cpu_initialization=True,
        params_dtype=torch.float32, bias_activation_fusion=False, bias_dropout_fusion=False,
        masked_softmax_fusion=False, persist_layer_norm=False, apply_rope_fusion=False,
        gradient_accumulation_fusion=False)
    model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
                     vocab_size=padded_vocab, max_sequence_length=arch.max_position_embeddings,
                     position_embedding_type="rope", rotary_base=int(arch.rope_theta),
                     share_embeddings_and_output_weights=False)
    return model.eval()


def forward(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits [batch, seq, vocab rows of this TP rank]; causal mask given explicitly (True = masked)."""
    seq = ids.shape[1]
    position_ids = torch.arange(seq).unsqueeze(0).expand_as(ids)
    mask = torch.triu(torch.ones(1, 1, seq, seq, dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        return model(ids, position_ids, attention_mask=mask)
