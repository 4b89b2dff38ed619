"""The executor against a stand-in MindSpeed-LLM home.

The stand-in scripts (tests/fixtures/mindspeed_standin) stand in for MindSpeed-LLM's NPU-only scripts:
they parse their arguments with the real scripts' flag definitions, record argv, cwd and environment,
and write the files the real scripts write. This shows the launcher's side of the contract: stage order,
CANN environment, working directory, stop-on-failure with a useful error, and the run record.
"""

from __future__ import annotations

import json
import stat

import pytest

from navila_testing import LLAMA3_8B_CONFIG, compose, standin_calls as calls
from navila_tune.app import LaunchError, launch
from navila_tune.validate import ConfigError

def test_stages_run_in_order_with_cann_env_and_write_the_run_record(site, tmp_path, capsys):
    run_dir = tmp_path / "run"
    launch(compose(*site["overrides"]), run_dir=str(run_dir))
    got = calls(site["home"])
    assert [c["script"] for c in got] == ["convert_ckpt.py", "preprocess_data.py", "posttrain_gpt.py",
                                          "inference.py", "convert_ckpt.py"]
    for c in got:
        assert c["cwd"] == str(site["home"])
        assert c["env"]["ASCEND_HOME_PATH"] == "/fake/Ascend/cann"
        assert c["env"]["ASCEND_OPP_PATH"] == "/fake/Ascend/cann/opp"
        assert c["env"]["LD_LIBRARY_PATH"].startswith("/fake/Ascend/cann/lib64")
        assert c["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
        assert c["env"]["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert got[2]["env"]["WORLD_SIZE"] == "1"  # real torchrun started the training script
    out = capsys.readouterr().out
    assert "(stand-in answer to: Ride forward 2 m" in out  # prompts reached inference.py on stdin
    # run record
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert [s["name"] for s in summary["stages"]] == ["convert", "preprocess", "train", "generate", "export"]
    assert all(s["status"] == "ran" and s["duration_s"] > 0 for s in summary["stages"])
    assert (run_dir / "config.yaml").is_file() and (run_dir / "plan.json").is_file()
    for name in ("convert", "preprocess", "train", "generate", "export"):
        assert (run_dir / "logs" / f"{name}.log").stat().st_size > 0
        assert (run_dir / "stages" / name / "COMPLETE.json").is_file()
    export = run_dir / "stages" / "export" / "hf"
    assert {p.name for p in export.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                 "generation_config.json"}
    assert not (run_dir / "stages" / "export" / "scratch").exists()
    # the user's model dir is untouched although the converter chmods everything under --save-dir
    assert {p: p.stat().st_mode for p in site["models"].iterdir()} == site["before"]
    assert stat.S_IMODE(next(export.glob("model.safetensors")).stat().st_mode) == 0o640


def test_failing_stage_stops_the_pipeline_with_stage_log_and_tail(site, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL", "posttrain_gpt.py")
    run_dir = tmp_path / "run"
    with pytest.raises(LaunchError) as info:
        launch(compose(*site["overrides"]), run_dir=str(run_dir))
    msg = str(info.value)
    assert "stage train failed" in msg
    assert str(run_dir / "logs" / "train.log") in msg
    assert "simulated failure in posttrain_gpt.py (rank 0)" in msg  # the log's last lines
    assert [c["script"] for c in calls(site["home"])] == ["convert_ckpt.py", "preprocess_data.py",
                                                         "posttrain_gpt.py"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["stages"]] == [
        ("convert", "ran"), ("preprocess", "ran"), ("train", "failed")]
    work = site["tmp"] / "work" / "train"
    assert not [p for p in work.iterdir() if not p.name.endswith((".partial", ".lock"))]  # nothing final


def test_missing_mindspeed_home_fails_before_any_stage(site, tmp_path):
    overrides = [*site["overrides"], f"paths.mindspeed_home={tmp_path / 'nowhere'}"]
    with pytest.raises(ConfigError) as info:
        launch(compose(*overrides), run_dir=str(tmp_path / "run"))
    assert "backend.mindspeed.home" in str(info.value) and "dry_run=true shows the plan" in str(info.value)
    assert not (site["home"] / "calls.jsonl").exists()


def test_missing_toolkit_env_script_fails_before_any_stage(site, tmp_path):
    overrides = [*site["overrides"], "backend.mindspeed.env_script=/usr/local/Ascend/none/set_env.sh"]
    with pytest.raises(ConfigError) as info:
        launch(compose(*overrides), run_dir=str(tmp_path / "run"))
    assert "backend.mindspeed.env_script" in str(info.value)
    assert not (site["home"] / "calls.jsonl").exists()


def test_architecture_mismatch_with_the_hf_dir_is_an_input_error(site, tmp_path):
    cfg_json = site["models"] / "config.json"
    cfg_json.write_text(json.dumps({**LLAMA3_8B_CONFIG, "num_key_value_heads": 4}))
    with pytest.raises(ConfigError) as info:
        launch(compose(*site["overrides"]), run_dir=str(tmp_path / "run"))
    assert "model.arch.num_query_groups = 8" in str(info.value) and "says 4" in str(info.value)


def test_interrupted_training_resumes_from_its_own_latest_checkpoint(site, tmp_path, monkeypatch):
    overrides = [*site["overrides"], "stages=[convert,preprocess,train]", "optim.train_iters=6"]
    monkeypatch.setenv("STANDIN_CRASH_AFTER", "4")
    with pytest.raises(LaunchError):
        launch(compose(*overrides), run_dir=str(tmp_path / "run1"))
    monkeypatch.delenv("STANDIN_CRASH_AFTER")
    launch(compose(*overrides), run_dir=str(tmp_path / "run2"))
    trains = [c for c in calls(site["home"]) if c["script"] == "posttrain_gpt.py"]
    assert len(trains) == 2
    first, second = trains[0]["argv"], trains[1]["argv"]
    assert "--finetune" in first and "--no-load-optim" in first and "--no-load-rng" in first
    assert "--finetune" not in second and "--no-load-optim" not in second and "--no-load-rng" not in second
    load = second[second.index("--load") + 1]
    assert load == second[second.index("--save") + 1] and load.endswith(".partial/ckpt")
    # convert and preprocess were reused, not rebuilt
    assert [c["script"] for c in calls(site["home"])].count("convert_ckpt.py") == 1
    ckpt = tmp_path / "run2" / "stages" / "train" / "ckpt"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "6"
    assert sorted(p.name for p in ckpt.glob("iter_*")) == ["iter_0000002", "iter_0000004", "iter_0000006"]


def test_a_truncated_rank_file_is_not_a_checkpoint_to_resume(tmp_path):
    from navila_tune.checkpoint_probe import latest_complete

    root = tmp_path / "ckpt"
    rank = root / "iter_0000010" / "mp_rank_00_001"
    rank.mkdir(parents=True)
    (root / "iter_0000010" / "mp_rank_00_000").mkdir()
    import zipfile

    for r in ("mp_rank_00_000", "mp_rank_00_001"):
        with zipfile.ZipFile(root / "iter_0000010" / r / "model_optim_rng.pt", "w") as zf:
            zf.writestr("archive/data.pkl", b"x" * 1000)
    (root / "latest_checkpointed_iteration.txt").write_text("10")
    assert latest_complete(root, tp=1, pp=2) == 10
    data = (rank / "model_optim_rng.pt").read_bytes()
    (rank / "model_optim_rng.pt").write_bytes(data[: len(data) // 2])
    assert latest_complete(root, tp=1, pp=2) is None
    assert latest_complete(root, tp=2, pp=2) is None  # rank files of another layout are missing


def test_a_node_without_its_npus_or_megatron_fails_fast_naming_itself(site, tmp_path, monkeypatch):
    import os
    import shutil as sh

    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "")  # all 8 visible: passes
    launch(compose(*site["overrides"], "stages=[convert]"), run_dir=str(tmp_path / "ok"))
    monkeypatch.setenv("NAVILA_NPU_DEVICE_DIR", str(tmp_path / "nowhere"))
    sh.rmtree(site["home"] / "megatron")
    with pytest.raises(ConfigError) as info:
        launch(compose(*site["overrides"], "force=[convert]"), run_dir=str(tmp_path / "bad"))
    msg = str(info.value)
    assert f"node {os.uname().nodename}" in msg and "sees 0 NPU(s)" in msg
    assert "`import megatron` from there resolves to" in msg
