"""Megatron-layout checkpoints for native training, and where the trainer's own state lives.

Layout (what MindSpeed-LLM training writes, produced by ``navila_tune.convert.save_megatron_state``)::

    SAVE_DIR/latest_checkpointed_iteration.txt      "<iteration>", written last
    SAVE_DIR/iter_XXXXXXX/mp_rank_TT[_PPP]/model_optim_rng.pt
    SAVE_DIR/iter_XXXXXXX/native_train_state.pt      the native trainer's resumable state

Weights in the rank files are always the merged model (LoRA adapters folded in), at the training TP/PP,
in the training dtype, with the padded vocab. Every rank file also carries Megatron's small
``opt_param_scheduler`` entry (Megatron's own format) and ``args`` with ``iteration`` and
``consumed_train_samples``. The optimizer, RNG and data position belong to an unsharded model, so they go
into one file per iteration, ``native_train_state.pt``, instead of being copied into every rank file:
MindSpeed reads them under no key it knows, so MindSpeed continues from a native checkpoint with
``--finetune`` (or ``--no-load-optim --no-load-rng``), exactly as from a converted one.

Completeness: an iteration is written into a staging folder inside SAVE_DIR (rank files, then the
train state), renamed to ``iter_XXXXXXX`` in one step, and only then named by the tracker (itself
written to a temporary name and renamed). A crash at any point leaves the previous tracker naming a
complete checkpoint; leftover staging folders are ignored and removed by the next save.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

TRACKER = "latest_checkpointed_iteration.txt"
TRAIN_STATE = "native_train_state.pt"
TRAIN_STATE_FORMAT = "navila_tune.native.train_state/1"
_STAGING = ".staging_iter_"


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used; the message names it and the fix."""


def _convert():
    """The converter API (navila_tune.convert); a function so tests can substitute it."""
    import navila_tune.convert as convert

    return convert


def iter_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def latest_complete_iteration(mg_dir: str | os.PathLike) -> int | None:
    return _convert().latest_complete_iteration(str(mg_dir))


def load_state(mg_dir: str | os.PathLike, iteration: int | None = None):
    """``(meta, state)`` with HF names at the padded vocab; a clear error when nothing is there."""
    path = Path(mg_dir)
    if not (path / TRACKER).is_file():
        hint = ""
        if path.name.startswith("iter_") or path.name.startswith("mp_rank_"):
            root = path.parent if path.name.startswith("iter_") else path.parent.parent
            hint = f" It looks like a folder inside a checkpoint; use {str(root)!r}."
        elif (path / "config.json").is_file():
            hint = " It is an HF model folder; run the convert stage first."
        raise CheckpointError(
            f"load directory {str(path)!r} has no {TRACKER}, so it is not a Megatron checkpoint root.{hint} "
            f"Fix: point it at the folder holding {TRACKER} (the convert or train stage output).")
    return _convert().load_megatron_state(str(path), iteration=iteration)


def save_checkpoint(save_dir: str | os.PathLike, iteration: int, state: dict[str, torch.Tensor], *,
                    arch, tp: int, pp: int, num_layer_list: list[int] | None, padded_vocab_size: int,
                    args_overrides: dict[str, Any] | None, extra: dict[str, Any] | None,
                    train_state: dict[str, Any] | None) -> Path:
    """Write ``iter_XXXXXXX`` completely, then point the tracker at it. Returns the iteration folder."""
    root = Path(save_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING}{iteration:07d}_", dir=root))
    try:
        _convert().save_megatron_state(
            state, str(staging), arch=arch, tp=tp, pp=pp, num_layer_list=num_layer_list,
            iteration=iteration, padded_vocab_size=padded_vocab_size, args_overrides=args_overrides,
            extra=extra)
        written = staging / iter_dir_name(iteration)
        if not written.is_dir():
            raise CheckpointError(f"the converter wrote no {written.name} under {staging}")
        if train_state is not None:
            _atomic_torch_save(train_state, written / TRAIN_STATE)
        final = root / iter_dir_name(iteration)
        if final.exists():
            old = root / f"{_STAGING}old_{iteration:07d}_{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(written, final)
        _atomic_write_text(root / TRACKER, str(iteration))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / iter_dir_name(iteration)


def load_train_state(save_dir: str | os.PathLike, iteration: int) -> dict[str, Any] | None:
    path = Path(save_dir) / iter_dir_name(iteration) / TRAIN_STATE
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(f"{path} has format {state.get('format')!r}, expected {TRAIN_STATE_FORMAT!r}")
    return state


def _remove_stale_staging(root: Path) -> None:
    for child in root.iterdir():
        if child.name.startswith(_STAGING) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
