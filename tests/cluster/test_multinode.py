"""Multi-node native training on one machine: two launcher processes as two nodes, one torchrun agent
each (c10d rendezvous on 127.0.0.1, gloo), against one node with two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from navila_testing import QUICK_TINY, run_navila, stage_records

STAGES = "stages=[convert,preprocess,train]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    metrics = Path(stage_records(run_dir)["train"]["output"]) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [(r["iteration"], r["loss"]) for r in rows if "loss" in r]


def test_two_nodes_one_process_each_match_one_node_with_two(tmp_path):
    common = [*QUICK_TINY, STAGES, "optim.global_batch_size=8", "optim.micro_batch_size=2", "optim.log_interval=1"]
    run_navila(tmp_path, *common, "hardware.devices_per_node=2", f"hardware.master_port={free_port()}",
               f"paths.work_dir={tmp_path / 'one-node'}", "hydra.run.dir=one")
    port = free_port()
    two = [*common, "hardware.nnodes=2", "hardware.devices_per_node=1", "hardware.rdzv_backend=c10d",
           "hardware.master_addr=127.0.0.1", f"hardware.master_port={port}", "hardware.rdzv_id=two-agents",
           f"paths.work_dir={tmp_path / 'two-nodes'}", "hydra.run.dir=two"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVILA_", "MINDSPEED_", "SLURM_"))}
    procs = [subprocess.Popen([sys.executable, "-m", "navila_tune", *two, f"hardware.node_rank={rank}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (1, 0)]  # the follower starts first: it must wait for node 0
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    follower = outs[0]
    assert "waiting for node 0" in follower and "node 1 of 2" in follower
    plan = json.loads((tmp_path / "two" / "plan.json").read_text())
    train_argv = next(s for s in plan["stages"] if s["name"] == "train")["steps"][1]["argv"]
    assert train_argv[1:13] == ["-m", "torch.distributed.run", "--nproc_per_node", "1", "--nnodes", "2",
                                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id",
                                "two-agents"]
    one, two_nodes = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [i for i, _ in one] == [i for i, _ in two_nodes] == list(range(1, 13))
    for (_, a), (_, b) in zip(one, two_nodes):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (one, two_nodes)
    records = stage_records(tmp_path / "two")
    assert records["convert"]["status"] == "ran" and records["train"]["status"] == "ran"
    follower_summary = json.loads((tmp_path / "two" / "summary.node1.json").read_text())
    assert [(s["name"], s["status"]) for s in follower_summary["stages"]] == [
        ("convert", "reused"), ("preprocess", "reused"), ("train", "ran")]
    # the follower ran its own torchrun agent: its log holds the rendezvous with node 0
    assert (tmp_path / "two" / "logs" / "train.node1.log").stat().st_size > 0
