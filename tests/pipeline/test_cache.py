"""The stage cache on the embedded default: build once, reuse, rebuild exactly what changed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from navila_testing import QUICK_TINY, run_navila, stage_records

ALL = ["convert", "preprocess", "train", "generate", "evaluate", "export"]


def test_lr_sweep_converts_and_preprocesses_once(tmp_path):
    proc = run_navila(tmp_path, "-m", *QUICK_TINY, "optim.lr=1e-3,2e-3,3e-3", "hydra.sweep.dir=sweep")
    jobs = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(jobs) == 3
    records = [stage_records(j.parent) for j in jobs]
    for stage in ("convert", "preprocess"):
        statuses = sorted(r[stage]["status"] for r in records)
        assert statuses == ["ran", "reused", "reused"], (stage, statuses)
        assert len({r[stage]["output"] for r in records}) == 1
    for stage in ("train", "generate", "evaluate", "export"):
        assert [r[stage]["status"] for r in records] == ["ran"] * 3, stage
        assert len({r[stage]["output"] for r in records}) == 3
    summary = (tmp_path / "sweep" / "sweep_summary.md").read_text()
    assert summary.count("| ok |") == 3
    assert (tmp_path / "sweep" / "sweep_summary.csv").is_file()
    assert (tmp_path / "sweep" / "sweep_summary.png").stat().st_size > 0
    assert "rank" in proc.stdout and "sweep summary:" in proc.stdout


def test_changes_rebuild_exactly_what_they_determine(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(Path(__file__).resolve().parents[2] / "navila_tune" / "assets" / "nav_cot_tiny", data)
    base = [*QUICK_TINY, f"data.input={data / 'train.parquet'}", f"data.eval_input={data / 'heldout.parquet'}"]

    def run(name: str, *extra: str) -> dict[str, str]:
        run_navila(tmp_path, *base, *extra, f"hydra.run.dir={name}")
        return {k: v["status"] for k, v in stage_records(tmp_path / name).items()}

    assert run("first") == dict.fromkeys(ALL, "ran")
    assert run("again") == dict.fromkeys(ALL, "reused")
    # data.seq_length is read by preprocess and everything after it, not by convert
    changed = run("seq", "data.seq_length=192")
    assert changed == {"convert": "reused", **dict.fromkeys(ALL[1:], "ran")}
    # a touched input file invalidates what reads it (path + size + mtime identity)
    os.utime(data / "train.parquet", (time.time() + 5, time.time() + 5))
    touched = run("touched")
    assert touched["convert"] == "reused" and touched["preprocess"] == "ran"
    # force re-runs the named stage even though its output is complete
    forced = run("forced", "force=[convert]")
    assert forced["convert"] == "ran" and forced["preprocess"] == "reused"


def test_dry_run_says_why_each_stage_runs_or_is_reused(quick_run, tmp_path):
    work = [f"paths.work_dir={quick_run.work_dir}"]  # a dry run writes only its run record
    out = run_navila(tmp_path, *QUICK_TINY, *work, "data.seq_length=192", "dry_run=true", "hydra.run.dir=r1").stdout
    assert "[1/6] convert  (reuse: cached)" in out
    assert "[2/6] preprocess  (run: config changed: data.seq_length)" in out
    assert "[3/6] train  (run: config changed: data.seq_length; upstream changed: preprocess)" in out
    assert "[6/6] export  (run: upstream changed: preprocess, train)" in out
    fresh = run_navila(tmp_path, *QUICK_TINY, "paths.work_dir=nothing_built", "dry_run=true", "hydra.run.dir=r2").stdout
    assert all(f"[{i}/6] {s}  (run: not built yet)" in fresh for i, s in enumerate(ALL, 1))
    assert not (tmp_path / "nothing_built").exists()
