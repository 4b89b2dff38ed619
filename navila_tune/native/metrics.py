"""Training metrics: one updating console line, ``metrics.jsonl``, TensorBoard events, a loss-curve PNG."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
LOSS_CURVE = "loss_curve.png"


class MetricsLogger:
    """Rank-0 sink. ``resume_from`` drops records past the resumed iteration so a resumed run reads clean."""

    def __init__(self, out_dir: str | os.PathLike, *, total_iters: int, start_iter: int, progress: bool,
                 resume_from: int | None = None) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / METRICS_FILE
        self._truncate(resume_from if resume_from is not None else 0)
        self._file = open(self.path, "a", encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(log_dir=str(self.dir / TENSORBOARD_DIR), purge_step=start_iter + 1)
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_iters, initial=start_iter, desc="train", unit="it",
                             dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def _truncate(self, keep_through: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= keep_through]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def log_train(self, record: dict[str, Any]) -> None:
        self._write(record)
        step = record["iteration"]
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s"):
            if key in record:
                self._tb.add_scalar(f"train/{key}", record[key], step)
        if self._bar is not None:
            self._bar.set_postfix_str(
                f"loss={record['loss']:.4f} lr={record['lr']:.3g} gnorm={record['grad_norm']:.3g} "
                f"tok/s={record['tokens_per_s']:.0f} samples/s={record['samples_per_s']:.1f} "
                f"left={_hms(record['remaining_s'])}", refresh=False)
        else:
            print(f"iteration {step}/{record['train_iters']} | loss {record['loss']:.4f} | lr "
                  f"{record['lr']:.3g} | grad norm {record['grad_norm']:.3g} | {record['tokens_per_s']:.0f} "
                  f"tokens/s | {record['samples_per_s']:.1f} samples/s | elapsed {_hms(record['elapsed_s'])}"
                  f" | remaining {_hms(record['remaining_s'])}", flush=True)

    def log_eval(self, record: dict[str, Any]) -> None:
        self._write(record)
        self._tb.add_scalar("eval/loss", record["eval_loss"], record["iteration"])
        self._tb.add_scalar("eval/ppl", record["eval_ppl"], record["iteration"])
        self.message(f"eval at iteration {record['iteration']}: loss {record['eval_loss']:.4f} "
                     f"ppl {record['eval_ppl']:.3f}")

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, flush=True)

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._tb.flush()
        self._tb.close()
        self._file.close()

    def plot(self) -> Path | None:
        return plot_loss_curve(self.path, self.dir / LOSS_CURVE)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curve(metrics_path: str | os.PathLike, png_path: str | os.PathLike) -> Path | None:
    """Train loss (per log interval) and eval loss against iteration, written atomically; the loss axis is
    logarithmic when the loss falls by 100x or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["iteration"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["iteration"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", markersize=4)
    ax.set_xlabel("iteration")
    losses = [v for _, v in train + evals if v > 0]
    if losses and max(losses) / min(losses) >= 100:  # a fall over decades reads on a log axis
        ax.set_yscale("log")
        ax.set_ylabel("loss (log scale)")
    else:
        ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    out = Path(png_path)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"
