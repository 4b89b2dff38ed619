"""The sbatch scripts of cluster=slurm for the 2x8 910B recipe, compared with checked-in files.

Regenerate after an intended change with ``NAVILA_UPDATE_GOLDEN=1 pytest tests/cluster`` and review.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from navila_testing import REPO, compose
from navila_tune.cluster.slurm import write_chain
from navila_tune.pipeline import build_plan
from navila_tune.validate import validate

GOLDEN = REPO / "tests" / "golden" / "sbatch"
OVERRIDES = ["+experiment=cot_8b", "hardware=910b_2x8", "cluster=slurm", "cluster.partition=ascend910b",
             "cluster.account=navila", "cluster.time=2-00:00:00", "cluster.extra_sbatch=[--exclusive]"]


@pytest.fixture
def chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(*OVERRIDES)
    plan = build_plan(cfg, validate(cfg), run_dir=str(tmp_path / "run"))
    return plan, write_chain(plan, cfg, python="/opt/venv/bin/python"), tmp_path


def normalized(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "$TMP")
    text = re.sub(r"navila_tune \d+\.\d+\.\d+(\.\w+)?", "navila_tune VERSION", text)
    return re.sub(r"/work/(\w+)/[0-9a-f]{16}", r"/work/\1/FP", re.sub(r"fingerprint [0-9a-f]{16}", "fingerprint FP", text))


def test_sbatch_scripts_match_golden(chain):
    plan, ch, tmp = chain
    assert [e.stage for e in ch.entries] == list(plan.selected)
    for entry in ch.entries:
        got = normalized(Path(entry.script).read_text(), tmp)
        path = GOLDEN / Path(entry.script).name
        if os.environ.get("NAVILA_UPDATE_GOLDEN"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(got)
        assert got == path.read_text(), entry.stage


def test_only_training_spans_both_nodes(chain):
    plan, ch, _ = chain
    for entry in ch.entries:
        text = Path(entry.script).read_text()
        nodes = 2 if entry.stage == "train" else 1
        assert f"#SBATCH --nodes={nodes}\n" in text and f"srun --nodes={nodes} --ntasks-per-node=1" in text
        assert "#SBATCH --gres=npu:8" in text and "#SBATCH --exclusive" in text
        assert text.rstrip().endswith(f"-m navila_tune.run_stage {plan.run_dir} {entry.stage}")
