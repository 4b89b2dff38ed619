"""A real single-host Slurm cluster for tests: start/stop through scripts/slurm/local_cluster.sh, plus
the few client calls tests need (sbatch, job state, sacct), all with the cluster's environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"
PARTITION = "debug"
# Client variables a surrounding Slurm job (or a user's shell) may have set; they would leak into
# sbatch/srun and point them at the wrong job or cluster.
_CLIENT_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SACCT_", "SCANCEL_")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}


class ClusterUnavailable(RuntimeError):
    """The cluster could not be installed or started; the message says exactly why."""


def slurm_installed() -> bool:
    return all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch"))


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def install(timeout_s: float = 1200) -> float:
    """`local_cluster.sh install` (apt-get); returns the seconds it took."""
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise ClusterUnavailable(f"`{SCRIPT.name} install` exited {proc.returncode}:\n"
                                 f"{_tail(proc.stdout + proc.stderr)}")
    return time.monotonic() - start


def client_env(conf: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLIENT_PREFIXES)}
    env["SLURM_CONF"] = str(conf)
    return env


@dataclass
class LocalSlurm:
    """A running cluster: `conf` is its SLURM_CONF, `env` the environment to run clients with."""

    dir: Path
    conf: Path
    env: dict[str, str]
    nodes: tuple[str, ...]
    cpus_per_node: int
    accounting: bool
    partition: str = PARTITION
    start_s: float = 0.0

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def sbatch(self, *args: str, wrap: str | None = None, script: Path | None = None) -> str:
        """Submit (without waiting) and return the job id."""
        argv = ["sbatch", "--parsable", f"--partition={self.partition}", *args]
        if wrap is not None:
            argv += ["--wrap", wrap]
        if script is not None:
            argv.append(str(script))
        return self.run(argv).stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (finished jobs stay visible for MinJobAge=3600 s)."""
        out = self.run(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0]))

    def wait(self, job_id: str, until: set[str] | None = None, timeout: float = 30) -> dict[str, str]:
        """Poll until the job's state is in `until` (default: any finished state); return its record."""
        until = until or FINISHED
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info["JobState"] in until:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {info['JobState']} (Reason={info.get('Reason')}) "
                                     f"after {timeout} s; wanted one of {sorted(until)}")
            time.sleep(0.2)

    def sacct_state(self, job_id: str) -> str:
        out = self.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id]).stdout.split()
        return out[0] if out else ""


def start(dir: Path, *, nodes: int = 1, cpus: int | None = None, timeout_s: float = 120) -> LocalSlurm:
    argv = ["bash", str(SCRIPT), "start", str(dir), "--nodes", str(nodes)]
    if cpus is not None:
        argv += ["--cpus", str(cpus)]
    began = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        stop(dir)
        raise ClusterUnavailable(f"`{SCRIPT.name} start` did not finish in {timeout_s} s") from exc
    if proc.returncode != 0:
        raise ClusterUnavailable(f"`{SCRIPT.name} start {dir}` exited {proc.returncode}:\n"
                                 f"{_tail(proc.stdout + proc.stderr)}")
    conf = Path(dir) / "slurm.conf"
    text = conf.read_text()
    node_names = tuple(re.findall(r"^NodeName=(\S+)", text, flags=re.M))
    cpus_found = int(re.search(r"^NodeName=\S+ .*\bCPUs=(\d+)", text, flags=re.M).group(1))
    return LocalSlurm(dir=Path(dir), conf=conf, env=client_env(conf), nodes=node_names,
                      cpus_per_node=cpus_found,
                      accounting="accounting_storage/slurmdbd" in text,
                      start_s=time.monotonic() - began)


def stop(dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "stop", str(dir)], capture_output=True, text=True, timeout=120)
