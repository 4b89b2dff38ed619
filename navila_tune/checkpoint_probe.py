"""Is a Megatron checkpoint complete? Answered from the file system alone (no torch import).

Complete means: the tracker names an iteration, and every rank file of that iteration exists and is a
whole torch zip archive (its end-of-central-directory record is there, so it was not cut short).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

TRACKER = "latest_checkpointed_iteration.txt"


def rank_dirs(tp: int, pp: int) -> list[str]:
    return [f"mp_rank_{t:02d}" + (f"_{p:03d}" if pp > 1 else "") for t in range(tp) for p in range(pp)]


def iteration_dir(root: Path, iteration: int | str) -> Path:
    return root / ("release" if iteration == "release" else f"iter_{int(iteration):07d}")


def tracked_iteration(root: str | Path) -> int | None:
    try:
        text = (Path(root) / TRACKER).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_complete_iteration(root: str | Path, iteration: int, tp: int, pp: int) -> bool:
    it = iteration_dir(Path(root), iteration)
    for rank in rank_dirs(tp, pp):
        f = it / rank / "model_optim_rng.pt"
        if not f.is_file() or not zipfile.is_zipfile(f):
            return False
    return True


def latest_complete(root: str | Path, tp: int, pp: int) -> int | None:
    """The tracker's iteration if that checkpoint is complete, else None."""
    iteration = tracked_iteration(root)
    if iteration is None or not is_complete_iteration(root, iteration, tp, pp):
        return None
    return iteration
