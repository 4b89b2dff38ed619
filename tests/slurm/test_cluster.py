"""The local Slurm cluster really schedules: batch jobs, concurrency, multi-task and multi-node steps,
afterok dependencies, accounting, and Hydra's submitit launcher submitting a sweep to it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _lines(path: Path) -> list[str]:
    return path.read_text().strip().splitlines()


def test_sbatch_wait_runs_a_script_and_writes_its_output(slurm_cluster, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text('#!/bin/bash\n#SBATCH --job-name=navila-hello\n'
                      'echo "hello job=$SLURM_JOB_ID node=$SLURMD_NODENAME partition=$SLURM_JOB_PARTITION"\n')
    out = tmp_path / "hello.out"
    proc = slurm_cluster.run(["sbatch", "--wait", "--parsable", f"--partition={slurm_cluster.partition}",
                              f"--output={out}", "--time=1", str(script)])
    job_id = proc.stdout.split()[0].split(";")[0]
    [line] = _lines(out)
    node = re.fullmatch(rf"hello job={job_id} node=(\S+) partition={slurm_cluster.partition}", line)
    assert node and node.group(1) in slurm_cluster.nodes, line
    assert slurm_cluster.job(job_id)["JobState"] == "COMPLETED"


def test_sbatch_wait_returns_the_job_exit_code(slurm_cluster, tmp_path):
    proc = slurm_cluster.run(["sbatch", "--wait", "--parsable", f"--output={tmp_path / 'fail.out'}",
                              "--time=1", "--wrap", "echo failing; exit 3"], check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[0].split(";")[0]
    info = slurm_cluster.job(job_id)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "3:0")


def test_two_one_cpu_jobs_run_at_the_same_time(slurm_cluster, tmp_path):
    release = tmp_path / "release"
    # each job says it started, then holds its CPU until the test releases both (or 30 s pass)
    body = (f"touch {tmp_path}/started.$SLURM_JOB_ID; "
            f"for i in $(seq 300); do [ -e {release} ] && exit 0; sleep 0.1; done; exit 7")
    jobs = [slurm_cluster.sbatch("--ntasks=1", "--cpus-per-task=1", "--time=1",
                                 f"--output={tmp_path}/job%j.out", wrap=body) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while not all((tmp_path / f"started.{j}").exists() for j in jobs):
            assert time.monotonic() < deadline, f"jobs {jobs} did not both start: " + \
                str([slurm_cluster.job(j)["JobState"] + "/" + slurm_cluster.job(j)["Reason"] for j in jobs])
            time.sleep(0.2)
        # both hold their CPU until released, so both must be RUNNING now
        assert [slurm_cluster.job(j)["JobState"] for j in jobs] == ["RUNNING", "RUNNING"]
    finally:
        release.touch()
    assert [slurm_cluster.wait(j)["JobState"] for j in jobs] == ["COMPLETED", "COMPLETED"]


def test_one_node_two_tasks_per_node(slurm_cluster, tmp_path):
    out = tmp_path / "tasks.out"
    slurm_cluster.run(["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=2", "--time=1", f"--output={out}",
                       "--wrap", 'srun bash -c "echo rank=\\$SLURM_PROCID of=\\$SLURM_NTASKS node=\\$SLURMD_NODENAME"'])
    lines = sorted(_lines(out))
    assert len(lines) == 2, lines
    node = lines[0].split("node=")[1]
    assert lines == [f"rank=0 of=2 node={node}", f"rank=1 of=2 node={node}"]


def test_two_nodes_one_task_each(slurm_cluster, tmp_path):
    if len(slurm_cluster.nodes) < 2:
        pytest.skip(f"the cluster has one node ({slurm_cluster.nodes}); set NAVILA_SLURM_NODES=2")
    out = tmp_path / "nodes.out"
    step = ('echo rank=\\$SLURM_PROCID nodeid=\\$SLURM_NODEID node=\\$SLURMD_NODENAME '
            'launch=\\$SLURM_LAUNCH_NODE_IPADDR')
    slurm_cluster.run(["sbatch", "--wait", "--nodes=2", "--ntasks-per-node=1", "--time=1", f"--output={out}",
                       "--wrap", f'scontrol show hostnames "$SLURM_JOB_NODELIST"; srun bash -c "{step}"'])
    lines = _lines(out)
    hosts, ranks = lines[:2], sorted(lines[2:])
    assert hosts == list(slurm_cluster.nodes[:2])
    # node names are not resolvable host names here: the launch node's address is what reaches rank 0
    assert ranks == [f"rank={i} nodeid={i} node={hosts[i]} launch=127.0.0.1" for i in range(2)]


def test_afterok_runs_after_success_and_never_after_failure(slurm_cluster, tmp_path):
    bad = slurm_cluster.sbatch("--hold", "--time=1", "--output=/dev/null", wrap="exit 3")
    ok = slurm_cluster.sbatch("--hold", "--time=1", "--output=/dev/null", wrap="sleep 0.5")
    after_bad = slurm_cluster.sbatch(f"--dependency=afterok:{bad}", "--time=1",
                                     f"--output={tmp_path}/after_bad.out", wrap="echo ran")
    after_ok = slurm_cluster.sbatch(f"--dependency=afterok:{ok}", "--time=1",
                                    f"--output={tmp_path}/after_ok.out", wrap="echo ran")
    assert slurm_cluster.job(after_ok)["JobState"] == "PENDING"
    slurm_cluster.run(["scontrol", "release", f"{bad},{ok}"])

    assert slurm_cluster.wait(bad)["JobState"] == "FAILED"
    ok_info, after_ok_info = slurm_cluster.wait(ok), slurm_cluster.wait(after_ok)
    assert (ok_info["JobState"], after_ok_info["JobState"]) == ("COMPLETED", "COMPLETED")
    assert after_ok_info["StartTime"] >= ok_info["EndTime"]
    assert _lines(tmp_path / "after_ok.out") == ["ran"]
    # DependencyParameters=kill_invalid_depend: cancelled rather than pending forever
    never = slurm_cluster.wait(after_bad, {"CANCELLED"})
    assert never["Reason"] == "DependencyNeverSatisfied"
    assert never["RunTime"] == "00:00:00"
    assert not (tmp_path / "after_bad.out").exists()
    if slurm_cluster.accounting:  # what submitit reads to see a job that died without a result
        assert slurm_cluster.sacct_state(bad) == "FAILED"
        assert slurm_cluster.sacct_state(after_ok) == "COMPLETED"


HYDRA_APP = textwrap.dedent('''
    """A tiny Hydra app; the launcher's returns are recorded in the submitting process."""
    import json
    import os
    from dataclasses import dataclass

    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins


    @dataclass
    class Point:
        x: int = 0


    ConfigStore.instance().store(name="point", node=Point)
    _instantiate_launcher = Plugins.instantiate_launcher


    def _recording_launcher(self, *args, **kwargs):
        # Hydra re-executes hydra_plugins modules while scanning, so the launcher class itself cannot
        # be patched beforehand: wrap the instance it builds, and record what launch() returned.
        launcher = _instantiate_launcher(self, *args, **kwargs)
        launch = launcher.launch

        def recording_launch(job_overrides, initial_job_idx):
            returns = launch(job_overrides, initial_job_idx)
            with open(os.environ["RETURNS_FILE"], "w") as f:
                json.dump({"launcher": type(launcher).__name__,
                           "returns": [r.return_value for r in returns]}, f)
            return returns

        launcher.launch = recording_launch
        return launcher


    Plugins.instantiate_launcher = _recording_launcher


    @hydra.main(version_base=None, config_name="point")
    def main(cfg):
        job = os.environ.get("SLURM_JOB_ID")
        print(f"point x={cfg.x} SLURM_JOB_ID={job}", flush=True)
        return {"x": cfg.x, "slurm_job_id": job, "partition": os.environ.get("SLURM_JOB_PARTITION")}


    if __name__ == "__main__":
        main()
