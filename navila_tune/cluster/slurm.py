"""``cluster=slurm``: one sbatch script per stage, submitted as a chain with ``--dependency=afterok``.

A failed stage never lets the next one run (afterok, unlike afterany). Each script runs
``srun python -m navila_tune.run_stage RUN_DIR STAGE`` on its nodes (all of the hardware group's nodes
for training, one node otherwise), so the stage keeps the executor's lock, ``.partial`` folder,
completion marker and reuse. The scripts stay in ``RUN_DIR/slurm/`` with ``jobs.json``; a user can
resubmit any of them by hand.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from navila_tune import __version__
from navila_tune.cluster.nodes import ALL_NODES
from navila_tune.config import slurm_resources
from navila_tune.executor import is_complete
from navila_tune.plan import Plan


class SubmitError(RuntimeError):
    pass


@dataclass
class ChainEntry:
    stage: str
    script: str
    job_id: str | None = None
    skipped: str = ""  # why it is not part of the chain (already built)


@dataclass
class SbatchChain:
    folder: str
    entries: list[ChainEntry] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"Slurm chain in {self.folder}:"]
        for e in self.entries:
            if e.skipped:
                lines.append(f"  {e.stage:<10} {e.skipped}")
            else:
                job = f"job {e.job_id}" if e.job_id else "not submitted"
                lines.append(f"  {e.stage:<10} {job:<16} {e.script}")
        submitted = [e for e in self.entries if e.job_id]
        if submitted:
            lines.append(f"follow with: squeue -j {','.join(e.job_id for e in submitted if e.job_id)}")
        return "\n".join(lines)


def script_text(plan: Plan, cfg: Any, stage: str, index: int, python: str) -> str:
    hw, cl = cfg.hardware, cfg.cluster
    nodes = int(hw.nnodes) if stage in ALL_NODES else 1
    out = Path(plan.run_dir) / "slurm" / f"{index:02d}_{stage}-%j.out"
    directives = [
        f"--job-name=navila-{cfg.experiment_name}-{stage}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--output={out}",
        f"--chdir={Path.cwd()}",
        f"--time={cl.time}",
    ]
    cpus = slurm_resources("cpus", hw.accelerator, hw.devices_per_node)
    gpus = slurm_resources("gpus", hw.accelerator, hw.devices_per_node)
    gres = slurm_resources("gres", hw.accelerator, hw.devices_per_node)
    directives += [f"--cpus-per-task={cpus}"] if cpus else []
    directives += [f"--gpus-per-node={gpus}"] if gpus else []
    directives += [f"--gres={gres}"] if gres else []
    for key in ("partition", "account", "qos"):
        if cl[key]:
            directives.append(f"--{key}={cl[key]}")
    directives += list(cl.extra_sbatch)
    command = ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", python, "-m", "navila_tune.run_stage",
               plan.run_dir, stage]
    return "\n".join([
        "#!/bin/bash",
        f"# navila_tune {__version__}: stage {stage} of the run in {plan.run_dir}",
        f"# fingerprint {plan.stage(stage).fingerprint} -> {plan.stage(stage).output}",
        "# resubmit by hand: sbatch [--dependency=afterok:JOBID] THIS_FILE",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        shlex.join(command),
        "",
    ])


def write_chain(plan: Plan, cfg: Any, python: str | None = None) -> SbatchChain:
    folder = Path(plan.run_dir) / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    chain = SbatchChain(str(folder))
    for index, stage in enumerate(plan.selected, 1):
        path = folder / f"{index:02d}_{stage}.sbatch"
        if is_complete(plan.stage(stage)) and stage not in cfg.force:
            chain.entries.append(ChainEntry(stage, str(path), skipped=f"reused: {plan.stage(stage).output}"))
            continue
        path.write_text(script_text(plan, cfg, stage, index, python or sys.executable))
        path.chmod(0o755)
        chain.entries.append(ChainEntry(stage, str(path)))
    return chain


def sbatch(script: str, after: Sequence[str]) -> str:
    argv = ["sbatch", "--parsable"]
    if after:
        argv.append("--dependency=afterok:" + ":".join(after))
    proc = subprocess.run([*argv, script], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SubmitError(f"{shlex.join([*argv, script])} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]


def submit_chain(plan: Plan, cfg: Any) -> SbatchChain:
    chain = write_chain(plan, cfg)
    if not cfg.cluster.submit:
        return chain
    previous: list[str] = []
    for entry in chain.entries:
        if entry.skipped:
            continue
        entry.job_id = sbatch(entry.script, previous)
        previous = [entry.job_id]
    (Path(chain.folder) / "jobs.json").write_text(json.dumps(
        [e.__dict__ for e in chain.entries], indent=1))
    return chain
