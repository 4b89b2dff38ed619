"""Render stages for the native backend: one job file and one command per stage.

The job file holds the stage's params, runtime settings, output folder and upstream outputs; the
command runs the stage runner on it, under torchrun when training uses more than one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

from navila_tune.plan import Command, FileOp, StagePaths, StageSpec, Step

RUNNER = "navila_tune.backends.native.run"
JOB_FILE = "job.json"


class NativeBackend:
    name = "native"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def render(self, spec: StageSpec, out: str, paths: StagePaths) -> list[Step]:
        job = {
            "stage": spec.name,
            "params": dict(spec.params),
            "runtime": dict(spec.runtime),
            "output": out,
            "upstream": {name: paths.output(name) for name in spec.upstream},
        }
        job_file = str(Path(out) / JOB_FILE)
        argv = [self.python, *self._launcher(spec), "-m", RUNNER, job_file]
        return [
            FileOp("write", job_file, content=json.dumps(job, indent=1, sort_keys=True)),
            Command(argv=tuple(argv), cwd=out),
        ]

    def _launcher(self, spec: StageSpec) -> list[str]:
        if spec.name != "train":
            return []
        p, rt = spec.params, spec.runtime
        nproc, nnodes = p["hardware.devices_per_node"], p["hardware.nnodes"]
        if nproc * nnodes == 1:
            return []
        return torchrun_args(nproc, nnodes, rt)


def torchrun_args(nproc: int, nnodes: int, rt: Mapping[str, Any]) -> list[str]:
    args = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", str(nnodes)]
    host, port = rt.get("hardware.master_addr") or "127.0.0.1", rt.get("hardware.master_port") or 29500
    if rt.get("hardware.rdzv_backend"):
        args += ["--rdzv_backend", str(rt["hardware.rdzv_backend"]), "--rdzv_endpoint", f"{host}:{port}"]
    else:
        args += ["--node_rank", str(rt.get("hardware.node_rank") or 0), "--master_addr", str(host),
                 "--master_port", str(port)]
    return args
