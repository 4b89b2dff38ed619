"""The MindSpeed-LLM 2.3.0 file layout, checked against a reference written here with explicit loops."""

from __future__ import annotations

import argparse

import pytest

torch = pytest.importorskip("torch")

from convert_helpers import LAYOUTS, read_hf_tensors  # noqa: E402

from navila_tune.convert import hf_to_megatron  # noqa: E402

TOP_LEVEL_KEYS = ["args", "checkpoint_version", "iteration", "model", "rerun_state_machine",
                  "num_floating_point_operations_so_far"]
# what consumers that load a checkpoint by args read (reference 3a), plus dtype and iteration
ARGS_READ = ("num_layers", "hidden_size", "ffn_hidden_size", "seq_length", "num_attention_heads",
             "num_query_groups", "group_query_attention", "kv_channels", "max_position_embeddings",
             "position_embedding_type", "rotary_base", "rotary_percent", "swiglu", "add_bias_linear",
             "untie_embeddings_and_output_weights", "normalization", "tokenizer_type", "padded_vocab_size",
             "tensor_model_parallel_size", "pipeline_model_parallel_size", "virtual_pipeline_model_parallel_size",
             "expert_model_parallel_size", "params_dtype", "iteration")
LINEARS = ("self_attention.linear_proj", "self_attention.linear_qkv", "mlp.linear_fc1", "mlp.linear_fc2")


def reference_rank(hf: dict, tiny, tp: int, t: int, global_layers: list[int], first: bool, last: bool,
                   padded: int) -> dict:
    """Rank (t, stage) tensors built head by head, independent of the converter's reshapes."""
    nh, ng, d = tiny.heads, tiny.groups, tiny.hidden // tiny.heads
    out = {}

    def rows(w, n, r):  # rank r's share of dim 0
        size = w.shape[0] // n
        return w[r * size:(r + 1) * size]

    def vocab(w):
        pad = torch.stack([w[-1]] * (padded - w.shape[0])) if padded > w.shape[0] else w[:0]
        return rows(torch.cat([w, pad]), tp, t)

    if first:
        out["embedding.word_embeddings.weight"] = vocab(hf["model.embed_tokens.weight"])
    for local, g in enumerate(global_layers):
        p, L = f"model.layers.{g}.", f"decoder.layers.{local}."
        q, k, v = (hf[p + f"self_attn.{x}_proj.weight"] for x in "qkv")
        pieces = []
        for group in range(t * ng // tp, (t + 1) * ng // tp):
            for head in range(group * (nh // ng), (group + 1) * (nh // ng)):
                pieces.append(q[head * d:(head + 1) * d])
            pieces += [k[group * d:(group + 1) * d], v[group * d:(group + 1) * d]]
        out[L + "input_layernorm.weight"] = hf[p + "input_layernorm.weight"]
        out[L + "self_attention.linear_proj.weight"] = rows(hf[p + "self_attn.o_proj.weight"].t(), tp, t).t()
        out[L + "self_attention.linear_qkv.weight"] = torch.cat(pieces)
        out[L + "pre_mlp_layernorm.weight"] = hf[p + "post_attention_layernorm.weight"]
        out[L + "mlp.linear_fc1.weight"] = torch.cat([rows(hf[p + "mlp.gate_proj.weight"], tp, t),
                                                      rows(hf[p + "mlp.up_proj.weight"], tp, t)])
        out[L + "mlp.linear_fc2.weight"] = rows(hf[p + "mlp.down_proj.weight"].t(), tp, t).t()
    if last:
        out["decoder.final_layernorm.weight"] = hf["model.norm.weight"]
        out["output_layer.weight"] = vocab(hf["lm_head.weight"])
    return out


@pytest.mark.parametrize("name,tp,pp,nll,divisor", [("gqa", 4, 2, None, 1), ("gqa", 2, 2, [1, 3], 8),
                                                    ("mha", 4, 1, None, 1), ("mqa", 1, 2, [3, 1], 3)])
def test_rank_files_match_the_reference_layout(name, tp, pp, nll, divisor, hf_models, tmp_path):
    tiny = LAYOUTS[name]
    src = hf_models[(name, "bfloat16")]
    hf_to_megatron(src, tmp_path, tp=tp, pp=pp, num_layer_list=nll, make_vocab_size_divisible_by=divisor,
                   progress=False)
    hf = read_hf_tensors(src)
    padded = -(-tiny.vocab // (divisor * tp)) * divisor * tp
    counts = nll or [tiny.layers // pp] * pp

    assert (tmp_path / "latest_checkpointed_iteration.txt").read_bytes() == b"1"
    expected_dirs = {(f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{p:03d}") for t in range(tp)
                     for p in range(pp)}
    assert {d.name for d in (tmp_path / "iter_0000001").iterdir()} == expected_dirs
    for p in range(pp):
        layers = list(range(sum(counts[:p]), sum(counts[:p + 1])))
        for t in range(tp):
            rank_dir = f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{p:03d}"
            ckpt = torch.load(tmp_path / "iter_0000001" / rank_dir / "model_optim_rng.pt", weights_only=False)
            assert list(ckpt) == TOP_LEVEL_KEYS
            assert ckpt["checkpoint_version"] == 3.0 and ckpt["iteration"] == 1
            assert ckpt["num_floating_point_operations_so_far"] == 0
            args = ckpt["args"]
            assert isinstance(args, argparse.Namespace)
            assert all(hasattr(args, a) for a in ARGS_READ), [a for a in ARGS_READ if not hasattr(args, a)]
            assert (args.tensor_model_parallel_size, args.pipeline_model_parallel_size) == (tp, pp)
            assert args.padded_vocab_size == padded and args.params_dtype == torch.bfloat16 and args.bf16
            assert args.num_layer_list == (",".join(map(str, nll)) if nll else None)
            assert args.num_query_groups == tiny.groups and args.group_query_attention == (tiny.groups != tiny.heads)

            model = ckpt["model"]
            ref = reference_rank(hf, tiny, tp, t, layers, p == 0, p == pp - 1, padded)
            tensors = {k: v for k, v in model.items() if not k.endswith("._extra_state")}
            assert list(tensors) == list(ref)  # same keys, in megatron-core's order
            for k in ref:
                assert torch.equal(tensors[k], ref[k]), f"{rank_dir}: {k}"
                assert tensors[k].dtype == torch.bfloat16
            extra = [k for k in model if k.endswith("._extra_state")]
            assert extra == [f"decoder.layers.{i}.{m}._extra_state" for i in range(len(layers)) for m in LINEARS]
            assert all(model[k] is None for k in extra)
            keys = list(model)
            for i in range(len(layers)):  # each _extra_state right after its weight, as mcore writes it
                for m in LINEARS:
                    w = keys.index(f"decoder.layers.{i}.{m}.weight")
                    assert keys[w + 1] == f"decoder.layers.{i}.{m}._extra_state"


def test_vocab_padding_replicates_the_last_row(hf_models, tmp_path):
    src = hf_models[("gqa", "bfloat16")]
    hf_to_megatron(src, tmp_path, tp=2, pp=1, make_vocab_size_divisible_by=64, progress=False)
    emb = [torch.load(tmp_path / f"iter_0000001/mp_rank_0{t}/model_optim_rng.pt", weights_only=False)["model"]
           ["embedding.word_embeddings.weight"] for t in range(2)]
    full = torch.cat(emb)
    real = read_hf_tensors(src)["model.embed_tokens.weight"]
    assert full.shape[0] == 128 and emb[0].shape[0] == 64
    assert torch.equal(full[:101], real)
    assert torch.equal(full[101:], real[-1:].expand(27, -1))
