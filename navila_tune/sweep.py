"""Hydra callback for multiruns: validate every point before any runs, summarise and rank them after.

Registered in conf/config.yaml under ``hydra.callbacks``. With Hydra's basic sweeper all points are
known up front and validated together; a sweeper that samples points as it goes (optuna) validates each
trial when it starts, like a single run.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from navila_tune.validate import ConfigError

METRICS = ("accuracy", "parse_rate", "eval_loss", "final_loss")


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "BasicSweeper" not in str(OmegaConf.select(config, "hydra.sweeper._target_") or ""):
            return
        bad = []
        for overrides in sweep_points(config):
            try:
                from navila_tune.app import _planner_checks
                from navila_tune.validate import validate

                validate(job_config(config, overrides), extra_checks=_planner_checks())
            except ConfigError as e:
                bad.append(f"point {' '.join(overrides)}:\n    " + str(e).replace("\n", "\n    "))
        if bad:
            # Hydra turns a callback's exceptions into warnings; SystemExit stops the sweep before any job.
            print(f"navila_tune: {len(bad)} of the sweep's points are invalid; nothing was run\n" + "\n".join(bad),
                  file=sys.stderr, flush=True)
            raise SystemExit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows or all(r.get("status") == "dry_run" for r in rows):
            return
        write_summary(sweep_dir, rows)
        print("\n" + format_table(rank(rows)), flush=True)
        print(f"sweep summary: {sweep_dir / 'sweep_summary.md'}", flush=True)


def sweep_points(config: DictConfig) -> list[list[str]]:
    """Every job's override list, expanded as Hydra's basic sweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = parser.parse_overrides(list(config.hydra.overrides.task))
    batches = BasicSweeper.split_arguments(overrides, None)
    return [list(job) for batch in batches for job in batch]


def job_config(config: DictConfig, overrides: list[str]) -> DictConfig:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    cfg = loader.load_sweep_config(config, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for summary_file in sorted(sweep_dir.glob("*/summary.json")):
        job_dir = summary_file.parent
        summary = json.loads(summary_file.read_text())
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        row = {"job": job_dir.name, "overrides": " ".join(overrides), "status": summary.get("status")}
        row.update({k: summary.get("metrics", {}).get(k) for k in METRICS})
        rows.append(row)
    return rows


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: highest held-out accuracy, then lowest eval loss; failed points last."""

    def key(r: dict[str, Any]) -> tuple:
        acc = r.get("accuracy")
        loss = r.get("eval_loss")
        return (r.get("status") != "ok", -(acc if acc is not None else -1.0),
                loss if loss is not None and not math.isnan(loss) else math.inf)

    return sorted(rows, key=key)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ["rank", "job", "status", *METRICS]
    table = [[str(i + 1), r["job"], str(r["status"]), *(_fmt(r.get(m)) for m in METRICS)] for i, r in enumerate(rows)]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in table]
    return "\n".join(lines)


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    ranked = rank(rows)
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rank", "job", "overrides", "status", *METRICS])
        writer.writeheader()
        for i, r in enumerate(ranked):
            writer.writerow({"rank": i + 1, **r})
    md = ["| rank | job | status | " + " | ".join(METRICS) + " |", "|---" * (3 + len(METRICS)) + "|"]
    for i, r in enumerate(ranked):
        md.append(f"| {i + 1} | {r['job']} | {r['status']} | " + " | ".join(_fmt(r.get(m)) for m in METRICS) + " |")
    (sweep_dir / "sweep_summary.md").write_text("\n".join(md) + "\n")
    plot(sweep_dir, rows)


def plot(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Eval loss and accuracy against the swept values (one point per job)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    labels = [r["job"].split("_", 1)[-1] for r in rows]
    x = list(range(len(rows)))
    fig, ax1 = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 3.5))
    loss = [r.get("eval_loss") if r.get("eval_loss") is not None else float("nan") for r in rows]
    ax1.plot(x, loss, "o-", color="tab:blue", label="eval loss")
    ax1.set_ylabel("held-out loss", color="tab:blue")
    ax2 = ax1.twinx()
    acc = [r.get("accuracy") if r.get("accuracy") is not None else float("nan") for r in rows]
    ax2.plot(x, acc, "s--", color="tab:orange", label="accuracy")
    ax2.set_ylabel("final-answer accuracy", color="tab:orange")
    ax1.set_xticks(x)
    ax1.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax1.set_title("sweep: held-out loss and accuracy per point")
    fig.tight_layout()
    fig.savefig(sweep_dir / "sweep_summary.png", dpi=120)
    plt.close(fig)
