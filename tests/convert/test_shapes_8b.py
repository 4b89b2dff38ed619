"""(c) Llama-3-8B per-rank shapes (weight table, and a conversion on the meta device) equal MindSpeed-LLM's (3a)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from navila_tune.arch import LlamaArch  # noqa: E402
from navila_tune.convert import megatron_shard_shapes  # noqa: E402
from navila_tune.convert import weights  # noqa: E402

LLAMA3_8B = LlamaArch(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32,
                      num_query_groups=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                      norm_epsilon=1e-5)

# reference 3a: (TP, tensor) -> per-rank shape
EXPECTED = {
    1: {"embedding.word_embeddings.weight": (128256, 4096), "output_layer.weight": (128256, 4096),
        "self_attention.linear_qkv.weight": (6144, 4096), "self_attention.linear_proj.weight": (4096, 4096),
        "mlp.linear_fc1.weight": (28672, 4096), "mlp.linear_fc2.weight": (4096, 14336)},
    8: {"embedding.word_embeddings.weight": (16032, 4096), "output_layer.weight": (16032, 4096),
        "self_attention.linear_qkv.weight": (768, 4096), "self_attention.linear_proj.weight": (4096, 512),
        "mlp.linear_fc1.weight": (3584, 4096), "mlp.linear_fc2.weight": (4096, 1792)},
}


@pytest.mark.parametrize("tp", [1, 8])
def test_8b_rank_shapes_match_reference(tp):
    shapes = megatron_shard_shapes(LLAMA3_8B, tp=tp, pp=1)
    assert sorted(shapes) == [f"mp_rank_{t:02d}" for t in range(tp)]
    for rank in shapes.values():
        assert len(rank) == 1 + 32 * 6 + 2
        for i in range(32):
            for key, shape in EXPECTED[tp].items():
                if key.startswith(("self_attention", "mlp")):
                    assert rank[f"decoder.layers.{i}.{key}"] == shape, (tp, i, key)
            assert rank[f"decoder.layers.{i}.input_layernorm.weight"] == (4096,)
            assert rank[f"decoder.layers.{i}.pre_mlp_layernorm.weight"] == (4096,)
        assert rank["embedding.word_embeddings.weight"] == EXPECTED[tp]["embedding.word_embeddings.weight"]
        assert rank["output_layer.weight"] == EXPECTED[tp]["output_layer.weight"]
        assert rank["decoder.final_layernorm.weight"] == (4096,)


def test_8b_pp8_stage_contents():
    """TP1/PP8: stage 0 has the embedding + layers 0-3 (local 0-3); stage 7 the final norm and output layer."""
    shapes = megatron_shard_shapes(LLAMA3_8B, tp=1, pp=8)
    assert sorted(shapes) == [f"mp_rank_00_{p:03d}" for p in range(8)]
    first, last = shapes["mp_rank_00_000"], shapes["mp_rank_00_007"]
    assert "embedding.word_embeddings.weight" in first and "output_layer.weight" not in first
    assert "output_layer.weight" in last and "decoder.final_layernorm.weight" in last
    assert "embedding.word_embeddings.weight" not in last
    for rank in shapes.values():
        assert {k.split(".")[2] for k in rank if k.startswith("decoder.layers.")} == {"0", "1", "2", "3"}


def test_8b_uneven_pipeline_and_padding():
    shapes = megatron_shard_shapes(LLAMA3_8B, tp=2, pp=4, num_layer_list=[7, 9, 8, 8], make_vocab_size_divisible_by=128)
    layer_counts = [len({k.split(".")[2] for k in shapes[f"mp_rank_00_{p:03d}"] if k.startswith("decoder.layers.")})
                    for p in range(4)]
    assert layer_counts == [7, 9, 8, 8]
    assert shapes["mp_rank_01_000"]["embedding.word_embeddings.weight"] == (64128, 4096)  # 128256 -> mult of 256


def test_8b_has_291_hf_tensors():
    assert len(weights.expected_hf_names(32)) == 291


def meta_conversion(arch: LlamaArch, tp: int, pp: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """Run the converter's split of every tensor of an 8B model on meta tensors (no data)."""
    import torch

    from navila_tune.convert.parallel import ParallelLayout, rank_dir_name
    from navila_tune.convert.weights import ShardContext

    layout = ParallelLayout(arch, tp, pp)
    ctx = ShardContext(arch, tp, arch.vocab_size, arch.vocab_size)  # divisor 1: 128256 divides by 1 and 8
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for p in range(pp):
        for entry, _, local in layout.stage_plan(p):
            metas = [torch.empty(s, dtype=torch.bfloat16, device="meta") for s in entry.hf_shapes(ctx)]
            shards = entry.split(metas, ctx)
            assert all(s.device.type == "meta" for s in shards)
            for t, shard in enumerate(shards):
                out.setdefault(rank_dir_name(t, p, pp), {})[entry.mg_name(local)] = tuple(shard.shape)
            back = entry.merge(shards, ctx)
            assert [tuple(b.shape) for b in back] == [tuple(m.shape) for m in metas]
    return out


@pytest.mark.parametrize("tp", [1, 8])
def test_8b_conversion_on_the_meta_device(tp):
    shapes = meta_conversion(LLAMA3_8B, tp, 1)
    assert shapes == megatron_shard_shapes(LLAMA3_8B, tp=tp, pp=1)
    for rank in shapes.values():
        for key, shape in EXPECTED[tp].items():
            full = key if not key.startswith(("self_attention", "mlp")) else f"decoder.layers.31.{key}"
            assert rank[full] == shape, (tp, key)
