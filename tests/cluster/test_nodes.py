"""Which node am I: from Slurm's environment in a multi-node job, from the hardware group otherwise."""

from __future__ import annotations

import pytest

from navila_testing import compose
from navila_tune.cluster.nodes import NodeError, first_host, node_info


@pytest.mark.parametrize("nodelist, host", [
    ("n1", "n1"), ("gpu[03-05,07]", "gpu03"), ("npu[12,14]", "npu12"), ("a[1-2],b3", "a1"), ("login1,login2", "login1"),
])
def test_first_host_of_a_slurm_nodelist(nodelist, host):
    assert first_host(nodelist) == host


def test_multi_node_rank_and_master_come_from_slurm():
    hw = compose("+experiment=cot_8b", "hardware=910b_2x8").hardware
    env = {"SLURM_JOB_ID": "77", "SLURM_NODEID": "1", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "npu[12-13]"}
    node = node_info(hw, env)
    assert (node.rank, node.count, node.master_addr, node.source, node.job_id) == (1, 2, "npu12", "slurm", "77")
    node = node_info(hw, {**env, "SLURM_LAUNCH_NODE_IPADDR": "10.1.2.3"})
    assert node.master_addr == "10.1.2.3"  # reachable where node names do not resolve


def test_a_job_with_the_wrong_node_count_is_refused():
    hw = compose("+experiment=cot_8b", "hardware=910b_2x8").hardware
    with pytest.raises(NodeError, match="hardware.nnodes = 2, but Slurm job 5 has 3 node"):
        node_info(hw, {"SLURM_JOB_ID": "5", "SLURM_NODEID": "0", "SLURM_NNODES": "3"})


def test_single_node_runs_ignore_the_scheduler_and_multi_node_without_one_use_the_config():
    env = {"SLURM_JOB_ID": "5", "SLURM_NODEID": "3", "SLURM_NNODES": "4"}
    assert node_info(compose().hardware, env).rank == 0
    hw = compose("+experiment=cot_8b", "hardware=910b_2x8", "hardware.node_rank=1", "hardware.master_addr=h0").hardware
    node = node_info(hw, {})
    assert (node.rank, node.count, node.master_addr, node.source) == (1, 2, "h0", "config")
