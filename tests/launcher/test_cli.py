"""`python -m navila_tune` behaves as Hydra users expect: --cfg, --info, -m sweeps, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from navila_testing import PINNED_PATHS


def run(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVILA_", "MINDSPEED_"))}
    proc = subprocess.run([sys.executable, "-m", "navila_tune", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = run(tmp_path, "+experiment=cot_8b", "optim.lr=1e-5", *PINNED_PATHS, "--cfg", "job", "--resolve").stdout
    cfg = yaml.safe_load(out)
    assert cfg["model"]["name"] == "llama3_8b" and cfg["optim"]["lr"] == 1e-5
    assert cfg["model"]["hf_dir"] == "/models/Meta-Llama-3-8B-Instruct"
    assert not (tmp_path / "outputs").exists()  # Hydra's --cfg runs nothing


def test_info_lists_config_groups(tmp_path):
    out = run(tmp_path, "--info", "defaults").stdout
    for group in ("model/llama3_tiny", "parallelism/tp2_pp2", "data/nav_cot_tiny", "optim/sft_tiny",
                  "hardware/cpu", "backend/native", "paths/default"):
        assert group in out, out


def test_help_names_the_groups(tmp_path):
    out = run(tmp_path, "--help").stdout
    assert "experiment: cot_8b, cot_8b_lora_1npu, cot_tiny" in out


def test_dry_run_prints_every_stage_and_writes_only_the_record(tmp_path):
    proc = run(tmp_path, "+experiment=cot_8b", "dry_run=true", *PINNED_PATHS, "hydra.run.dir=run")
    for script in ("convert_ckpt.py", "preprocess_data.py", "posttrain_gpt.py", "inference.py"):
        assert script in proc.stdout
    assert "[5/5] export" in proc.stdout
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["run/.hydra/config.yaml", "run/.hydra/hydra.yaml", "run/.hydra/overrides.yaml",
                       "run/app.log", "run/config.yaml", "run/plan.json", "run/summary.json"]


def test_two_point_sweep_in_dry_run(tmp_path):
    proc = run(tmp_path, "-m", "+experiment=cot_8b", "dry_run=true", "optim.lr=1e-5,2e-5", *PINNED_PATHS,
               "hydra.sweep.dir=sweep")
    assert proc.stdout.count("navila_tune cot_8b: backend mindspeed") == 2
    plans = sorted((tmp_path / "sweep").glob("*/plan.json"))
    assert len(plans) == 2
    stages = [{s["name"]: s for s in json.loads(p.read_text())["stages"]} for p in plans]
    # the swept value changes training and what reads it; conversion and preprocessing are shared
    assert stages[0]["convert"]["fingerprint"] == stages[1]["convert"]["fingerprint"]
    assert stages[0]["preprocess"]["fingerprint"] == stages[1]["preprocess"]["fingerprint"]
    assert stages[0]["train"]["fingerprint"] != stages[1]["train"]["fingerprint"]
    assert stages[0]["export"]["fingerprint"] != stages[1]["export"]["fingerprint"]
    assert {p.parent.name for p in plans} == {"0_optim.lr=1e-05", "1_optim.lr=2e-05"}  # the swept values only


def test_config_error_exits_2_with_the_message_and_no_traceback(tmp_path):
    proc = run(tmp_path, "+experiment=cot_8b", "hardware=910b_x1", "parallelism=tp1_pp4", "dry_run=true",
               *PINNED_PATHS, check=False)
    assert proc.returncode == 2
    assert "cannot hold TP x PP x CP = 1 x 4 x 1 = 4" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_dry_run_without_mindspeed_says_what_is_missing(tmp_path):
    proc = run(tmp_path, "+experiment=cot_8b", *PINNED_PATHS, check=False)
    assert proc.returncode == 2
    assert "backend.mindspeed.home" in proc.stderr and "dry_run=true" in proc.stderr


def test_sweep_with_an_invalid_point_fails_before_running_any(tmp_path):
    proc = run(tmp_path, "-m", "+experiment=cot_8b", "dry_run=true", "optim.global_batch_size=512,500",
               *PINNED_PATHS, "hydra.sweep.dir=sweep", check=False)
    assert proc.returncode == 2
    assert "1 of the sweep's points are invalid; nothing was run" in proc.stderr
    assert "point +experiment=cot_8b dry_run=True optim.global_batch_size=500" in proc.stderr
    assert "not divisible by micro_batch_size x data-parallel = 4 x 2 = 8" in proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_glob_sweep_composes_every_experiment(tmp_path):
    proc = run(tmp_path, "-m", "+experiment=glob(*)", "dry_run=true", *PINNED_PATHS, "hydra.sweep.dir=sweep")
    from navila_testing import experiments

    assert len(list((tmp_path / "sweep").glob("*/plan.json"))) == len(experiments()) == 3
    for name in experiments():
        assert f"navila_tune {name}:" in proc.stdout
