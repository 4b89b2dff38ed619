"""Suite-wide fixtures and markers."""

from __future__ import annotations

import pytest

from navila_testing import QuickRun, quick_reference_run


@pytest.fixture(autouse=True)
def _no_user_env(monkeypatch):
    for var in ("NAVILA_MODELS", "NAVILA_DATA", "MINDSPEED_HOME", "NAVILA_WORK_DIR"):
        monkeypatch.delenv(var, raising=False)
    yield


def pytest_collection_modifyitems(config, items):
    skip_hw = pytest.mark.skip(reason="needs NPU/GPU hardware (run with -m npu / -m gpu on such a machine)")
    selected = config.getoption("-m") or ""
    for item in items:
        for mark in ("npu", "gpu"):
            if mark in item.keywords and mark not in selected:
                item.add_marker(skip_hw)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> QuickRun:
    """One complete shortened embedded-default run (QUICK_TINY) shared by the tests that only read it."""
    return quick_reference_run(tmp_path_factory.mktemp("quick_reference"))
