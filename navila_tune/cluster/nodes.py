"""This process's node in a multi-node run: rank, node count, rendezvous host.

Read from the scheduler's environment when it says so (Slurm: SLURM_NODEID, SLURM_NNODES,
SLURM_JOB_NODELIST / SLURM_LAUNCH_NODE_IPADDR), otherwise from the hardware group.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

# Stages that run on every node (one torchrun agent per node); every other stage runs on node 0 only
# and the other nodes wait for its completion marker.
ALL_NODES = ("train",)


@dataclass(frozen=True)
class NodeInfo:
    rank: int
    count: int
    master_addr: str
    source: str  # "slurm" or "config"
    job_id: str | None = None

    @property
    def is_first(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list such as ``gpu[03-05,07],login1`` -> ``gpu03``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        return nodelist
    prefix, ranges = m.group(1), m.group(3)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


class NodeError(RuntimeError):
    pass


def node_info(hardware: Any, env: Mapping[str, str] | None = None) -> NodeInfo:
    """Single-node runs are node 0 of 1 wherever they run; multi-node runs ask the scheduler first."""
    env = os.environ if env is None else env
    if int(hardware.nnodes) > 1 and "SLURM_JOB_ID" in env and "SLURM_NODEID" in env:
        count = int(env.get("SLURM_NNODES", "1"))
        if count != int(hardware.nnodes):
            raise NodeError(f"hardware.nnodes = {hardware.nnodes}, but Slurm job {env['SLURM_JOB_ID']} has {count} "
                            f"node(s); submit with --nodes {hardware.nnodes} or set hardware.nnodes={count}")
        # The launching node's address is reachable even where node names do not resolve.
        master = env.get("SLURM_LAUNCH_NODE_IPADDR") or first_host(env.get("SLURM_JOB_NODELIST", "localhost"))
        return NodeInfo(rank=int(env["SLURM_NODEID"]), count=count, master_addr=master, source="slurm",
                        job_id=env["SLURM_JOB_ID"])
    return NodeInfo(rank=int(hardware.node_rank or 0), count=int(hardware.nnodes),
                    master_addr=str(hardware.master_addr), source="config")
