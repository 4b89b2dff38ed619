"""Memory and parallelism planner: per-device peak memory of a run, whether it fits, and what would.

Pure Python (no torch): ``RunShape.from_config(cfg)`` turns the resolved config into plain values, and
everything else works on those. See docs/memory_planner.md for the model and its validation.
"""

from navila_tune.planner.layouts import Candidate
from navila_tune.planner.memory import MemoryBreakdown, estimate
from navila_tune.planner.report import MemoryProblem, candidates, check_fits, render_plan
from navila_tune.planner.shape import RunShape

__all__ = ["Candidate", "MemoryBreakdown", "MemoryProblem", "RunShape", "candidates", "check_fits", "estimate",
           "render_plan"]
