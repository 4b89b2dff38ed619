"""Validation reports every problem at once, with key, value and fix; the seed's mistakes are caught."""

from __future__ import annotations

import pytest

from navila_testing import compose
from navila_tune.validate import ConfigError, validate


def problems(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(compose(*overrides))
    return info.value


def test_seed_pp4_on_one_npu():
    err = problems("+experiment=cot_8b", "hardware=910b_x1", "parallelism=tp1_pp4")
    assert [p.key for p in err.problems] == ["parallelism"]
    assert "world size 1 (hardware 910b_x1: 1 node(s) x 1 device(s)) cannot hold TP x PP x CP = 1 x 4 x 1 = 4" \
        in str(err)
    assert "fix: use a hardware group with a multiple of 4 devices" in str(err)


def test_seed_gbs_512_is_really_64():
    err = problems("+experiment=cot_8b", "hardware=910b_x1", "parallelism=tp1_pp1", "optim.grad_accum=16")
    (p,) = [p for p in err.problems if p.key == "optim.global_batch_size"]
    assert p.value == 512
    assert "micro_batch_size 4 x grad_accum 16 x data-parallel 1 = 64, not 512" in p.message
    assert "optim.global_batch_size=64" in p.fix


def test_conversion_layout_cannot_be_set_apart_from_training():
    err = problems("+experiment=cot_8b", "+parallelism.convert_tp=8", "+model.convert_pp=1")
    keys = sorted(p.key for p in err.problems)
    assert keys == ["model.convert_pp", "parallelism.convert_tp"]
    assert "conversion and inference layouts are derived from parallelism.tp/pp" in str(err)


def test_every_problem_is_reported_at_once():
    err = problems("+experiment=cot_8b", "parallelism=tp8_pp1", "model.arch.num_query_groups=4",
                   "data.seq_length=9000", "optim.lora.targets=[linear_xyz]", "optim.finetune=lora",
                   "stages=[train,convert]", "backend=native")
    keys = {p.key for p in err.problems}
    assert {"parallelism.tp", "data.seq_length", "optim.lora.targets", "stages", "backend"} <= keys
    assert str(err).startswith(f"{len(err.problems)} problems in the config:")


@pytest.mark.parametrize("overrides, key, text", [
    (["parallelism=tp1_pp4", "model.arch.num_layers=30", "+experiment=cot_8b", "hardware=910b_x8"],
     "parallelism.pp", "does not divide model.arch.num_layers = 30"),
    (["+experiment=cot_8b", "parallelism=tp2_pp2", "parallelism.num_layer_list=[10,20]"],
     "parallelism.num_layer_list", "sums to 30 but the model has 32 layers"),
    (["+experiment=cot_8b", "parallelism=tp2_pp2", "parallelism.num_layer_list=[8,8,16]"],
     "parallelism.num_layer_list", "has 3 entries for pp = 2"),
    (["+experiment=cot_8b", "data.neat_pack=true"], "data.neat_pack", "needs data.pack=true"),
    (["+experiment=cot_8b", "hardware=cpu"], "backend", "MindSpeed-LLM runs on Ascend NPUs"),
    (["hardware=910b_x1"], "backend", "the native backend runs on cpu or cuda"),
    (["+experiment=cot_8b", "stages=[convert,evaluate]"], "stages", "backend mindspeed has no evaluate stage"),
    (["stages=[train,train]"], "stages", "unique and in pipeline order"),
    (["stages=[finetune]"], "stages", "unknown stage"),
    (["+experiment=cot_8b", "optim.precision=fp32"], "optim.precision", "train in bf16"),
    (["model.family=mistral"], "model.family", "unknown value"),
    (["+experiment=cot_8b", "optim.global_batch_size=500"], "optim.global_batch_size",
     "not divisible by micro_batch_size x data-parallel = 4 x 2 = 8"),
    (["optim.min_lr=1.0"], "optim.min_lr", "is above optim.lr"),
])
def test_single_problems(overrides, key, text):
    err = problems(*overrides)
    matching = [p for p in err.problems if p.key == key]
    assert matching, str(err)
    assert any(text in p.message for p in matching), str(err)
    assert all(p.fix for p in err.problems)


def test_wrong_type_fails_at_compose_naming_the_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as info:
        compose("optim.lr=fast")
    assert "optim.lr" in str(info.value)


def test_unknown_key_in_a_group_file_fails_at_compose(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as info:
        compose("model.arch.num_experts=8")
    assert "num_experts" in str(info.value)
