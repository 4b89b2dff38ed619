"""(a) HF -> Megatron -> HF is bitwise identical, for every head layout, TP in {1,2,4}, PP in {1,2}."""

from __future__ import annotations

import json

import pytest

from convert_helpers import LAYOUTS, TOKENIZER_FILES, read_hf_tensors

torch = pytest.importorskip("torch")

from navila_tune.convert import hf_to_megatron, megatron_to_hf, reshard  # noqa: E402

# (layout, dtype, tp, pp, num_layer_list, make_vocab_size_divisible_by)
CASES = (
    [("gqa", "bfloat16", tp, pp, None, 1) for tp in (1, 2, 4) for pp in (1, 2)]
    + [("mha", "float16", tp, pp, None, 8) for tp in (1, 2, 4) for pp in (1, 2)]
    + [("mqa", "float32", 1, pp, None, 8) for pp in (1, 2)]
    + [("gqa", "bfloat16", 2, 2, [1, 3], 1), ("mqa", "float32", 1, 3, [2, 1, 1], 1)]
)


def _id(case) -> str:
    name, dt, tp, pp, nll, div = case
    return f"{name}-{dt}-tp{tp}-pp{pp}" + (f"-nll{'_'.join(map(str, nll))}" if nll else "") + f"-div{div}"


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(-1).view(torch.uint8), b[k].view(-1).view(torch.uint8)), k


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_hf_megatron_hf_is_bitwise_identical(case, hf_models, tmp_path):
    name, dt, tp, pp, nll, div = case
    src = hf_models[(name, dt)]
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[dt]
    hf_to_megatron(src, tmp_path / "mg", tp=tp, pp=pp, num_layer_list=nll, dtype=dtype,
                   make_vocab_size_divisible_by=div, expected_arch=LAYOUTS[name].arch(), progress=False)
    megatron_to_hf(tmp_path / "mg", tmp_path / "hf", source_hf_dir=src, progress=False)

    assert_bitwise_equal(read_hf_tensors(src), read_hf_tensors(tmp_path / "hf"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["torch_dtype"] == dt and config["vocab_size"] == LAYOUTS[name].vocab
    for f in [*TOKENIZER_FILES, "generation_config.json"]:
        assert (tmp_path / "hf" / f).read_bytes() == (src / f).read_bytes(), f


def test_export_loads_with_auto_model_and_keeps_logits(hf_models, tmp_path):
    transformers = pytest.importorskip("transformers")
    src = hf_models[("gqa", "float32")]
    hf_to_megatron(src, tmp_path / "mg", tp=2, pp=2, dtype="fp32", progress=False)
    megatron_to_hf(tmp_path / "mg", tmp_path / "hf", source_hf_dir=src, progress=False, max_shard_bytes=30_000)
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in (tmp_path / "hf").glob("model-*.safetensors")}
    a = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


@pytest.mark.parametrize("convert_at", ["hf2mg", "mg2hf"])
def test_dtype_conversion(hf_models, tmp_path, convert_at):
    src = hf_models[("gqa", "float32")]
    hf_to_megatron(src, tmp_path / "mg", tp=2, pp=2, dtype="bf16" if convert_at == "hf2mg" else "fp32",
                   progress=False)
    megatron_to_hf(tmp_path / "mg", tmp_path / "hf", source_hf_dir=src,
                   dtype="bf16" if convert_at == "mg2hf" else None, progress=False)
    out = read_hf_tensors(tmp_path / "hf")
    ref = read_hf_tensors(src)
    assert all(t.dtype == torch.bfloat16 for t in out.values())
    assert all(torch.equal(out[k], ref[k].to(torch.bfloat16)) for k in ref)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config.get("dtype", "bfloat16") == "bfloat16"


@pytest.mark.parametrize("src_layout,dst_layout", [((2, 2, None), (4, 1, None)), ((4, 1, None), (1, 2, [3, 1])),
                                                   ((1, 2, [1, 3]), (2, 2, None))])
def test_reshard_round_trip(hf_models, tmp_path, src_layout, dst_layout):
    src = hf_models[("gqa", "bfloat16")]
    (tp0, pp0, nll0), (tp1, pp1, nll1) = src_layout, dst_layout
    hf_to_megatron(src, tmp_path / "a", tp=tp0, pp=pp0, num_layer_list=nll0, progress=False)
    reshard(tmp_path / "a", tmp_path / "b", tp=tp1, pp=pp1, num_layer_list=nll1, progress=False)
    a_args = torch.load(next((tmp_path / "b").glob("iter_*/mp_rank_00*/model_optim_rng.pt")), weights_only=False)["args"]
    assert (a_args.tensor_model_parallel_size, a_args.pipeline_model_parallel_size) == (tp1, pp1)
    assert a_args.padded_vocab_size == 101 + (-101 % tp1)
    megatron_to_hf(tmp_path / "b", tmp_path / "hf", source_hf_dir=src, progress=False)
    assert_bitwise_equal(read_hf_tensors(src), read_hf_tensors(tmp_path / "hf"))
