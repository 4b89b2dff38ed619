"""Fixtures for launcher tests: a fake 910B site with the stand-in MindSpeed-LLM home."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from navila_testing import LLAMA3_8B_CONFIG, REPO

STANDIN = REPO / "tests" / "fixtures" / "mindspeed_standin"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fake cluster: MindSpeed home, CANN env script, 8 NPU device nodes, an 8B HF dir (no real weights),
    a parquet."""
    home = tmp_path / "MindSpeed-LLM"
    shutil.copytree(STANDIN, home)
    (home / "megatron").mkdir()  # MindSpeed's install guide copies Megatron-LM's megatron/ here
    (home / "megatron" / "__init__.py").write_text("# stand-in for Megatron-LM core_v0.12.1's package\n")
    devices = tmp_path / "dev"
    devices.mkdir()
    for i in range(8):
        (devices / f"davinci{i}").touch()
    monkeypatch.setenv("NAVILA_NPU_DEVICE_DIR", str(devices))
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
        "export.handoff_check=false",  # the stand-in's files are placeholders; tests/handoff checks real exports
    ]
    return {"home": home, "models": models, "before": before, "overrides": overrides, "tmp": tmp_path}


