"""Two launches that need the same stage build it once; a lock whose holder died is taken over.

Real processes (`python -m navila_tune`) against the stand-in MindSpeed-LLM home (see
tests/fixtures/mindspeed_standin: it stands in for the NPU-only scripts and records each call).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from navila_testing import standin_calls as calls


def start(site, run_dir: Path, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "STANDIN_SLEEP": str(sleep)}
    return subprocess.Popen([sys.executable, "-m", "navila_tune", *site["overrides"], "stages=[convert]",
                             f"hydra.run.dir={run_dir}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_two_processes_starting_the_same_stage_build_it_once(site, tmp_path):
    a = start(site, tmp_path / "a", sleep=3)
    time.sleep(0.3)
    b = start(site, tmp_path / "b", sleep=3)
    out_a, out_b = a.communicate(timeout=120)[0].decode(), b.communicate(timeout=120)[0].decode()
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    assert [c["script"] for c in calls(site["home"])] == ["convert_ckpt.py"]
    statuses = sorted(json.loads((tmp_path / d / "summary.json").read_text())["stages"][0]["status"]
                      for d in ("a", "b"))
    assert statuses == ["ran", "reused"]
    assert "waiting for pid" in out_a + out_b


def test_a_dead_lock_holder_is_recovered(site, tmp_path):
    a = start(site, tmp_path / "a", sleep=30)
    work = site["tmp"] / "work" / "convert"
    deadline = time.time() + 60
    while not list(work.glob("*.partial/mg")) and time.time() < deadline:
        time.sleep(0.1)
    assert list(work.glob("*.partial")), "the first run never started converting"
    os.killpg(a.pid, signal.SIGKILL)
    a.wait()
    b = start(site, tmp_path / "b", sleep=0)
    out = b.communicate(timeout=120)[0].decode()
    assert b.returncode == 0, out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["stages"][0]["status"] == "ran"
    finals = [p for p in work.iterdir() if not p.name.endswith((".partial", ".lock"))]
    assert len(finals) == 1 and (finals[0] / "COMPLETE.json").is_file()
    assert not list(work.glob("*.partial"))
