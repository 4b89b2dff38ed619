"""Fixtures for the data-pipeline tests: the in-repo llama3_tiny tokenizer and tiny input files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# --import-mode=importlib puts only tests/ on sys.path; the helpers live next to this file.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_testkit import TOKENIZER_DIR, load_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tok() -> Any:
    assert (TOKENIZER_DIR / "tokenizer.json").exists(), f"tokenizer fixture missing: {TOKENIZER_DIR}"
    return load_tokenizer()


@pytest.fixture
def run(tmp_path: Path):
    """Preprocess ``rows`` (or an input path) with test defaults; returns (report, output prefix)."""
    from data_testkit import preprocess_rows

    def _run(rows: Any, **overrides: Any):
        return preprocess_rows(tmp_path, rows, **overrides)

    return _run
