"""The embedded default through real Slurm: an afterok chain of sbatch jobs (cluster=slurm), and a
two-point sweep as two jobs through Hydra's submitit launcher (hydra/launcher=slurm) sharing the
cached convert and preprocess outputs. Runs on the loopback cluster of tests/slurm/conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from navila_testing import QUICK_TINY, stage_records

ALL = ["convert", "preprocess", "train", "generate", "evaluate", "export"]


def exported(run_dir: Path) -> bytes:
    hf = Path(stage_records(run_dir)["export"]["output"]) / "hf"
    return b"".join(f.read_bytes() for f in sorted(hf.glob("*.safetensors")))


def navila(cluster, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("NAVILA_", "MINDSPEED_"))}
    proc = subprocess.run([sys.executable, "-m", "navila_tune", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def test_sbatch_chain_runs_the_embedded_default_like_a_local_run(slurm_cluster, quick_run, tmp_path):
    navila(slurm_cluster, tmp_path, *QUICK_TINY, "cluster=slurm", f"cluster.partition={slurm_cluster.partition}",
           "cluster.time=00:20:00", f"paths.work_dir={tmp_path / 'slurm-work'}", "hydra.run.dir=onslurm")
    run = tmp_path / "onslurm"
    jobs = json.loads((run / "slurm" / "jobs.json").read_text())
    assert [j["stage"] for j in jobs] == ALL and all(j["job_id"] for j in jobs)
    for j in jobs:
        info = slurm_cluster.wait(j["job_id"], timeout=600)
        assert info["JobState"] == "COMPLETED", (j, info, _job_log(run, j))
    for i, j in enumerate(jobs[1:], 1):  # chained: each waited for the one before it
        assert f"afterok:{jobs[i - 1]['job_id']}" in slurm_cluster.job(j["job_id"]).get("Dependency", "") or \
            "(null)" in slurm_cluster.job(j["job_id"]).get("Dependency", "(null)")
    local = stage_records(quick_run.run_dir)  # the same config run locally
    for stage in ALL:  # same fingerprints as the local run, and complete
        out = Path(local[stage]["output"])
        slurm_out = tmp_path / "slurm-work" / stage / out.name
        assert (slurm_out / "COMPLETE.json").is_file(), stage
    hf_local, hf_slurm = (Path(local["export"]["output"]) / "hf",
                          tmp_path / "slurm-work" / "export" / Path(local["export"]["output"]).name / "hf")
    assert b"".join(f.read_bytes() for f in sorted(hf_local.glob("*.safetensors"))) == \
        b"".join(f.read_bytes() for f in sorted(hf_slurm.glob("*.safetensors")))
    assert (run / "slurm" / "03_train.sbatch").read_text().count("srun --nodes=1") == 1


def _job_log(run: Path, job: dict) -> str:
    logs = list((run / "slurm").glob(f"*_{job['stage']}-{job['job_id']}.out"))
    return logs[0].read_text()[-3000:] if logs else "(no log)"


def test_a_failed_stage_cancels_the_rest_of_the_chain(slurm_cluster, tmp_path):
    navila(slurm_cluster, tmp_path, *QUICK_TINY, "cluster=slurm", f"cluster.partition={slurm_cluster.partition}",
           "stages=[preprocess,train]", "data.max_bad_row_fraction=-1",  # every row "too many bad rows": fails
           f"paths.work_dir={tmp_path / 'w'}", "hydra.run.dir=run")
    jobs = json.loads((tmp_path / "run" / "slurm" / "jobs.json").read_text())
    first = slurm_cluster.wait(jobs[0]["job_id"], timeout=300)
    assert first["JobState"] == "FAILED"
    second = slurm_cluster.wait(jobs[1]["job_id"], timeout=60)
    assert second["JobState"] == "CANCELLED" and "DependencyNeverSatisfied" in second.get("Reason", "")
    assert not list((tmp_path / "w").glob("train/*"))  # training never started


def test_submitit_sweep_runs_two_jobs_that_share_convert_and_preprocess(slurm_cluster, quick_run, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'navila_tune[slurm]'")
    proc = navila(slurm_cluster, tmp_path, "-m", *QUICK_TINY, "optim.lr=3e-3,2e-3", "hydra/launcher=slurm",
                  f"cluster.partition={slurm_cluster.partition}", "cluster.time=00:20:00",
                  f"paths.work_dir={tmp_path / 'work'}", "hydra.sweep.dir=sweep")
    jobs = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(jobs) == 2, proc.stdout[-3000:]
    records = [stage_records(j.parent) for j in jobs]
    for stage in ("convert", "preprocess"):
        assert sorted(r[stage]["status"] for r in records) == ["ran", "reused"], stage
    assert all(r["train"]["status"] == "ran" for r in records)
    # submitit submits the points as one job array, so they run in parallel: array tasks ID_0 and ID_1
    tasks = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 2, tasks
    for task in tasks:
        assert slurm_cluster.job(task)["JobState"] == "COMPLETED", task
    # a local run of the same point (QUICK_TINY's own lr, 3e-3) has the same outputs
    point = next(j.parent for j in jobs if "optim.lr=0.003" in (j.parent / ".hydra" / "overrides.yaml").read_text())
    assert exported(point) == exported(quick_run.run_dir)