''')


def test_hydra_submitit_launcher_runs_a_sweep_as_slurm_jobs(slurm_cluster, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher is not installed (pip install hydra-submitit-launcher, "
                               "the package's [slurm] extra)")
    (tmp_path / "app.py").write_text(HYDRA_APP)
    sweep = tmp_path / "sweep"
    returns_file = tmp_path / "returns.json"
    argv = [sys.executable, str(tmp_path / "app.py"), "-m", "x=1,2", "hydra/launcher=submitit_slurm",
            f"hydra.launcher.partition={slurm_cluster.partition}", "hydra.launcher.timeout_min=2",
            "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}"]
    env = {**slurm_cluster.env, "RETURNS_FILE": str(returns_file)}
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = json.loads(returns_file.read_text())
    assert recorded["launcher"] == "SlurmLauncher"
    returns = recorded["returns"]
    assert [r["x"] for r in returns] == [1, 2]
    assert {r["partition"] for r in returns} == {slurm_cluster.partition}
    job_ids = [r["slurm_job_id"] for r in returns]
    assert None not in job_ids and len(set(job_ids)) == 2, returns
    for r in returns:
        info = slurm_cluster.job(r["slurm_job_id"])
        assert (info["JobState"], info["Partition"]) == ("COMPLETED", slurm_cluster.partition)
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    for r in returns:
        assert f"point x={r['x']} SLURM_JOB_ID={r['slurm_job_id']}" in logs
