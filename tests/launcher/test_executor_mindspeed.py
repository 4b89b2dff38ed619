"""The executor against a stand-in MindSpeed-LLM home.

The stand-in scripts (tests/fixtures/mindspeed_standin) stand in for MindSpeed-LLM's NPU-only scripts:
they parse their arguments with the real scripts' flag definitions, record argv, cwd and environment,
and write the files the real scripts write. This shows the launcher's side of the contract: stage order,
CANN environment, working directory, stop-on-failure with a useful error, and the run record.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path

import pytest

from navila_testing import REPO, compose
from navila_tune.app import LaunchError, launch
from navila_tune.validate import ConfigError

STANDIN = REPO / "tests" / "fixtures" / "mindspeed_standin"
LLAMA3_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128009,
}


@pytest.fixture
def site(tmp_path):
    """A fake cluster: MindSpeed home, CANN env script, an 8B HF dir (no real weights), a parquet."""
    home = tmp_path / "MindSpeed-LLM"
    shutil.copytree(STANDIN, home)
    models = tmp_path / "models" / "Meta-Llama-3-8B-Instruct"
    models.mkdir(parents=True)
    (models / "config.json").write_text(json.dumps(LLAMA3_8B_CONFIG))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        (models / name).write_text("{}")
    (models / "model-00001-of-00001.safetensors").write_bytes(b"")
    before = {p: p.stat().st_mode for p in models.iterdir()}
    data = tmp_path / "datasets" / "Alpaca-CoT"
    data.mkdir(parents=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction": ["a"], "input": [""], "output": ["b"]}), data / "train.parquet")
    overrides = [
        "+experiment=cot_8b_lora_1npu",
        f"paths.models={tmp_path / 'models'}",
        f"paths.data={tmp_path / 'datasets'}",
        f"paths.mindspeed_home={home}",
        f"paths.work_dir={tmp_path / 'work'}",
        f"backend.mindspeed.env_script={home / 'set_env.sh'}",
        f"backend.mindspeed.python={sys.executable}",
        "optim.train_iters=4", "optim.save_interval=2",
        "hardware.master_port=29611",
    ]
    return {"home": home, "models": models, "before": before, "overrides": overrides, "tmp": tmp_path}


def calls(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "calls.jsonl").read_text().splitlines()]


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
