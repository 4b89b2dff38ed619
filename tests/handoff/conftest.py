"""One clean tiny export (with its trained checkpoint and training samples), built once per session."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# --import-mode=importlib puts only tests/ on sys.path; the helpers live next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import handoff_kit as kit  # noqa: E402


@dataclass(frozen=True)
class Clean:
    source: Path  # the HF source directory (tokenizer, config, generation config)
    megatron: Path  # the trained Megatron checkpoint (TP2/PP2, padded vocab)
    prefix: Path  # preprocessed training samples
    hf: Path  # the export (several shards + index)

    def copy(self, where: Path) -> Path:
        """A private copy of the export to break."""
        shutil.copytree(self.hf, where)
        return where

    def options(self, hf: Path, **overrides):
        from navila_tune.handoff import CheckOptions

        values = dict(hf_dir=str(hf), arch=kit.arch_of(self.source), dtype="fp32",
                      source_tokenizer_dir=str(self.source), megatron_dir=str(self.megatron),
                      data_prefix=str(self.prefix), samples=4, max_tokens=256)
        values.update(overrides)
        return CheckOptions(**values)

    def check(self, hf: Path, **overrides):
        from navila_tune.handoff import run_checks

        return run_checks(self.options(hf, **overrides))


@pytest.fixture(scope="session")
def clean(tmp_path_factory) -> Clean:
    root = tmp_path_factory.mktemp("handoff")
    source = kit.source_llm(root / "source")
    prefix = kit.training_data(root / "data" / "train", source)
    megatron = kit.trained_checkpoint(root / "trained", kit.arch_of(source), prefix)
    hf = kit.export(megatron, source, root / "export" / "hf")
    return Clean(source, megatron, prefix, hf)
