"""torchrun (``python -m torch.distributed.run``) arguments, the same for every backend."""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_PORT = 29500


def torchrun_args(nproc: int, nnodes: int, rt: Mapping[str, Any]) -> list[str]:
    """Launcher arguments for ``nproc`` processes on each of ``nnodes`` nodes.

    ``rt`` holds the stage's runtime keys: with ``hardware.rdzv_backend`` (c10d) the nodes meet at
    ``master_addr:master_port`` under ``rdzv_id`` and torchrun assigns node ranks; without it the rank
    of this node and a static master address are given.
    """
    host = rt.get("hardware.master_addr") or "127.0.0.1"
    port = rt.get("hardware.master_port") or DEFAULT_PORT
    args = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", str(nnodes)]
    if rt.get("hardware.rdzv_backend") and nnodes > 1:
        args += ["--rdzv_backend", str(rt["hardware.rdzv_backend"]), "--rdzv_endpoint", f"{host}:{port}",
                 "--rdzv_id", str(rt.get("hardware.rdzv_id") or "navila_tune")]
    else:
        args += ["--node_rank", str(rt.get("hardware.node_rank") or 0), "--master_addr", str(host),
                 "--master_port", str(port)]
    return args
