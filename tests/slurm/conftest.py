"""The `slurm_cluster` fixture: one real Slurm cluster on this host for the whole session.

Environment:
  NAVILA_SLURM_INSTALL=1   apt-get the Slurm packages first when they are missing (CI sets it);
                           otherwise a host without slurmctld skips these tests, saying why.
  NAVILA_SLURM_REQUIRED=1  fail instead of skip when the cluster cannot be installed or started.
  NAVILA_SLURM_NODES=N     slurmd daemons (nodes n1..nN) to run on this host (default 2, so that
                           `--nodes 2` jobs can be tested; 1 gives one node named after the host).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# --import-mode=importlib puts only tests/ on sys.path; the helper lives next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import slurm_local  # noqa: E402


def _unavailable(request, reason: str):
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    message = f"Slurm cluster unavailable: {reason}"
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(message, yellow=True)
    if os.environ.get("NAVILA_SLURM_REQUIRED") == "1":
        pytest.fail(message + "\n(NAVILA_SLURM_REQUIRED=1: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def slurm_cluster(request):
    """Start the cluster in a temp dir; yield a slurm_local.LocalSlurm (.conf, .env, .partition, ...)."""
    if not slurm_local.slurm_installed():
        if os.environ.get("NAVILA_SLURM_INSTALL") != "1":
            _unavailable(request, "slurmctld/slurmd/sbatch are not installed; run "
                         "`bash scripts/slurm/local_cluster.sh install` (as root) or set NAVILA_SLURM_INSTALL=1")
        try:
            seconds = slurm_local.install()
        except (slurm_local.ClusterUnavailable, OSError) as exc:
            _unavailable(request, str(exc))
        print(f"slurm: installed the packages in {seconds:.0f} s", file=sys.stderr)
    nodes = int(os.environ.get("NAVILA_SLURM_NODES", "2"))
    # a short path: slurmd's unix sockets live under it (108-byte limit)
    root = Path(tempfile.mkdtemp(prefix="navila-slurm-", dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        cluster = slurm_local.start(root / "c", nodes=nodes)
    except (slurm_local.ClusterUnavailable, OSError) as exc:
        shutil.rmtree(root / "c" / "db", ignore_errors=True)  # 26 MB; the logs stay for the reason
        _unavailable(request, str(exc))
    try:
        yield cluster
    finally:
        proc = slurm_local.stop(cluster.dir)
        if proc.returncode != 0:
            print(f"slurm: stop exited {proc.returncode}: {proc.stderr}", file=sys.stderr)
        elif request.session.testsfailed:
            print(f"slurm: tests failed; the cluster's logs stay in {cluster.dir}/log", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
