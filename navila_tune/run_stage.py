"""Run one stage of a recorded run: ``python -m navila_tune.run_stage RUN_DIR STAGE``.

This is what a scheduler job executes (the sbatch scripts of ``cluster=slurm``). It rebuilds the plan
from the run's resolved ``config.yaml`` on the node it runs on, so the launcher arguments name this
job's nodes (rendezvous host, node rank), checks that every fingerprint equals the recorded
``plan.json`` (inputs changed since submission are an error, not a silent rebuild), and runs the stage
with the same executor as a local run: lock, ``.partial`` folder, completion marker, reuse.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from navila_tune.config import setup
from navila_tune.config.schema import GROUPS, NavilaTuneConfig


def load_config(run_dir: Path) -> Any:
    """The run's resolved config, typed by the schemas again."""
    base = OmegaConf.structured(NavilaTuneConfig)
    for group, schema in GROUPS.items():
        base[group] = OmegaConf.structured(schema)
    return OmegaConf.merge(base, OmegaConf.load(run_dir / "config.yaml"))


def main(argv: list[str] | None = None) -> int:
    from navila_tune.app import _apply_node, _run_id, preflight
    from navila_tune.cluster.nodes import node_info
    from navila_tune.executor import Executor, wait_for_leader
    from navila_tune.pipeline import build_plan
    from navila_tune.plan import Plan
    from navila_tune.validate import validate

    ap = argparse.ArgumentParser(prog="python -m navila_tune.run_stage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="the run dir (holds config.yaml and plan.json)")
    ap.add_argument("stage", help="the stage to run; its upstream stages must be complete")
    args = ap.parse_args(argv)
    setup()
    cfg = load_config(args.run_dir)
    recorded = json.loads((args.run_dir / "plan.json").read_text())
    names = [s["name"] for s in recorded["stages"]]
    if args.stage not in names:
        ap.error(f"no stage {args.stage!r} in {args.run_dir / 'plan.json'} (stages: {', '.join(names)})")
    layout = validate(cfg)
    preflight(cfg)
    node = node_info(cfg.hardware)
    run_id = f"{_run_id(cfg, node.job_id)}-{args.stage}"
    _apply_node(cfg, node, run_id)
    if not node.is_first:
        wait_for_leader(recorded["work_dir"], run_id)
    plan = build_plan(cfg, layout, run_dir=str(args.run_dir))
    drift = [s.name for s, r in zip(plan.stages, recorded["stages"]) if s.fingerprint != r["fingerprint"]]
    if drift:
        print(f"navila_tune: the fingerprints of {drift} differ from {args.run_dir / 'plan.json'}: their config "
              f"or input files changed since the chain was submitted; submit the run again", file=sys.stderr)
        return 2
    one = Plan(stages=plan.stages, work_dir=plan.work_dir, run_dir=plan.run_dir, selected=(args.stage,))
    results = Executor(one, force=[args.stage] if args.stage in cfg.force else [], node=node,
                       run_id=run_id).run()
    for r in results:
        print(f"[{r.name}] {r.status} in {r.duration_s:.1f}s: {r.output}", flush=True)
        if r.status == "failed":
            print(r.detail, file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
