"""From resolved config to plan: pick the backend, build the stage specs, fingerprint and render them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from navila_tune.layout import Layout
from navila_tune.plan import FileIdentity, Plan, assemble, file_identity
from navila_tune.stages import stage_specs
from navila_tune.validate import BACKEND_STAGES


def backend_for(cfg: Any) -> Any:
    """The backend named by ``backend.name`` (an explicit key; nothing is sniffed)."""
    if cfg.backend.name == "mindspeed":
        from navila_tune.backends.mindspeed import MindSpeedBackend

        hardware = OmegaConf.to_container(cfg.hardware, resolve=True)
        return MindSpeedBackend(OmegaConf.to_container(cfg.backend.mindspeed, resolve=True), hardware)
    from navila_tune.backends.native import NativeBackend

    return NativeBackend()


def work_dir_of(cfg: Any) -> str:
    return str(Path(os.path.expanduser(cfg.paths.work_dir)).resolve())


def build_plan(cfg: Any, layout: Layout, *, run_dir: str, identify: FileIdentity = file_identity) -> Plan:
    """Every stage of the pipeline the backend supports; ``cfg.stages`` says which ones run."""
    backend = backend_for(cfg)
    supported = BACKEND_STAGES[cfg.backend.name]
    specs = [s for s in stage_specs(cfg, layout) if s.name in supported]
    plan = assemble(specs, backend=backend.name, backend_params=backend.params, render=backend.render,
                    work_dir=work_dir_of(cfg), run_dir=run_dir, identify=identify)
    return Plan(stages=plan.stages, work_dir=plan.work_dir, run_dir=plan.run_dir,
                selected=tuple(s for s in cfg.stages if s in supported))
