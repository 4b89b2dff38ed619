"""``python -m navila_tune``: compose the config, validate it, plan the stages, run them.

``main`` is Hydra's entry point and stays thin; ``launch`` does the work and is what tests call.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from navila_tune.config import setup
from navila_tune.validate import ConfigError, Problem, check_inputs, validate

setup()

MINDSPEED_SCRIPTS = ("convert_ckpt.py", "preprocess_data.py", "posttrain_gpt.py", "inference.py")
NATIVE_MODULES = ("torch", "transformers", "safetensors", "megatron.core")


class LaunchError(RuntimeError):
    """A problem found before any stage ran; the message says what and how to fix it."""


def launch(cfg: DictConfig, run_dir: str | None = None) -> Any:
    """Validate, plan and (unless dry_run) execute; returns the run's objective for sweepers."""
    from navila_tune import cache, record, report
    from navila_tune.cluster.nodes import NodeError, node_info
    from navila_tune.executor import Executor, StageFailed, wait_for_leader
    from navila_tune.pipeline import build_plan, work_dir_of

    run_dir = run_dir or _hydra_run_dir()
    if cfg.plan:  # the planner's view first, so a refused run still shows its breakdown and options
        print(_planner_report(cfg), flush=True)
    layout = validate(cfg, extra_checks=_planner_checks())
    if cfg.plan:
        return None
    try:
        node = node_info(cfg.hardware)
    except NodeError as e:
        raise LaunchError(str(e)) from None
    run_id = _run_id(cfg, node.job_id)
    _apply_node(cfg, node, run_id)
    if not node.is_first and not cfg.dry_run:
        try:
            wait_for_leader(work_dir_of(cfg), run_id, console=print)
        except StageFailed as e:
            raise LaunchError(str(e)) from None
    plan = build_plan(cfg, layout, run_dir=run_dir)
    if node.is_first:
        record.write_config(run_dir, cfg)
        record.write_plan(run_dir, plan)
    statuses = cache.statuses(plan, cfg.force)
    mode = "dry run: nothing will run" if cfg.dry_run else "running"
    where = f", node {node.rank} of {node.count}" if node.count > 1 else ""
    title = (f"navila_tune {cfg.experiment_name}: backend {cfg.backend.name}, {len(plan.selected)} stage(s)"
             f"{where}; {mode}")
    print(record.format_plan(plan, statuses, title), flush=True)
    if cfg.dry_run:
        record.write_summary(run_dir, {"status": "dry_run", "stages": []})
        if cfg.cluster.mode == "sbatch":
            from navila_tune.cluster.slurm import write_chain

            print(write_chain(plan, cfg).describe(), flush=True)
        return None
    if cfg.cluster.mode == "sbatch":
        from navila_tune.cluster.slurm import submit_chain

        print(submit_chain(plan, cfg).describe(), flush=True)
        return None
    preflight(cfg)
    started = time.time()
    results = Executor(plan, force=list(cfg.force), node=node, run_id=run_id).run()
    rows = [{"name": r.name, "status": r.status, "duration_s": r.duration_s, "output": r.output, "log": r.log}
            for r in results]
    failed = [r for r in results if r.status == "failed"]
    summary: dict[str, Any] = {"status": "failed" if failed else "ok",
                               "duration_s": round(time.time() - started, 3), "stages": rows}
    if not node.is_first:
        record.write_summary(run_dir, summary, name=f"summary.node{node.rank}.json")
        if failed:
            raise LaunchError(failed[0].detail)
        return None
    collected = report.collect(plan, [r.name for r in results if r.status != "failed"])
    summary["metrics"] = metrics = report.headline(collected)
    record.write_summary(run_dir, summary)
    text = report.render(f"navila_tune {cfg.experiment_name}: {summary['status']} in {summary['duration_s']:.0f} s",
                         rows, collected)
    report.write(run_dir, text, collected)
    print("\n" + text + f"\nrun record: {run_dir}", flush=True)
    if failed:
        raise LaunchError(failed[0].detail)
    return metrics["accuracy"]


def _run_id(cfg: DictConfig, job_id: str | None) -> str:
    """Shared by every node of one launch: the scheduler's job id, hardware.rdzv_id, or the config's hash."""
    import hashlib

    from omegaconf import OmegaConf

    base = job_id or cfg.hardware.rdzv_id
    if base:
        return str(base)
    text = OmegaConf.to_yaml(cfg, resolve=True).replace(f"node_rank: {cfg.hardware.node_rank}", "")
    return "cfg-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _apply_node(cfg: DictConfig, node: Any, run_id: str) -> None:
    """Where this node meets the others (runtime keys only: fingerprints do not change)."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.hardware.node_rank = node.rank
        cfg.hardware.master_addr = node.master_addr
        cfg.hardware.rdzv_id = run_id


def preflight(cfg: DictConfig) -> None:
    """Before any stage: the backend's tools and the run's input files must be there."""
    problems: list[Problem] = []
    if cfg.backend.name == "mindspeed":
        ms = cfg.backend.mindspeed
        home = Path(ms.home)
        if not home.is_dir():
            problems.append(Problem("backend.mindspeed.home", str(home), "no such folder (MindSpeed-LLM checkout)",
                                    "set paths.mindspeed_home / backend.mindspeed.home; dry_run=true shows "
                                    "the plan without it"))
        else:
            missing = [s for s in MINDSPEED_SCRIPTS if not (home / s).is_file()]
            if missing:
                problems.append(Problem("backend.mindspeed.home", str(home), f"lacks {', '.join(missing)}",
                                        "point it at a MindSpeed-LLM 2.3.0 checkout"))
        if not Path(ms.env_script).is_file():
            problems.append(Problem("backend.mindspeed.env_script", ms.env_script,
                                    "no such file (the CANN toolkit environment script)",
                                    "install CANN or set backend.mindspeed.env_script; dry_run=true shows the "
                                    "plan without it"))
    else:
        missing = [m for m in NATIVE_MODULES if importlib.util.find_spec(m.split(".")[0]) is None]
        if missing:
            problems.append(Problem("backend.name", "native", f"needs {', '.join(missing)}, not installed",
                                    "pip install 'navila_tune[native]' (torch comes from your environment)"))
    if problems:
        raise ConfigError(problems, what="environment")
    from navila_tune.cluster.preflight import check_node

    check_node(cfg)
    check_inputs(cfg)


def _planner_checks() -> list[Any]:
    try:
        from navila_tune.planner import check_fits
    except ImportError:
        return []

    def memory(cfg: Any, layout: Any) -> list[Problem]:
        return [Problem(*p) for p in check_fits(cfg)]

    return [memory]


def _planner_report(cfg: Any) -> str:
    from navila_tune.planner import render_plan

    return render_plan(cfg)


def _hydra_run_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.output_dir
    return os.getcwd()


@hydra.main(version_base="1.3", config_path="pkg://navila_tune.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> Any:
    try:
        return launch(cfg)
    except (ConfigError, LaunchError) as e:
        print(f"navila_tune: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2 if isinstance(e, ConfigError) else 1) from None


def main() -> None:
    _hydra_main()
