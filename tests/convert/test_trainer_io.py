"""Megatron state I/O for the native trainer: load/save, iterations, the tracker, completeness."""

from __future__ import annotations

import argparse
import sys
import types

import pytest

torch = pytest.importorskip("torch")

from convert_helpers import LAYOUTS, read_hf_tensors  # noqa: E402

from navila_tune.convert import (ConversionError, hf_to_megatron, latest_complete_iteration,  # noqa: E402
                                 load_megatron_state, megatron_to_hf, reshard, save_megatron_state)
from navila_tune.convert import torch_zip  # noqa: E402

TRACKER = "latest_checkpointed_iteration.txt"


@pytest.fixture
def trained(hf_models, tmp_path):
    """A model loaded from a converted checkpoint, 'trained' (weights changed), saved at iterations 20 and 40."""
    src = hf_models[("gqa", "bfloat16")]
    hf_to_megatron(src, tmp_path / "base", tp=2, pp=2, make_vocab_size_divisible_by=4, progress=False)
    meta, state = load_megatron_state(tmp_path / "base")
    arch = meta.arch
    for it in (20, 40):
        state = {k: v + 0.01 * it for k, v in state.items()}
        optimizer = {"state": {0: {"exp_avg": torch.full((3,), float(it))}}, "param_groups": [{"lr": 1e-5}]}
        save_megatron_state(state, tmp_path / "run", arch=arch, tp=2, pp=2, num_layer_list=None, iteration=it,
                            padded_vocab_size=meta.padded_vocab_size, args_overrides={"lr": 1e-5, "train_iters": 40},
                            extra={"optimizer": optimizer, "opt_param_scheduler": {"num_steps": it},
                                   "num_floating_point_operations_so_far": 7 * it})
    return src, tmp_path, state, meta


def test_load_megatron_state_keeps_padded_vocab_with_hf_names(hf_models, tmp_path):
    src = hf_models[("gqa", "bfloat16")]
    hf_to_megatron(src, tmp_path / "mg", tp=2, pp=2, num_layer_list=[1, 3], make_vocab_size_divisible_by=4,
                   progress=False)
    meta, state = load_megatron_state(tmp_path / "mg")
    ref = read_hf_tensors(src)
    assert (meta.tp, meta.pp, meta.num_layer_list, meta.iteration, meta.dtype) == (2, 2, [1, 3], 1, "bf16")
    assert meta.padded_vocab_size == 104 and meta.arch == LAYOUTS["gqa"].arch()
    assert isinstance(meta.args, argparse.Namespace)
    assert meta.extra == {"rerun_state_machine": {"mode": "disabled"}, "num_floating_point_operations_so_far": 0}
    assert sorted(state) == sorted(ref)
    for k in ref:
        if k in ("model.embed_tokens.weight", "lm_head.weight"):
            assert state[k].shape == (104, 64)
            assert torch.equal(state[k][:101], ref[k]) and torch.equal(state[k][101:], ref[k][-1:].expand(3, -1))
        else:
            assert torch.equal(state[k], ref[k]), k


def test_save_adds_iterations_and_points_the_tracker_last(trained):
    src, tmp_path, state, meta = trained
    run = tmp_path / "run"
    assert (run / TRACKER).read_text() == "40"
    assert sorted(p.name for p in run.iterdir()) == ["iter_0000020", "iter_0000040", TRACKER]
    rank = torch.load(run / "iter_0000040" / "mp_rank_01_001" / "model_optim_rng.pt", weights_only=False)
    assert list(rank)[:4] == ["args", "checkpoint_version", "iteration", "model"]
    assert rank["iteration"] == 40 and rank["args"].iteration == 40 and rank["args"].lr == 1e-5
    assert torch.equal(rank["optimizer"]["state"][0]["exp_avg"], torch.full((3,), 40.0))
    assert rank["opt_param_scheduler"] == {"num_steps": 40}
    assert rank["num_floating_point_operations_so_far"] == 280
    assert latest_complete_iteration(run) == 40

    meta2, state2 = load_megatron_state(run)
    assert meta2.iteration == 40 and meta2.extra["opt_param_scheduler"] == {"num_steps": 40}
    assert torch.equal(meta2.extra["optimizer"]["state"][0]["exp_avg"], torch.full((3,), 40.0))
    assert all(torch.equal(state2[k], state[k]) for k in state)
    meta20, _ = load_megatron_state(run, iteration=20)
    assert meta20.iteration == 20


def test_export_of_a_trained_checkpoint_uses_the_tracker_iteration(trained):
    transformers = pytest.importorskip("transformers")
    src, tmp_path, state, meta = trained
    megatron_to_hf(tmp_path / "run", tmp_path / "hf", source_hf_dir=src, progress=False)
    out = read_hf_tensors(tmp_path / "hf")
    assert torch.equal(out["model.embed_tokens.weight"], state["model.embed_tokens.weight"][:101])
    assert torch.equal(out["model.layers.3.mlp.up_proj.weight"], state["model.layers.3.mlp.up_proj.weight"])
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    # and an explicit older iteration, resharded first
    reshard(tmp_path / "run", tmp_path / "tp1", tp=1, pp=1, iteration=20, progress=False)
    assert (tmp_path / "tp1" / TRACKER).read_text() == "20"
    assert torch.load(tmp_path / "tp1/iter_0000020/mp_rank_00/model_optim_rng.pt",
                      weights_only=False)["num_floating_point_operations_so_far"] == 140


