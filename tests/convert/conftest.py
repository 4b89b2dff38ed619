"""Fixtures: tiny HF models built once per session, and a CPU megatron-core environment."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts only tests/ on sys.path; the helpers live next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from convert_helpers import LAYOUTS, free_port, write_hf_model  # noqa: E402


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
    """``hf_models[(layout name, torch dtype name)]``: an HF dir, written on first use (read-only after)."""

    class _Models(dict):
        def __missing__(self, key):
            name, dt = key
            path = tmp_path_factory.mktemp(f"hf_{name}_{dt}")
            write_hf_model(path, LAYOUTS[name], dtype=getattr(torch, dt))
            self[key] = path
            return path

    return _Models()


@pytest.fixture(scope="module")
def megatron_world():
    """megatron-core's parallel_state for world size 1 on a gloo process group (CPU), per test module.

    Torn down after the module, so other test modules can start their own process groups.
    """
    import torch.distributed as dist

    pytest.importorskip("megatron.core")
    from megatron.core import parallel_state

    created = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        created = True
    parallel_state.initialize_model_parallel(1, 1)
    yield parallel_state
    parallel_state.destroy_model_parallel()
    if created:
        dist.destroy_process_group()


@pytest.fixture
def megatron_cpu(monkeypatch, megatron_world):
    """The two TEST-ONLY patches megatron-core's forward needs on CPU."""
    from megatron.core.tensor_parallel import random as tp_random

    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")
    tracker = tp_random.get_cuda_rng_tracker()
    monkeypatch.setattr(tracker, "fork", lambda *a, **k: contextlib.nullcontext())
    return megatron_world
