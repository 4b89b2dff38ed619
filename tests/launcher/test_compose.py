"""Every shipped experiment composes, validates and plans; the embedded default is cot_tiny."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from navila_testing import CONF, compose, experiments
from navila_tune.pipeline import build_plan
from navila_tune.validate import validate

SHIPPED = ["cot_8b", "cot_8b_lora_1npu", "cot_tiny"]


def test_experiment_glob_finds_every_file():
    found = experiments()
    assert found == sorted(SHIPPED), "update SHIPPED when adding an experiment"
    assert len(list((CONF / "experiment").rglob("*.yaml"))) == len(SHIPPED)


@pytest.mark.parametrize("name", experiments())
def test_experiment_composes_validates_and_plans(name, tmp_path):
    cfg = compose(f"+experiment={name}")
    layout = validate(cfg)
    plan = build_plan(cfg, layout, run_dir=str(tmp_path))
    assert [s.name for s in plan.stages if s.name in plan.selected] == list(cfg.stages)
    for stage in plan.stages:
        assert stage.steps, stage.name
        assert stage.output.endswith(stage.fingerprint)


def test_default_config_is_cot_tiny():
    default = OmegaConf.to_container(compose(), resolve=True)
    tiny = OmegaConf.to_container(compose("+experiment=cot_tiny"), resolve=True)
    assert default == tiny


def test_every_group_file_composes():
    for group in ("model", "parallelism", "data", "optim", "hardware", "backend", "paths"):
        files = sorted((CONF / group).glob("*.yaml"))
        assert files, group
        for f in files:
            cfg = compose(f"{group}={f.stem}")
            assert cfg[group] is not None


def test_seed_layout_is_consistent():
    cfg = compose("+experiment=cot_8b")
    layout = validate(cfg)
    assert layout.world_size == 8
    assert layout.dp * layout.tp * layout.pp * layout.cp == 8
    assert cfg.optim.micro_batch_size * layout.grad_accum * layout.dp == cfg.optim.global_batch_size == 512
