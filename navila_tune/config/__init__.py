"""Config composition: schemas, resolvers and a compose helper for tools and tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from navila_tune.config.schema import register_configs

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
CONF_PACKAGE = "navila_tune.conf"


def asset_path(name: str) -> str:
    """Absolute path of a data asset shipped inside the package (``${navila_asset:NAME}``)."""
    return str(ASSETS_DIR / name)


SWEPT_KEYS_ENV = "NAVILA_SWEPT_KEYS"  # set by navila_tune.sweep.SweepCallback when a multirun starts


def dirname_safe(override_dirname: str, task_overrides: Sequence[str] = ()) -> str:
    """A sweep job's folder name: its swept keys' values (all its overrides when those are unknown),
    with no path separators and a bounded length."""
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    picked = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    text = ",".join(picked) if picked else override_dirname
    safe = text.replace("/", "_").replace(" ", "") or "default"
    return safe if len(safe) <= 120 else safe[:100] + "-" + hashlib.sha256(safe.encode()).hexdigest()[:8]


def slurm_minutes(time: str) -> int:
    """Slurm time ``[D-]HH:MM:SS`` (or ``MM``) as minutes, for the submitit launcher's timeout."""
    days, _, clock = str(time).rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts = [0, *parts] if len(parts) == 2 else [0, parts[0], 0]
    hours, minutes, seconds = parts
    return (int(days or 0) * 24 + hours) * 60 + minutes + (1 if seconds else 0)


def slurm_resources(kind: str, accelerator: str, devices: int) -> object:
    """What one node asks Slurm for: a CPU per process on CPU runs, GPUs as gpus, NPUs as gres."""
    if kind == "cpus":
        return int(devices) if accelerator == "cpu" else None
    if kind == "gpus":
        return int(devices) if accelerator == "cuda" else None
    if kind == "gres":
        return f"npu:{int(devices)}" if accelerator == "npu" else None
    raise ValueError(kind)


def setup() -> None:
    """Register schemas and resolvers once per process."""
    if not OmegaConf.has_resolver("navila_asset"):
        OmegaConf.register_new_resolver("navila_asset", asset_path)
    if not OmegaConf.has_resolver("navila_dirname"):
        OmegaConf.register_new_resolver("navila_dirname", dirname_safe)
    if not OmegaConf.has_resolver("navila_minutes"):
        OmegaConf.register_new_resolver("navila_minutes", slurm_minutes)
        OmegaConf.register_new_resolver("navila_slurm", slurm_resources)
    register_configs()


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose the config as ``python -m navila_tune OVERRIDES`` would, without running anything."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    setup()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
