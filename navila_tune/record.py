"""The run record in the Hydra run dir: resolved config, plan.json, summary; and their console views."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from navila_tune.plan import Command, Plan, Stage


def write_config(run_dir: str, cfg: Any) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def write_plan(run_dir: str, plan: Plan) -> None:
    (Path(run_dir) / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1, default=str))


def write_summary(run_dir: str, summary: dict[str, Any], name: str = "summary.json") -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / name).write_text(json.dumps(summary, indent=1, default=str))


def format_argv(argv: Sequence[str], indent: str = "      ") -> str:
    """Shell-quoted argv, one ``--flag value...`` group per line, for reading (not for pasting as code)."""
    groups: list[list[str]] = []
    for token in argv:
        if token.startswith("-") and not _is_number(token) or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    lines = [shlex.join(g) for g in groups]
    out, line = [], ""
    for piece in lines:
        if line and (piece.startswith("-") and len(line) + len(piece) > 100 or not piece.startswith("-")):
            out.append(line)
            line = piece
        else:
            line = f"{line} {piece}".strip()
    out.append(line)
    return (" \\\n" + indent + "  ").join(out)


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def format_stage(stage: Stage, index: int, total: int, status: str) -> str:
    lines = [f"[{index}/{total}] {stage.name}  ({status})",
             f"    fingerprint {stage.fingerprint}  output {stage.output}"]
    if stage.upstream:
        lines.append(f"    after:  {', '.join(stage.upstream)}")
    if stage.inputs:
        lines.append(f"    reads:  {', '.join(stage.inputs)}")
    for step in stage.steps:
        if isinstance(step, Command):
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env.items())
            if step.env_script:
                env = f"{env} + variables exported by {step.env_script}".strip()
            lines.append(f"    cwd:    {step.cwd}")
            if env:
                lines.append(f"    env:    {env}")
            lines.append("    $ " + format_argv(step.argv))
            if step.stdin is not None:
                shown = step.stdin.rstrip("\n").replace("\n", " | ")
                lines.append(f"      <<< stdin: {shown}")
        else:
            lines.append(f"    $ {step.display()}")
    return "\n".join(lines)


def format_plan(plan: Plan, statuses: dict[str, str], title: str) -> str:
    selected = [s for s in plan.stages if s.name in plan.selected]
    parts = [title, f"work dir: {plan.work_dir}", f"run dir:  {plan.run_dir}", ""]
    for i, stage in enumerate(selected, 1):
        parts.append(format_stage(stage, i, len(selected), statuses.get(stage.name, "will run")))
        parts.append("")
    return "\n".join(parts)


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{'stage':<{width}}  {'status':<7}  {'time':>8}  output"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['status']:<7}  {r['duration_s']:>7.1f}s  {r['output']}")
    return "\n".join(lines)
