#!/usr/bin/env python3
"""A new user's first command, timed: the README's `bash scripts/demo.sh` on a fresh clone.

In one run:
1. `git clone` this repository's HEAD into a temporary folder (nothing of this checkout comes along:
   no .venv, no outputs);
2. `bash scripts/demo.sh` there: creates .venv from the cached wheels (pip's configured wheel folder
   and local index), installs the package, runs `python -m navila_tune` (the embedded default);
3. `python -m navila_tune` again in that ready environment, with a fresh run dir and work dir, so every
   stage runs again (environment ready, nothing cached).

Prints each time, its target (3 min and 90 s), the ratio to the target, the split of command 1 into
environment creation and pipeline, each stage's share, and the accuracy the run reported.

    python benchmarks/bench_first_command.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_FIRST = 180.0
TARGET_READY = 90.0


def timed(argv: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(argv, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed with exit code {proc.returncode}; its output: {log}")
    return elapsed


def run_summary(run_dir: Path) -> tuple[dict[str, float], dict]:
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = {s["name"]: s["duration_s"] for s in summary["stages"]}
    metrics = json.loads((run_dir / "stages" / "evaluate" / "metrics.json").read_text())
    return stages, metrics


def newest_run(clone: Path) -> Path:
    runs = sorted((clone / "outputs" / "runs" / "cot_tiny").iterdir())
    return runs[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (path is printed)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="navila-first-"))
    clone = tmp / "navila_tune"
    try:
        subprocess.run(["git", "clone", "--quiet", "--no-local", str(REPO), str(clone)], check=True)
        first = timed(["bash", "scripts/demo.sh"], clone, tmp / "first.log")
        first_stages, first_metrics = run_summary(newest_run(clone))
        ready = timed([str(clone / ".venv" / "bin" / "python"), "-m", "navila_tune", "hydra.run.dir=ready_run",
                       f"paths.work_dir={tmp / 'work2'}"], clone, tmp / "ready.log")
        ready_stages, ready_metrics = run_summary(clone / "ready_run")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    pipeline = sum(first_stages.values())
    print(f"{'measure':44s} {'seconds':>8s} {'target':>7s} {'ratio':>6s}")
    print(f"{'README command 1, fresh clone (env + run)':44s} {first:8.1f} {TARGET_FIRST:7.0f} "
          f"{first / TARGET_FIRST:6.2f}")
    print(f"{'  of which: stages of the run':44s} {pipeline:8.1f}")
    print(f"{'  of which: env creation, imports, plan':44s} {first - pipeline:8.1f}")
    print(f"{'python -m navila_tune, env ready':44s} {ready:8.1f} {TARGET_READY:7.0f} {ready / TARGET_READY:6.2f}")
    print()
    total = sum(ready_stages.values())
    print("stages of the env-ready run:")
    for name, seconds in ready_stages.items():
        print(f"  {name:11s} {seconds:6.1f} s  {seconds / total:5.1%}")
    for label, metrics in (("first", first_metrics), ("ready", ready_metrics)):
        base, tuned = metrics["base"], metrics["finetuned"]
        print(f"{label} run: accuracy {base['answer_accuracy']:.1%} -> {tuned['answer_accuracy']:.1%}, "
              f"NaVILA parse rate {base['navila_parse_rate']:.1%} -> {tuned['navila_parse_rate']:.1%}")
    if args.keep:
        print(f"kept: {tmp}")


if __name__ == "__main__":
    main()
