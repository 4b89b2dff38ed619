"""SIGKILL the pipeline at seeded random moments in every stage; every relaunch must end bitwise equal.

An uninterrupted reference run (the suite's shared ``quick_run``) measures each stage's duration. Then, in
each round, the whole pipeline is rebuilt in a fresh work dir and killed (the launcher's whole process
group, SIGKILL) inside every stage, and twice inside training (the second kill lands in a training that
resumed from the first one's checkpoint), at a random fraction of that stage's reference duration, and
relaunched after each kill; the round's final relaunch runs to the end. After every kill no final stage folder may lack its completion
marker, the stage that was interrupted must run again (never be reused), and at the end of every round
the exported weights must equal the reference byte for byte.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from navila_testing import QUICK_TINY, run_navila, stage_records

STAGES = ["convert", "preprocess", "train", "generate", "evaluate", "export"]
KILLS = ["convert", "preprocess", "train", "train", "generate", "evaluate", "export"]
ROUNDS = 3  # x 7 = 21 kill points
SEED = int(os.environ.get("NAVILA_FAULT_SEED", "20261204"))  # another seed explores other kill points


def _reader(proc: subprocess.Popen, lines: "queue.Queue[str]") -> None:
    for raw in iter(proc.stdout.readline, b""):
        lines.put(raw.decode(errors="replace"))
    lines.put("")


def launch_and_kill(cwd: Path, overrides: list[str], stage: str, delay: float) -> tuple[str, list[str]]:
    """Start the pipeline, SIGKILL its process group ``delay`` s after ``stage`` starts; return the stage
    that was running at that moment ('' if the pipeline finished first) and the launcher's output lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVILA_", "MINDSPEED_"))}
    proc = subprocess.Popen([sys.executable, "-m", "navila_tune", *overrides], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=_reader, args=(proc, lines), daemon=True).start()
    running = ""
    seen: list[str] = []
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            continue
        if line == "":
            proc.wait()
            return "", seen
        seen.append(line)
        if line.startswith("[") and "] running -> " in line:
            running = line[1:line.index("]")]
            if running == stage or STAGES.index(running) > STAGES.index(stage):
                break
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while True:  # the last stage that announced itself before the kill
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            break
        if line == "":
            break
        seen.append(line)
        if line.startswith("[") and "] running -> " in line:
            running = line[1:line.index("]")]
        if line.startswith("[") and "] done in " in line and line[1:line.index("]")] == running:
            running = ""
    return running, seen


def no_incomplete_finals(work: Path) -> None:
    for stage_dir in work.iterdir():
        for out in stage_dir.iterdir():
            if out.is_dir() and not out.name.endswith(".partial"):
                assert (out / "COMPLETE.json").is_file(), f"final folder without marker: {out}"


def differing_stages(ref_run: Path, run: Path) -> list[str]:
    """Stages whose weight/data files differ from the reference run's (for a useful failure message)."""
    import hashlib

    def digest(folder: Path) -> str:
        h = hashlib.sha256()
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".bin", ".idx") or f.name == "model_optim_rng.pt":
                h.update(str(f.relative_to(folder)).encode())
                h.update(f.read_bytes() if f.suffix != ".pt" else _tensors(f))
        return h.hexdigest()

    a, b = stage_records(ref_run), stage_records(run)
    return [s for s in STAGES if digest(Path(a[s]["output"])) != digest(Path(b[s]["output"]))]


def _tensors(path: Path) -> bytes:
    import torch

    model = torch.load(path, weights_only=False, map_location="cpu")["model"]
    return b"".join(k.encode() + v.numpy().tobytes() for k, v in sorted(model.items()) if v is not None)


def exported_bytes(run_dir: Path) -> bytes:
    hf = run_dir / "stages" / "export" / "hf"
    return b"".join((hf / f.name).read_bytes() for f in sorted(hf.glob("*.safetensors")))


@pytest.mark.slow
def test_sigkill_anywhere_then_relaunch_gives_identical_weights(quick_run, tmp_path, capsys):
    rng = random.Random(SEED)
    ref_run = quick_run.run_dir
    ref_records = stage_records(ref_run)
    durations = {name: rec["duration_s"] for name, rec in ref_records.items()}
    reference = exported_bytes(ref_run)
    kills: list[tuple[int, str, float, str]] = []
    for r in range(ROUNDS):
        work = tmp_path / f"work-{r}"
        overrides = [*QUICK_TINY, f"paths.work_dir={work}"]
        previous = ""
        for i, stage in enumerate(KILLS):
            delay = rng.uniform(0.05, 0.95) * durations[stage]
            hit, seen = launch_and_kill(tmp_path, [*overrides, f"hydra.run.dir=r{r}-kill{i}"], stage, delay)
            if previous:  # what the last kill interrupted is rebuilt, never reused
                assert any(line.startswith(f"[{previous}] running") for line in seen), (previous, seen[-20:])
                assert not any(line.startswith(f"[{previous}] reused") for line in seen)
            kills.append((r, stage, round(delay, 2), hit))
            previous = hit
            if work.exists():
                no_incomplete_finals(work)
        final = run_navila(tmp_path, *overrides, f"hydra.run.dir=r{r}-final")
        assert final.returncode == 0
        records = stage_records(tmp_path / f"r{r}-final")
        changed = [s for s in STAGES if Path(records[s]["output"]).name != Path(ref_records[s]["output"]).name]
        assert not changed, f"the inputs changed during the test (fingerprints of {changed} differ)"
        assert exported_bytes(tmp_path / f"r{r}-final") == reference, (
            f"round {r}: exported weights differ; stages whose files differ: "
            f"{differing_stages(ref_run, tmp_path / f'r{r}-final')}; kills: {kills}")
        last_hit = next((hit for rr, _, _, hit in reversed(kills) if rr == r and hit), "")
        if last_hit:  # the stage interrupted by the round's last kill was rebuilt, not reused
            assert records[last_hit]["status"] == "ran", (last_hit, records[last_hit])
    landed = {hit for *_, hit in kills if hit}
    with capsys.disabled():
        print(f"\n{len(kills)} SIGKILLs ({sum(1 for *_, h in kills if h)} landed inside a stage; stages hit: "
              f"{sorted(landed, key=STAGES.index)}); {ROUNDS} final relaunches, all bitwise identical to the "
              f"uninterrupted run")
    assert len(kills) >= 20
    assert landed >= {"convert", "preprocess", "train", "export"}
