"""Bad input: a clear error, and nothing left that a later stage could take for a finished output."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest

torch = pytest.importorskip("torch")

from convert_helpers import LAYOUTS, read_hf_tensors  # noqa: E402

from navila_tune.convert import (ConversionError, hf_to_megatron, megatron_to_hf, reshard,  # noqa: E402
                                 save_megatron_state)
from navila_tune.convert import sources  # noqa: E402
from navila_tune.convert import torch_zip  # noqa: E402


@pytest.fixture
def hf(hf_models, tmp_path):
    """A private copy of the sharded GQA model (tests damage it)."""
    return shutil.copytree(hf_models[("gqa", "bfloat16")], tmp_path / "hf")


@pytest.fixture
def mg(hf, tmp_path):
    hf_to_megatron(hf, tmp_path / "mg", tp=2, pp=2, progress=False)
    return tmp_path / "mg"


def assert_nothing_written(parent, *keep):
    """Only the inputs are left: no output dir and no temporary sibling."""
    assert sorted(p.name for p in parent.iterdir()) == sorted(keep)


def shards(hf):
    return sorted(hf.glob("model-*.safetensors"))


def test_index_names_a_missing_shard(hf, tmp_path):
    victim = shards(hf)[1]
    victim.unlink()
    with pytest.raises(ConversionError, match=rf"names shard file\(s\) missing .*{victim.name} \(holding e\.g\."):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)
    assert_nothing_written(tmp_path, "hf")


def test_truncated_shard(hf, tmp_path):
    victim = shards(hf)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=rf"shard .*{victim.name} is truncated or corrupt"):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)
    assert_nothing_written(tmp_path, "hf")


def test_missing_single_file_checkpoint(tmp_path, hf):
    for f in shards(hf) + [hf / "model.safetensors.index.json"]:
        f.unlink()
    with pytest.raises(ConversionError, match=r"has neither model\.safetensors\.index\.json nor model\.safetensors"):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)


def _rewrite_single_file(hf, mutate):
    from safetensors.torch import save_file

    tensors = read_hf_tensors(hf)
    mutate(tensors)
    for f in shards(hf) + [hf / "model.safetensors.index.json"]:
        f.unlink()
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})


def test_tensor_missing_from_shards(hf, tmp_path):
    _rewrite_single_file(hf, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ConversionError, match=re.escape("missing ['model.layers.1.mlp.up_proj.weight']")):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)
    assert_nothing_written(tmp_path, "hf")


def test_unexpected_tensor(hf, tmp_path):
    _rewrite_single_file(hf, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.bias", torch.zeros(64)))
    with pytest.raises(ConversionError, match=re.escape("unexpected ['model.layers.0.self_attn.q_proj.bias']")):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)


def test_rotary_inv_freq_buffers_are_ignored(hf, tmp_path):
    _rewrite_single_file(hf, lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(4)))
    hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)


def test_architecture_not_matching_the_expected_one(hf, tmp_path):
    expected = dataclasses.replace(LAYOUTS["gqa"].arch(), num_layers=32, rope_theta=10000.0)
    with pytest.raises(ConversionError, match=r"does not match the expected architecture .*num_layers: model has 4, "
                                              r"expected 32; rope_theta: model has 500000\.0, expected 10000\.0"):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, expected_arch=expected, progress=False)
    assert_nothing_written(tmp_path, "hf")


def test_config_not_describing_the_weights_fails_midway_without_output(hf, tmp_path):
    config = json.loads((hf / "config.json").read_text())
    config["intermediate_size"] = 64  # weights have 48
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight has shape \[48, 64\]; .*"
                                              r"implies \[64, 64\]: config\.json does not describe these weights"):
        hf_to_megatron(hf, tmp_path / "out", tp=2, pp=2, progress=False)
    assert_nothing_written(tmp_path, "hf")


@pytest.mark.parametrize("name,tp,groups", [("gqa", 8, 4), ("gqa", 3, 4), ("mqa", 2, 1)])
def test_tp_not_dividing_query_groups(name, tp, groups, hf_models, tmp_path):
    with pytest.raises(ConversionError, match=rf"TP={tp} does not divide num_query_groups={groups} "
                                              rf"\(num_key_value_heads\).*use TP in"):
        hf_to_megatron(hf_models[(name, "bfloat16")], tmp_path / "out", tp=tp, pp=1, progress=False)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("pp,nll,message", [
    (3, None, r"PP=3 does not divide num_layers=4; pass num_layer_list \(e\.g\. 1,1,2\)"),
    (2, [1, 2], r"num_layer_list \[1, 2\] must have PP=2 entries, each >= 1, summing to num_layers=4"),
    (2, [4, 0], r"num_layer_list \[4, 0\] must have"),
])
def test_bad_pipeline_split(hf, tmp_path, pp, nll, message):
    with pytest.raises(ConversionError, match=message):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=pp, num_layer_list=nll, progress=False)


def test_failure_midway_leaves_no_output(hf, tmp_path, monkeypatch):
    real_read, calls = sources.FileSource._read_rows, []

    def flaky(self, *args):
        calls.append(self.name)
        if len(calls) == 40:
            raise OSError("disk went away")
        return real_read(self, *args)

    monkeypatch.setattr(sources.FileSource, "_read_rows", flaky)
    with pytest.raises(OSError, match="disk went away"):
        hf_to_megatron(hf, tmp_path / "out", tp=2, pp=2, progress=False)
    assert_nothing_written(tmp_path, "hf")


def test_output_must_be_new(hf, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match=r"already exists and is not empty"):
        hf_to_megatron(hf, tmp_path / "out", tp=1, pp=1, progress=False)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# --- Megatron input ---------------------------------------------------------------------------------


def test_missing_rank_directory(mg, hf, tmp_path):
    shutil.rmtree(mg / "iter_0000001" / "mp_rank_01_000")
    with pytest.raises(ConversionError, match=re.escape("missing ['mp_rank_01_000'], unexpected []")):
        megatron_to_hf(mg, tmp_path / "out", source_hf_dir=hf, progress=False)
    assert_nothing_written(tmp_path, "hf", "mg")


def test_missing_rank_file(mg, hf, tmp_path):
    (mg / "iter_0000001" / "mp_rank_01_001" / "model_optim_rng.pt").unlink()
    with pytest.raises(ConversionError, match=r"mp_rank_01_001/model_optim_rng\.pt is missing: the checkpoint is "
                                              r"incomplete"):
        megatron_to_hf(mg, tmp_path / "out", source_hf_dir=hf, progress=False)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_rank_file(mg, hf, tmp_path, keep):
    victim = mg / "iter_0000001" / "mp_rank_00_001" / "model_optim_rng.pt"
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ConversionError, match=r"mp_rank_00_001/model_optim_rng\.pt is not a readable torch checkpoint "
                                              r"\(truncated, corrupt"):
        megatron_to_hf(mg, tmp_path / "out", source_hf_dir=hf, progress=False)
    assert_nothing_written(tmp_path, "hf", "mg")


def test_tensor_record_shorter_than_its_shape(tmp_path):
    w = torch_zip.TorchFileWriter(tmp_path / "x.pt")
    stub = w.add_tensor(torch.zeros(4))
    stub.shape = (40,)  # the pickle claims more bytes than the record holds
    w.close({"t": stub})
    reader = torch_zip.TorchFileReader(tmp_path / "x.pt")
    with pytest.raises(ConversionError, match=r"tensor record data/0 is shorter than its shape \[40\]"):
        reader.read(reader.load_object()["t"])


@pytest.mark.parametrize("layout", ["empty", "hf_dir", "iter_dir", "torch_dist", "no_tracker", "bad_tracker",
                                    "te_keys", "legacy_keys", "release"])
def test_unknown_checkpoint_layout(layout, mg, hf, tmp_path):
    source = mg
    if layout == "empty":
        source = tmp_path / "empty"
        source.mkdir()
        message = r"is not a Megatron checkpoint: unknown layout"
    elif layout == "hf_dir":
        source, message = hf, r"is an HF model directory, not a Megatron checkpoint"
    elif layout == "iter_dir":
        source, message = mg / "iter_0000001", r"is inside a checkpoint; pass the directory that holds"
    elif layout == "torch_dist":
        shutil.rmtree(mg / "iter_0000001")
        (mg / "iter_0000001").mkdir()
        (mg / "iter_0000001" / "metadata.json").write_text("{}")
        (mg / "iter_0000001" / "__0_0.distcp").write_bytes(b"x")
        message = r"is a torch_dist \(distributed\) checkpoint; only the legacy 'torch' format"
    elif layout == "no_tracker":
        (mg / "latest_checkpointed_iteration.txt").unlink()
        message = r"has no latest_checkpointed_iteration\.txt; pass the iteration explicitly \(present: \['iter_0000001'\]"
    elif layout == "bad_tracker":
        (mg / "latest_checkpointed_iteration.txt").write_text("one")
        message = r"holds 'one', not an iteration number"
    elif layout == "release":
        (mg / "latest_checkpointed_iteration.txt").write_text("release")
        message = r"says 'release': release checkpoints are not supported"
    else:
        path = mg / "iter_0000001" / "mp_rank_00_000" / "model_optim_rng.pt"
        ckpt = torch.load(path, weights_only=False)
        old = "decoder.layers.0.input_layernorm.weight"
        new = ("decoder.layers.0.self_attention.linear_qkv.layer_norm_weight" if layout == "te_keys"
               else "language_model.encoder.layers.0.input_layernorm.weight")
        ckpt["model"][new] = ckpt["model"].pop(old)
        torch.save(ckpt, path)
        message = (r"model keys do not match the Llama mcore layout of stage 0 .*missing \['decoder\.layers\.0\."
                   r"input_layernorm\.weight'\].*Transformer-Engine" if layout == "te_keys"
                   else r"legacy \(non-mcore\) Megatron layout")
    with pytest.raises(ConversionError, match=message):
        megatron_to_hf(source, tmp_path / "out", source_hf_dir=hf, progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_source_hf_dir_of_another_model(mg, hf_models, tmp_path):
    with pytest.raises(ConversionError, match=r"describe different models: hidden_size: checkpoint 64, "
                                              r"config\.json 32; .*num_attention_heads: checkpoint 8, config\.json 4"):
        megatron_to_hf(mg, tmp_path / "out", source_hf_dir=hf_models[("mha", "bfloat16")], progress=False)


def test_reshard_to_tp_not_dividing_groups(mg, tmp_path):
    with pytest.raises(ConversionError, match=r"TP=8 does not divide num_query_groups=4"):
        reshard(mg, tmp_path / "out", tp=8, pp=1, progress=False)


def test_save_state_rejects_bad_dicts(tmp_path):
    arch = LAYOUTS["gqa"].arch()
    with pytest.raises(ConversionError, match=r"missing \['model\.embed_tokens\.weight'"):
        save_megatron_state({}, tmp_path / "mg", arch=arch, tp=1, pp=1, num_layer_list=None, iteration=5,
                            padded_vocab_size=101)
    with pytest.raises(ConversionError, match=r"padded_vocab_size=100 must be >= vocab_size=101"):
        save_megatron_state({}, tmp_path / "mg", arch=arch, tp=1, pp=1, num_layer_list=None, iteration=5,
                            padded_vocab_size=100)
    assert not (tmp_path / "mg").exists()


def test_cli_reports_errors_with_exit_code_2(hf, tmp_path, capsys):
    from navila_tune.convert.cli import main

    rc = main(["hf2mg", "--hf-dir", str(hf), "--out-dir", str(tmp_path / "out"), "--tp", "8", "--pp", "1", "--quiet"])
    assert rc == 2
    assert re.search(r"^error: TP=8 does not divide num_query_groups=4", capsys.readouterr().err)
