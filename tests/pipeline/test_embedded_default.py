"""``python -m navila_tune`` exactly as a new user runs it: every stage, and proof that fine-tuning worked.

One real run of the embedded default (no overrides but the run dir) feeds every test here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from navila_testing import run_navila, stage_records

ALL = ["convert", "preprocess", "train", "generate", "evaluate", "export"]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("embedded_default")
    proc = run_navila(cwd, "hydra.run.dir=run")
    return cwd / "run", proc.stdout


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "stages" / "evaluate" / "metrics.json").read_text())


def test_every_stage_runs(default_run):
    run_dir, _ = default_run
    records = stage_records(run_dir)
    assert [name for name in records] == ALL
    assert all(r["status"] == "ran" for r in records.values()), records


def test_fine_tuning_learns_the_task(default_run):
    run_dir, stdout = default_run
    metrics = _metrics(run_dir)
    base, tuned = metrics["base"], metrics["finetuned"]
    assert base["answer_accuracy"] < 0.10, base
    assert tuned["answer_accuracy"] >= 0.90, tuned
    assert tuned["navila_parse_rate"] >= 0.95, tuned
    assert tuned["loss"] < 0.1 * base["loss"]
    # the run prints the same numbers it measured
    assert (f"| final-answer accuracy | {100 * base['answer_accuracy']:.1f}% | "
            f"{100 * tuned['answer_accuracy']:.1f}% |") in stdout
    assert f"{100 * tuned['navila_parse_rate']:.1f}%" in stdout
    print(f"accuracy {base['answer_accuracy']:.3f} -> {tuned['answer_accuracy']:.3f}, "
          f"parse rate {base['navila_parse_rate']:.3f} -> {tuned['navila_parse_rate']:.3f}")


def test_report_names_the_stages_curve_examples_and_export(default_run):
    run_dir, stdout = default_run
    report = (run_dir / "report.md").read_text()
    for name in ALL:
        assert f"| {name} | ran |" in report
    assert report.count("   answer: ") == 3
    export = (run_dir / "stages" / "export").resolve() / "hf"
    assert f"Exported HF model for NaVILA: `{export}`" in report
    assert (run_dir / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Exported HF model for NaVILA" in stdout


# Runs in a fresh interpreter: only transformers' Auto classes and the exported folder.
_HF_GENERATE = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

export, prompts, max_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(export, local_files_only=True)
model = AutoModelForCausalLM.from_pretrained(export, local_files_only=True, torch_dtype=torch.float32).eval()
out = []
for prompt in prompts:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new)
    out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
print(json.dumps(out))
"""


def test_exported_model_generates_what_the_generate_stage_generated(default_run):
    run_dir, _ = default_run
    native = [json.loads(line) for line in
              (run_dir / "stages" / "generate" / "generations.jsonl").read_text().splitlines() if line.strip()]
    assert len(native) == 3
    max_new = OmegaConf.load(run_dir / "config.yaml").generate.max_new_tokens
    export = run_dir / "stages" / "export" / "hf"
    proc = subprocess.run([sys.executable, "-c", _HF_GENERATE, str(export), json.dumps([r["prompt"] for r in native]),
                           str(max_new)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hf = json.loads(proc.stdout.strip().splitlines()[-1])
    assert hf == [r["generation"] for r in native]
    assert all(r["finish_reason"] == "stop" for r in native)
