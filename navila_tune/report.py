"""The short report at the end of a run: what ran, what it measured, where the results are.

Reads the stage outputs (train's result and loss curve, evaluate's metrics and generations, export's
folder), prints a console summary and writes ``report.md`` and ``loss_curve.png`` into the run dir.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from navila_tune import artifacts
from navila_tune.plan import Plan

EXAMPLES = 3


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path, limit: int) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    rows.append(json.loads(line))
                if len(rows) >= limit:
                    break
    except OSError:
        pass
    return rows


def collect(plan: Plan, ran: Sequence[str]) -> dict[str, Any]:
    """Metrics of this run's stages (ran or reused), read from their outputs."""
    out: dict[str, Any] = {}
    names = set(ran)
    if "train" in names:
        train = _read_json(Path(plan.stage("train").output) / "result.json") or {}
        out["train"] = {k: train.get(k) for k in ("final_loss", "eval_loss", "eval_loss_initial", "iterations",
                                                  "tokens_per_s", "samples_per_s", "train_time_s")}
        curve = Path(plan.stage("train").output) / "loss_curve.png"
        out["loss_curve"] = str(curve) if curve.exists() else None
    if "evaluate" in names:
        metrics = _read_json(Path(plan.stage("evaluate").output) / artifacts.METRICS) or {}
        out["evaluate"] = {label: {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
                           for label, m in metrics.items()}
        out["examples"] = _read_jsonl(Path(plan.stage("evaluate").output) / "finetuned.generations.jsonl", 200)
    elif "generate" in names:
        out["examples"] = _read_jsonl(Path(plan.stage("generate").output) / artifacts.GENERATIONS, EXAMPLES)
    if "export" in names:
        out["export"] = str(Path(plan.stage("export").output) / artifacts.HF_EXPORT)
    return out


def headline(collected: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a sweep ranks by."""
    ev = collected.get("evaluate", {}).get("finetuned", {})
    train = collected.get("train", {})
    return {"accuracy": ev.get("answer_accuracy"), "parse_rate": ev.get("navila_parse_rate"),
            "eval_loss": ev.get("loss", train.get("eval_loss")), "final_loss": train.get("final_loss")}


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def _pick_examples(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to three examples, showing a mistake too if there is one (honest, not cherry-picked)."""
    wrong = [r for r in rows if r.get("exact_match") is False][:1]
    right = [r for r in rows if r.get("exact_match") is not False][:EXAMPLES - len(wrong)]
    return right + wrong


def render(title: str, stages: Sequence[dict[str, Any]], collected: dict[str, Any]) -> str:
    lines = [f"# {title}", "", "| stage | status | time | output |", "|---|---|---|---|"]
    for s in stages:
        lines.append(f"| {s['name']} | {s['status']} | {s['duration_s']:.1f} s | `{s['output']}` |")
    ev = collected.get("evaluate")
    if ev:
        base, tuned = ev.get("base", {}), ev.get("finetuned", {})
        n = tuned.get("num_samples", "?")
        lines += ["", f"Held-out evaluation ({n} samples never seen in training):", "",
                  "| | before fine-tuning | after |", "|---|---|---|",
                  f"| final-answer accuracy | {_pct(base.get('answer_accuracy'))} | "
                  f"{_pct(tuned.get('answer_accuracy'))} |",
                  f"| NaVILA parse rate | {_pct(base.get('navila_parse_rate'))} | "
                  f"{_pct(tuned.get('navila_parse_rate'))} |",
                  f"| held-out loss | {_num(base.get('loss'))} | {_num(tuned.get('loss'))} |",
                  f"| 'stop' before the final line (NaVILA would misread) | {base.get('stop_hazard_count', '-')} | "
                  f"{tuned.get('stop_hazard_count', '-')} |"]
    train = collected.get("train")
    if train:
        lines += ["", f"Training: {train.get('iterations')} iterations, final loss {_num(train.get('final_loss'))}, "
                      f"held-out loss {_num(train.get('eval_loss_initial'))} -> {_num(train.get('eval_loss'))}, "
                      f"{_num(train.get('tokens_per_s'))} tokens/s."]
    if collected.get("loss_curve"):
        lines += ["", "Loss curve: `loss_curve.png`"]
    examples = _pick_examples(collected.get("examples", []))
    if examples:
        lines += ["", "Example generations:"]
        for i, ex in enumerate(examples, 1):
            prompt = ex.get("prompt", "").replace("\n", " / ")
            mark = "" if "exact_match" not in ex else (" (correct)" if ex["exact_match"] else
                                                        f" (WRONG: expected {ex.get('reference_answer')})")
            lines += ["", f"{i}. prompt: {prompt}", "   answer: " + ex.get("generation", "").replace("\n", "\n   ") + mark]
    if collected.get("export"):
        lines += ["", f"Exported HF model for NaVILA: `{collected['export']}`"]
    return "\n".join(lines) + "\n"


def write(run_dir: str, text: str, collected: dict[str, Any]) -> None:
    Path(run_dir, "report.md").write_text(text)
    if collected.get("loss_curve"):
        shutil.copy2(collected["loss_curve"], Path(run_dir, "loss_curve.png"))
