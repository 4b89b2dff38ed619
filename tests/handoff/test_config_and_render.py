"""The VILA source and export settings: schema, validation before any work, stage params, rendered steps."""

from __future__ import annotations

import json

import pytest

import handoff_kit as kit
from navila_testing import compose
from navila_tune.backends.mindspeed.render import is_handoff_command
from navila_tune.handoff.cli import build_parser
from navila_tune.pipeline import build_plan
from navila_tune.plan import Command
from navila_tune.validate import ConfigError, check_inputs, validate

NAVILA_8B = ["+experiment=cot_8b", "model=navila_llama3_8b", "export.vila=true"]


def problems(*overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        validate(compose(*overrides))
    return {p.key: f"{p.message} | fix: {p.fix}" for p in info.value.problems}


def test_vila_source_needs_its_dir_and_derives_hf_dir_from_it():
    assert "needs the VILA checkpoint" in problems("model.source_format=vila")["model.vila_dir"]
    got = problems("model.source_format=vila", "model.vila_dir=/ckpt/navila")["model.hf_dir"]
    assert "fine-tunes /ckpt/navila/llm" in got and "model.hf_dir=${model.vila_dir}/llm" in got
    assert "source_format is hf" in problems("model.vila_dir=/ckpt/navila")["model.vila_dir"]
    assert "unknown value" in problems("model.source_format=gguf")["model.source_format"]


def test_export_settings_are_checked_before_any_work():
    assert "source_format is not vila" in problems("export.vila=true")["export.vila"]
    assert "unknown dtype(s) ['int8']" in problems("export.check_dtypes=[bf16,int8]")["export.check_dtypes"]
    assert "check_samples >= 1" in problems("export.check_samples=0")["export.check_samples"]
    got = problems("paths.work_dir=/scratch/mistral-runs")["paths.work_dir"]
    assert "['mistral']" in got and "NaVILA picks its model class" in got
    validate(compose("paths.work_dir=/scratch/mistral-runs", "stages=[convert,preprocess,train]"))  # no export


def test_the_navila_model_group_validates_and_its_vocab_keeps_the_pad_row():
    cfg = compose(*NAVILA_8B)
    layout = validate(cfg)
    assert cfg.model.hf_dir == "/models/navila-siglip-llama3-8b-v1.5-pretrain/llm" == cfg.model.tokenizer_dir
    assert cfg.model.arch.vocab_size == 128257
    assert layout.padded_vocab_size == -(-128257 // layout.tp) * layout.tp > 128257  # training pads, export trims


def test_a_vila_dir_without_its_components_is_an_input_error(tmp_path):
    root = kit.vila_checkpoint(tmp_path / "navila")["root"]
    cfg = compose("model.source_format=vila", f"model.vila_dir={root}", "model.hf_dir=${model.vila_dir}/llm",
                  "model.arch.vocab_size=1024", "model.init_seed=null")
    check_inputs(cfg)  # complete: no problem
    import shutil

    shutil.rmtree(root / "mm_projector")
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    assert [(p.key, p.message) for p in info.value.problems] == [("model.vila_dir", f"{root} has no mm_projector/ "
                                                                                    f"folder")]


def test_a_missing_pinned_python_is_an_input_error():
    cfg = compose("export.navila_python=/nowhere/bin/python")
    with pytest.raises(ConfigError, match="export.navila_python"):
        check_inputs(cfg)


def _handoff_steps(*overrides: str) -> list[Command]:
    cfg = compose(*overrides)
    plan = build_plan(cfg, validate(cfg), run_dir="/runs/x")
    export = plan.stage("export")
    assert "preprocess" in export.upstream  # the loss check reads training samples
    return [s for s in export.steps if isinstance(s, Command) and is_handoff_command(s)]


def test_mindspeed_export_renders_finalize_splice_and_a_check_our_cli_accepts():
    finalize, splice, check = _handoff_steps(*NAVILA_8B)
    assert finalize.argv[:4] == ("python", "-m", "navila_tune.handoff", "finalize")
    assert finalize.env_script and finalize.cwd == "/opt/MindSpeed-LLM"  # the backend's python and environment
    s = build_parser().parse_args(list(splice.argv[3:]))
    assert s.source == "/models/navila-siglip-llama3-8b-v1.5-pretrain" and s.out.endswith(".partial/vila")
    assert s.final == s.out.replace(".partial", "")
    c = build_parser().parse_args(list(check.argv[3:]))
    assert c.hf_dir.endswith(".partial/hf") and c.dtype == "bf16" and c.dtypes == "fp32,bf16,fp16"
    assert json.loads(c.arch)["vocab_size"] == 128257
    assert c.megatron.startswith("/work/train/") and c.megatron.endswith("/ckpt")
    assert c.data_prefix.startswith("/work/preprocess/") and c.data_prefix.endswith("/data/train")
    assert (c.vila, c.vila_source, c.vila_final) == (s.out, s.source, s.final)
    assert c.source_tokenizer == "/models/navila-siglip-llama3-8b-v1.5-pretrain/llm"


def test_mindspeed_lora_checks_without_a_loss_reference_and_the_check_can_be_turned_off():
    *_, check = _handoff_steps("+experiment=cot_8b_lora_1npu")
    c = build_parser().parse_args(list(check.argv[3:]))
    assert c.megatron is None and c.data_prefix is None  # the LoRA checkpoint holds only the adapter
    steps = _handoff_steps("+experiment=cot_8b", "export.handoff_check=false")
    assert [s.argv[3] for s in steps] == ["finalize"]


def test_export_settings_change_the_export_fingerprint_only():
    a = build_plan(compose(), validate(compose()), run_dir="/r")
    b_cfg = compose("export.check_samples=8")
    b = build_plan(b_cfg, validate(b_cfg), run_dir="/r")
    assert a.stage("export").fingerprint != b.stage("export").fingerprint
    assert all(a.stage(n).fingerprint == b.stage(n).fingerprint for n in ("convert", "preprocess", "train"))


def test_finalize_splice_and_the_pinned_side_need_no_heavy_library():
    """They run in MindSpeed's and NaVILA's environments; validation imports the VILA layout check."""
    import subprocess
    import sys

    code = ("import sys\nfor m in ('torch', 'transformers', 'safetensors', 'numpy'): sys.modules[m] = None\n"
            "import navila_tune.validate, navila_tune.handoff.cli, navila_tune.handoff.vila, "
            "navila_tune.handoff.generation, navila_tune.handoff.pinned_stack")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(kit.REPO))
    assert proc.returncode == 0, proc.stderr