def test_crash_during_save_keeps_the_tracker_on_the_last_complete_iteration(trained, monkeypatch):
    src, tmp_path, state, meta = trained
    run = tmp_path / "run"
    real, calls = torch_zip.RecordSink.write, []

    def dying(self, block):
        calls.append(1)
        if len(calls) == 25:
            raise KeyboardInterrupt  # e.g. the job is killed
        return real(self, block)

    monkeypatch.setattr(torch_zip.RecordSink, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        save_megatron_state(state, run, arch=meta.arch, tp=2, pp=2, num_layer_list=None, iteration=60,
                            padded_vocab_size=meta.padded_vocab_size)
    assert (run / TRACKER).read_text() == "40"
    assert sorted(p.name for p in run.iterdir()) == ["iter_0000020", "iter_0000040", TRACKER]


def test_latest_complete_iteration_skips_incomplete_ones(trained):
    src, tmp_path, state, meta = trained
    run = tmp_path / "run"
    rank_file = run / "iter_0000040" / "mp_rank_00_001" / "model_optim_rng.pt"
    data = rank_file.read_bytes()
    rank_file.write_bytes(data[:-100])
    assert latest_complete_iteration(run) == 20
    rank_file.unlink()
    assert latest_complete_iteration(run) == 20
    (run / TRACKER).write_text("10")  # iterations newer than the tracker are not complete saves
    assert latest_complete_iteration(run) is None
    (run / TRACKER).unlink()
    assert latest_complete_iteration(run) is None
    assert latest_complete_iteration(tmp_path / "nowhere") is None


def test_save_rejects_reserved_extra_keys_and_mixed_dtypes(trained):
    src, tmp_path, state, meta = trained
    kwargs = dict(arch=meta.arch, tp=1, pp=1, num_layer_list=None, iteration=3, padded_vocab_size=104)
    with pytest.raises(ConversionError, match=r"extra may not set \['model'\]"):
        save_megatron_state(state, tmp_path / "x", extra={"model": {}}, **kwargs)
    mixed = dict(state, **{"model.norm.weight": state["model.norm.weight"].float()})
    with pytest.raises(ConversionError, match=r"mixes dtypes"):
        save_megatron_state(mixed, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_megatron_args_with_classes_missing_here_still_load(hf_models, tmp_path, monkeypatch):
    """MindSpeed/Megatron pickle their own enums into args; reading must not need those packages."""
    src = hf_models[("gqa", "bfloat16")]
    hf_to_megatron(src, tmp_path / "mg", tp=1, pp=1, progress=False)
    path = tmp_path / "mg/iter_0000001/mp_rank_00/model_optim_rng.pt"
    ckpt = torch.load(path, weights_only=False)
    fake = types.ModuleType("mindspeed_llm_not_installed")
    fake.ModelType = type("ModelType", (), {"__module__": fake.__name__})
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    ckpt["args"].model_type = fake.ModelType()
    torch.save(ckpt, path)
    monkeypatch.delitem(sys.modules, fake.__name__)
    meta, state = load_megatron_state(tmp_path / "mg")
    assert isinstance(meta.args.model_type, torch_zip.MissingClass)
    reshard(tmp_path / "mg", tmp_path / "tp2", tp=2, pp=1, progress=False)  # drops the unpicklable attr
    assert not hasattr(torch.load(tmp_path / "tp2/iter_0000001/mp_rank_01/model_optim_rng.pt",
                                  weights_only=False)["args"], "model_type")


def test_written_rank_files_read_back_with_torch_load_mmap_and_meta(hf_models, tmp_path):
    src = hf_models[("mha", "float16")]
    hf_to_megatron(src, tmp_path / "mg", tp=2, pp=1, dtype="fp16", progress=False)
    path = tmp_path / "mg/iter_0000001/mp_rank_01/model_optim_rng.pt"
    plain = torch.load(path, weights_only=False)
    mapped = torch.load(path, weights_only=False, mmap=True)
    meta = torch.load(path, weights_only=False, map_location="meta")
    for k, v in plain["model"].items():
        if v is None:
            assert mapped["model"][k] is None and meta["model"][k] is None
            continue
        assert torch.equal(v, mapped["model"][k]) and meta["model"][k].shape == v.shape
        assert v.untyped_storage().nbytes() == v.nbytes  # each tensor has its own storage (no views saved)


def test_export_warns_when_args_and_config_disagree_on_non_shape_values(hf_models, tmp_path):
    """MindSpeed's converter leaves rotary_base at 10000 in args; the export keeps config.json's value."""
    src = hf_models[("gqa", "bfloat16")]
    hf_to_megatron(src, tmp_path / "mg", tp=1, pp=1, progress=False)
    path = tmp_path / "mg/iter_0000001/mp_rank_00/model_optim_rng.pt"
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["args"].rotary_base == 500000 and isinstance(ckpt["args"].rotary_base, int)
    ckpt["args"].rotary_base = 10000
    torch.save(ckpt, path)
    with pytest.warns(UserWarning, match=r"rope_theta \(10000\.0 vs 500000\.0\)"):
        megatron_to_hf(tmp_path / "mg", tmp_path / "hf", source_hf_dir=src, progress=False)
    assert '"rope_theta": 500000.0' in (tmp_path / "hf" / "config.json").read_text()
