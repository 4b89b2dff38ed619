"""Helpers shared by the test modules (tests/ is on sys.path via pytest's pythonpath)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# Cluster paths used by tests that render 8B commands (nothing there needs to exist).
PINNED_PATHS = [
    "paths.models=/models",
    "paths.data=/datasets",
    "paths.mindspeed_home=/opt/MindSpeed-LLM",
    "paths.work_dir=/work",
]

# config.json of Meta-Llama-3-8B-Instruct (the values the model group must agree with).
LLAMA3_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128009,
}


def compose(*overrides: str):
    from navila_tune.config import compose as _compose

    return _compose([*PINNED_PATHS, *overrides])


def experiments() -> list[str]:
    return sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                  for p in (CONF / "experiment").rglob("*.yaml"))


def standin_calls(home: Path) -> list[dict]:
    """What the stand-in MindSpeed-LLM scripts were given, in call order."""
    import json

    return [json.loads(line) for line in (home / "calls.jsonl").read_text().splitlines()]


# A shortened embedded default for pipeline tests: the same stages and files, a few iterations and few
# evaluation samples, one CPU thread per process.
QUICK_TINY = [
    "optim.train_iters=12", "optim.save_interval=4", "optim.eval_interval=6", "optim.eval_iters=1",
    "optim.log_interval=4", "evaluate.max_samples=8", "evaluate.max_new_tokens=24", "evaluate.batch_size=8",
    "generate.num_eval_prompts=2", "generate.max_new_tokens=24", "backend.native.threads=1",
]


def run_navila(cwd: Path, *overrides: str, check: bool = True, timeout: float = 900):
    """``python -m navila_tune OVERRIDES`` in ``cwd`` (a real process), with no user environment."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAVILA_", "MINDSPEED_"))}
    proc = subprocess.run([sys.executable, "-m", "navila_tune", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@dataclass(frozen=True)
class QuickRun:
    """A finished QUICK_TINY run: its run dir and its work dir (stage outputs)."""

    run_dir: Path
    work_dir: Path

    def copy_work(self, dst: Path) -> Path:
        """A private copy of the work dir, for a test that adds stage outputs to it."""
        import shutil

        shutil.copytree(self.work_dir, dst, symlinks=True)
        return dst


def quick_reference_run(root: Path) -> QuickRun:
    run_navila(root, *QUICK_TINY, f"paths.work_dir={root / 'work'}", "hydra.run.dir=run")
    return QuickRun(run_dir=root / "run", work_dir=root / "work")


def stage_records(run_dir: Path) -> dict[str, dict]:
    """Stage name -> its row in the run's summary.json (status ran / reused / failed, output, duration)."""
    import json

    return {s["name"]: s for s in json.loads((run_dir / "summary.json").read_text())["stages"]}
