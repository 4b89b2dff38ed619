#!/usr/bin/env python3
"""Wall time of `python -m navila_tune +experiment=cot_8b dry_run=true`, next to composing alone.

Runs, interleaved N times each: a bare interpreter start; Hydra composing the same config with
`--cfg job` (composes and prints, no job); the same Hydra app running an empty task (compose plus
Hydra's own job set-up: run dir, .hydra files, logging), which is "composing the config alone" as a
run; and the full dry run (validate, plan, fingerprint, render, parse every rendered command with the
MindSpeed flag reference, write the run record).
Targets: dry run under 1 s after interpreter start, and under 0.2 s more than composing alone.

    python benchmarks/bench_dry_run.py [-n 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMPTY_TASK = """
import hydra
from navila_tune.config import setup
setup()

@hydra.main(version_base="1.3", config_path="pkg://navila_tune.conf", config_name="config")
def main(cfg):
    pass

main()
"""
PATHS = ["paths.models=/models", "paths.data=/datasets", "paths.mindspeed_home=/opt/MindSpeed-LLM",
         "paths.work_dir=/tmp/navila-bench-work"]


def timed(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10)
    n = ap.parse_args().n
    py = sys.executable
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as cwd:
        (Path(cwd) / "empty_task.py").write_text(EMPTY_TASK)
        cases = {
            "interpreter": [py, "-c", "pass"],
            "compose (--cfg job)": [py, "-m", "navila_tune", "+experiment=cot_8b", *PATHS, "--cfg", "job"],
            "compose + empty task": [py, "empty_task.py", "+experiment=cot_8b", *PATHS, "hydra.run.dir=run0"],
            "dry run": [py, "-m", "navila_tune", "+experiment=cot_8b", "dry_run=true", *PATHS,
                        "hydra.run.dir=run"],
        }
        times = {k: [] for k in cases}
        for _ in range(n):
            for name, argv in cases.items():
                times[name].append(timed(argv, cwd))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<22} median {v:6.3f} s   min {min(times[k]):6.3f} s   (n={n})")
    after_start = med["dry run"] - med["interpreter"]
    over_compose = med["dry run"] - med["compose + empty task"]
    print(f"dry run after interpreter start:          {after_start:.3f} s  (target < 1.0 s)  "
          f"{'OK' if after_start < 1.0 else 'MISSED'}")
    print(f"dry run minus compose + empty task:       {over_compose:.3f} s  (target < 0.2 s)  "
          f"{'OK' if over_compose < 0.2 else 'MISSED'}")
    print(f"dry run minus --cfg job (no Hydra job):   {med['dry run'] - med['compose (--cfg job)']:.3f} s")
    print(f"ratio dry run / compose + empty task: {med['dry run'] / med['compose + empty task']:.2f}x")


if __name__ == "__main__":
    main()
