"""Rendered MindSpeed-LLM commands: compared with checked-in files and parsed by the scripts' own flags.

Regenerate the expected files after an intended change with ``NAVILA_UPDATE_GOLDEN=1 pytest tests/mindspeed``
and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from navila_testing import REPO, compose
from navila_tune.backends.mindspeed.flag_parser import FlagError, parse
from navila_tune.backends.mindspeed.render import is_handoff_command, script_args
from navila_tune.pipeline import build_plan
from navila_tune.plan import Command, Plan
from navila_tune.validate import validate

GOLDEN = REPO / "tests" / "golden" / "mindspeed"
CASES = {
    "cot_8b": ["+experiment=cot_8b"],
    # two 8x910B nodes, c10d rendezvous on the first node's address
    "cot_8b_2x8": ["+experiment=cot_8b", "hardware=910b_2x8", "hardware.master_addr=10.0.0.1",
                   "hardware.rdzv_id=slurm-4242"],
    "cot_8b_lora_1npu": ["+experiment=cot_8b_lora_1npu"],
}


def plan_for(*overrides: str) -> Plan:
    cfg = compose(*overrides)
    return build_plan(cfg, validate(cfg), run_dir="/runs/x")


def normalized(plan: Plan) -> dict:
    fp = re.compile(r"/work/(\w+)/[0-9a-f]{16}")
    out = {}
    for stage in plan.stages:
        steps = []
        for step in stage.steps:
            d = {"argv": list(step.argv), "cwd": step.cwd, "env": dict(step.env), "env_script": step.env_script,
                 "stdin": step.stdin} if isinstance(step, Command) else {"file_op": step.display()}
            steps.append(json.loads(fp.sub(r"/work/\1/FP", json.dumps(d))))
        out[stage.name] = {"upstream": list(stage.upstream), "steps": steps}
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_commands_match_golden(case):
    got = normalized(plan_for(*CASES[case]))
    path = GOLDEN / f"{case}.json"
    if os.environ.get("NAVILA_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1) + "\n")
    expected = json.loads(path.read_text())
    assert got == expected


def commands(plan: Plan):
    """Every MindSpeed-LLM script invocation (navila_tune's own hand-off steps are tested in tests/handoff)."""
    for stage in plan.stages:
        for step in stage.steps:
            if isinstance(step, Command) and not is_handoff_command(step):
                yield stage.name, step


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_argv_parses_with_the_scripts_flags(case):
    plan = plan_for(*CASES[case])
    seen = set()
    for stage, cmd in commands(plan):
        script, args = script_args(cmd)
        parse(script, args)  # raises FlagError on unknown flag, wrong type or bad choice
        seen.add(script)
    assert seen == {"convert_ckpt.py", "preprocess_data.py", "posttrain_gpt.py", "inference.py"}


@pytest.mark.parametrize("parallelism", ["tp1_pp1", "tp2_pp2", "tp1_pp4", "tp8_pp1", "tp1_pp8", "tp4_pp1"])
def test_layouts_parse_and_flow_from_one_group(parallelism):
    plan = plan_for("+experiment=cot_8b", f"parallelism={parallelism}")
    by_stage = {stage: parse(*script_args(cmd)) for stage, cmd in commands(plan) if stage != "preprocess"}
    tp, pp = by_stage["train"].tensor_model_parallel_size, by_stage["train"].pipeline_model_parallel_size
    assert (by_stage["convert"].target_tensor_parallel_size, by_stage["convert"].target_pipeline_parallel_size) \
        == (tp, pp)
    assert (by_stage["generate"].tensor_model_parallel_size, by_stage["generate"].pipeline_model_parallel_size) \
        == (tp, pp)
    assert by_stage["train"].padded_vocab_size == by_stage["generate"].padded_vocab_size == 128256


def test_export_reads_the_trained_checkpoint():
    plan = plan_for("+experiment=cot_8b")
    export = parse(*script_args(next(c for s, c in commands(plan) if s == "export")))
    assert export.load_dir == str(Path(plan.stage("train").output) / "ckpt")
    assert plan.stage("export").upstream[0] == "train"
    assert export.params_dtype == "bf16" and export.load_hf_from_config
    assert export.save_dir.startswith(plan.stage("export").partial)  # a scratch dir, never the user's HF dir


def test_lora_export_merges_the_adapter_with_training_settings():
    plan = plan_for("+experiment=cot_8b_lora_1npu")
    train = parse(*script_args(next(c for s, c in commands(plan) if s == "train")))
    export = parse(*script_args(next(c for s, c in commands(plan) if s == "export")))
    assert export.lora_load == train.save.replace(".partial", "")
    assert (export.lora_r, export.lora_alpha, export.lora_target_modules) == \
        (train.lora_r, train.lora_alpha, train.lora_target_modules)
    assert export.load_dir == train.load  # the converted base


def test_generate_feeds_prompts_on_stdin_and_exits():
    plan = plan_for("+experiment=cot_8b")
    cmd = next(c for s, c in commands(plan) if s == "generate")
    ns = parse(*script_args(cmd))
    assert ns.task == ["chat"] and ns.top_k == 0 and ns.top_p == 0.9
    assert cmd.stdin.endswith("\nexit\n") and cmd.stdin.count("\n") == 3


@pytest.mark.parametrize("script, args, message", [
    ("inference.py", ["--top_p", "0.9"], "unrecognized arguments: --top_p"),
    ("inference.py", ["--top-p", "high"], "invalid float value"),
    ("inference.py", ["--task", "prompt"], "invalid choice: 'prompt'"),
    ("posttrain_gpt.py", ["--lr-decay-style", "cosine_with_restarts"], "invalid choice"),
    ("posttrain_gpt.py", ["--num-layers", "32.5"], "invalid int value"),
    ("posttrain_gpt.py", ["--tensor-model"], "unrecognized arguments"),  # no prefix abbreviations
    ("convert_ckpt.py", ["--model-type", "GPT", "--load-dir", "a", "--save-dir", "b"], "--load-model-type"),
    ("convert_ckpt.py", ["--model-type", "GPT", "--load-model-type", "hf", "--load-dir", "a", "--save-dir", "b",
                         "--tokenizer-model", "t"], "--save-model-type"),
])
def test_flag_parser_rejects_what_mindspeed_rejects(script, args, message):
    with pytest.raises(FlagError) as info:
        parse(script, args)
    assert message in str(info.value)


def test_our_parsers_refuse_abbreviations_everywhere():
    """preprocess_data.py itself accepts unambiguous prefixes; rendered commands must never rely on that."""
    with pytest.raises(FlagError, match="unrecognized"):
        parse("preprocess_data.py", ["--input", "x", "--output-prefix", "y", "--handler", "A"])


def test_mindspeed_memory_options_render_and_lower_the_estimate():
    from navila_tune.planner import estimate

    base = compose("+experiment=cot_8b")
    saving = compose("+experiment=cot_8b", "parallelism.reuse_fp32_param=true", "optim.o2_optimizer=true",
                     "optim.o2_gradient=true")
    ns = parse(*script_args(next(c for s, c in commands(build_plan(saving, validate(saving), run_dir="/r"))
                                 if s == "train")))
    assert ns.reuse_fp32_param and ns.o2_optimizer and ns.o2_gradient
    assert estimate(saving).total_gb < estimate(base).total_gb


def test_two_node_training_uses_c10d_rendezvous_and_all_sixteen_devices():
    plan = plan_for(*CASES["cot_8b_2x8"])
    train = next(c for s, c in commands(plan) if s == "train")
    launcher = list(train.argv[: train.argv.index("posttrain_gpt.py")])
    assert launcher[1:] == ["-m", "torch.distributed.run", "--nproc_per_node", "8", "--nnodes", "2",
                            "--rdzv_backend", "c10d", "--rdzv_endpoint", "10.0.0.1:29500", "--rdzv_id", "slurm-4242"]
    ns = parse(*script_args(train))
    assert ns.global_batch_size == 512 and ns.micro_batch_size == 4  # DP 4 -> grad accumulation 32
    assert train.env["HCCL_CONNECT_TIMEOUT"] == "1200"
