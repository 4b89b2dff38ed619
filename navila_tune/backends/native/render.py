"""Render stages for the native backend: one job file and one command per stage.

The job file holds the stage's params, runtime settings, output folder and upstream outputs; the
command runs the stage runner on it, under torchrun when training uses more than one process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from navila_tune.cluster.torchrun import torchrun_args
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
