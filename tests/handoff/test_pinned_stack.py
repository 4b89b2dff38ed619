"""NaVILA's pinned stack (transformers 4.37.2, tokenizers 0.15.2) loads a clean export and rejects broken ones.

Marked slow: the first run creates .venv-navila/ with scripts/make_navila_env.sh (about 30 s from the
registry; torch from the local wheel), later runs reuse it. Skipped when the environment cannot be created
(no registry). Run it alone with: pytest -m slow tests/handoff/test_pinned_stack.py
"""

from __future__ import annotations

import subprocess

import pytest

import handoff_kit as kit
from navila_tune.handoff.pinned_stack import pinned_stack_item

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def pinned_python() -> str:
    env = kit.REPO / ".venv-navila"
    try:
        proc = subprocess.run(["bash", str(kit.REPO / "scripts" / "make_navila_env.sh"), str(env)],
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("creating NaVILA's pinned environment took over 15 minutes")
    if proc.returncode != 0:
        pytest.skip("cannot create NaVILA's pinned environment here: " + " | ".join(proc.stderr.splitlines()[-3:]))
    return proc.stdout.strip().splitlines()[-1]


def test_navila_loading_calls_forward_and_generation_work_on_a_clean_export(clean, pinned_python):
    item = pinned_stack_item(pinned_python, str(clean.hf))
    assert item.status == "pass", item
    result = item.details["result"]
    assert result["versions"]["transformers"] == "4.37.2" and result["versions"]["tokenizers"].startswith("0.15.")
    steps = {s["name"]: s for s in result["steps"]}
    assert steps["AutoTokenizer"]["message"].startswith("PreTrainedTokenizerFast")
    assert steps["double BOS"]["ok"] and steps["forward"]["ok"] and steps["generate"]["ok"]


def test_the_full_check_runs_the_pinned_stack_when_given_its_python(clean, pinned_python):
    report = clean.check(clean.hf, dtypes=[], navila_python=pinned_python)
    assert report.item("pinned_stack").status == "pass" and report.ok


def test_tokenizers_0_15_cannot_read_a_resaved_tokenizer(clean, pinned_python, tmp_path):
    from transformers import AutoTokenizer

    hf = clean.copy(tmp_path / "hf")
    AutoTokenizer.from_pretrained(str(hf)).save_pretrained(str(hf))  # tokenizers 0.22 writes merges as pairs
    item = pinned_stack_item(pinned_python, str(hf))
    assert item.status == "fail" and "untagged enum ModelWrapper" in item.message, item


def test_transformers_4_37_rejects_llama_3_1_rope_scaling(clean, pinned_python, tmp_path):
    hf = clean.copy(tmp_path / "hf")
    kit.edit_json(hf / "config.json", rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    item = pinned_stack_item(pinned_python, str(hf))
    assert item.status == "fail" and "rope_scaling" in item.message, item
