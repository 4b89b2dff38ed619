"""Native-backend fixtures: a tiny base checkpoint, synthetic navigation data, TrainParams defaults."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# --import-mode=importlib puts only tests/ on sys.path; the helpers live next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import native_testkit as kit  # noqa: E402

# The machine is shared: one intra-op thread avoids the spin-wait collapse seen with 2 threads.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A random base checkpoint (Megatron layout, fp32, padded vocab) and synthetic navigation data."""
    import types

    root = tmp_path_factory.mktemp("tiny")
    arch = kit.tiny_arch()
    padded_vocab = kit.padded(arch.vocab_size)
    kit.write_checkpoint(root / "base", arch, padded_vocab, seed=0)
    train_rows, held_rows = kit.nav_rows(32, seed=0), kit.nav_rows(16, seed=1)
    return types.SimpleNamespace(
        root=root, arch=arch, padded_vocab=padded_vocab, base=root / "base",
        train_prefix=kit.write_nav_dataset(root / "data" / "train", train_rows),
        held_prefix=kit.write_nav_dataset(root / "data" / "held", held_rows),
        held_parquet=kit.write_parquet(root / "data" / "held.parquet", held_rows),
        train_rows=train_rows, held_rows=held_rows)


@pytest.fixture
def train_params(tiny, tmp_path):
    """TrainParams for the tiny setup; keyword overrides."""
    from navila_tune.native.train import TrainParams

    def make(**overrides):
        values = dict(load_dir=str(tiny.base), data_prefix=tiny.train_prefix, save_dir=str(tmp_path / "out"),
                      train_iters=4, global_batch_size=8, micro_batch_size=4, lr=1e-3, min_lr=1e-4,
                      warmup_ratio=0.0, log_interval=1, eval_interval=0, save_interval=0, precision="fp32",
                      seq_length=256, progress=False, seed=1234)
        values.update(overrides)
        return TrainParams(**values)

    return make
