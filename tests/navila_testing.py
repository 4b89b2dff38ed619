"""Helpers shared by the test modules (tests/ is on sys.path via pytest's pythonpath)."""

from __future__ import annotations

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


def compose(*overrides: str):
    from navila_tune.config import compose as _compose

    return _compose([*PINNED_PATHS, *overrides])


def experiments() -> list[str]:
    return sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                  for p in (CONF / "experiment").rglob("*.yaml"))
