"""Hydra callback for multiruns: validate every point before any runs, summarise and rank them after.

Registered in conf/config.yaml under ``hydra.callbacks``. With Hydra's basic sweeper all points are
known up front and validated together; for a sweeper that samples points as it goes (optuna) every
combination of each choice's values and each interval's ends is validated up front, and each trial is
validated again when it starts, like a single run. Job folders are named by the swept values.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from navila_tune.config import SWEPT_KEYS_ENV
from navila_tune.validate import ConfigError

METRICS = ("accuracy", "parse_rate", "eval_loss", "final_loss")
MAX_CHECKED_POINTS = 256  # search-space corners validated before a sampling sweeper's first trial


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(config))
        basic = "BasicSweeper" in str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
        bad = []
        for overrides in (sweep_points(config) if basic else search_space_corners(config)):
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
        rows = collect(sweep_dir, swept_keys(config))
        if not rows or all(r.get("status") == "dry_run" for r in rows):
            return
        write_summary(sweep_dir, rows)
        print("\n" + format_table(rank(rows)), flush=True)
        print(f"sweep summary: {sweep_dir / 'sweep_summary.md'}", flush=True)


def _parse(texts: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(texts)


def _sweep_overrides(config: DictConfig) -> list[Any]:
    """The sweeping overrides: from the command line, and a sampler's search space (hydra.sweeper.params)."""
    texts = list(config.hydra.overrides.task)
    params = OmegaConf.select(config, "hydra.sweeper.params")
    if params:
        texts += [f"{key}={value}" for key, value in params.items()]
    return [o for o in _parse(texts) if o.is_sweep_override()]


def swept_keys(config: DictConfig) -> list[str]:
    """Config keys that vary across the sweep's jobs, in command-line order."""
    return list(dict.fromkeys(o.get_key_element().lstrip("+~") for o in _sweep_overrides(config)))


def sweep_points(config: DictConfig) -> list[list[str]]:
    """Every job's override list, expanded as Hydra's basic sweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(_parse(list(config.hydra.overrides.task)), None)
    return [list(job) for batch in batches for job in batch]


def _interval_ends(sweep: Any) -> list[str]:
    """An interval's two ends as override values (integers stay integers, as optuna samples them)."""
    ends = [sweep.start, sweep.end]
    if all(isinstance(v, int) for v in ends):
        return [str(v) for v in ends]
    return [repr(float(v)) for v in ends]


def search_space_corners(config: DictConfig) -> list[list[str]]:
    """For a sampling sweeper (optuna): every combination of each choice's values and each interval's ends.

    Trials are drawn later, one at a time; checking the corners up front catches a search space that
    holds invalid values (a micro-batch that does not divide the global batch, say) before any trial.
    """
    import itertools

    from hydra.core.override_parser.types import IntervalSweep

    fixed = [o.input_line for o in _parse(list(config.hydra.overrides.task)) if not o.is_sweep_override()]
    axes = []
    for o in _sweep_overrides(config):
        sweep = o.value()
        values = _interval_ends(sweep) if isinstance(sweep, IntervalSweep) else list(o.sweep_string_iterator())
        axes.append([f"{o.get_key_element()}={v}" for v in values])
    return [fixed + list(combo) for combo in itertools.islice(itertools.product(*axes), MAX_CHECKED_POINTS)]


def job_config(config: DictConfig, overrides: list[str]) -> DictConfig:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    cfg = loader.load_sweep_config(config, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def collect(sweep_dir: Path, keys: list[str] = ()) -> list[dict[str, Any]]:
    """One row per finished job: its folder, overrides, swept values (``keys``), status and headline metrics."""
    rows = []
    for summary_file in sorted(sweep_dir.glob("*/summary.json")):
        job_dir = summary_file.parent
        summary = json.loads(summary_file.read_text())
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        values = dict(o.split("=", 1) for o in overrides if "=" in o)
        row = {"job": job_dir.name, "overrides": " ".join(overrides), "status": summary.get("status"),
               "swept": {k: values[k] for k in keys if k in values}}
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
    keys = list(dict.fromkeys(k for r in ranked for k in r.get("swept", {})))
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["rank", "job", *keys, "overrides", "status", *METRICS])
        writer.writeheader()
        for i, r in enumerate(ranked):
            fields = {k: v for k, v in r.items() if k != "swept"}
            writer.writerow({"rank": i + 1, **r.get("swept", {}), **fields})
    md = ["| rank | job | status | " + " | ".join(METRICS) + " |", "|---" * (3 + len(METRICS)) + "|"]
    for i, r in enumerate(ranked):
        md.append(f"| {i + 1} | {r['job']} | {r['status']} | " + " | ".join(_fmt(r.get(m)) for m in METRICS) + " |")
    (sweep_dir / "sweep_summary.md").write_text("\n".join(md) + "\n")
    plot(sweep_dir, rows)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Eval loss and accuracy against the swept value (a numeric axis when one number is swept)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    swept = [r.get("swept") or {} for r in rows]
    keys = sorted({k for s in swept for k in s})
    numeric = [_number(s.get(keys[0], "")) for s in swept] if len(keys) == 1 else [None]
    fig, ax1 = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 3.8))
    if None not in numeric:
        order = sorted(range(len(rows)), key=lambda i: numeric[i])
        x = [numeric[i] for i in order]
        if min(x) > 0 and max(x) / min(x) >= 10:
            ax1.set_xscale("log")
        ax1.set_xlabel(keys[0])
    else:
        order = list(range(len(rows)))
        x = order
        labels = [",".join(f"{k}={v}" for k, v in swept[i].items()) or rows[i]["job"] for i in order]
        ax1.set_xticks(x)
        ax1.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)

    def series(metric: str) -> list[float]:
        return [rows[i].get(metric) if rows[i].get(metric) is not None else float("nan") for i in order]

    ax1.plot(x, series("eval_loss"), "o-", color="tab:blue", label="eval loss")
    ax1.set_ylabel("held-out loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(x, series("accuracy"), "s--", color="tab:orange", label="accuracy")
    ax2.set_ylabel("final-answer accuracy", color="tab:orange")
    ax1.set_title("sweep: held-out loss and accuracy per point")
    fig.tight_layout()
    fig.savefig(sweep_dir / "sweep_summary.png", dpi=120)
    plt.close(fig)
