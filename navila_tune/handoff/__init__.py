"""The hand-off to NaVILA: check an exported LLM, and splice it into a NaVILA/VILA checkpoint.

``python -m navila_tune.handoff check DIR`` runs every check of reference §4.2-4.4 (config, generation
config, tokenizer, tensors, numerical equivalence with the trained checkpoint in fp32/bf16/fp16) and,
when asked, the load in NaVILA's pinned stack and the VILA splice checks; see docs/navila_handoff.md.

Public API (imported lazily: the pinned-stack process imports this package with only the standard
library and transformers present): ``run_checks``, ``CheckOptions``, ``Report``, ``Item``,
``ensure_generation_config``, ``splice_vila``, ``vila_layout_problems``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_checks": ("navila_tune.handoff.check", "run_checks"),
    "CheckOptions": ("navila_tune.handoff.check", "CheckOptions"),
    "Report": ("navila_tune.handoff.report", "Report"),
    "Item": ("navila_tune.handoff.report", "Item"),
    "ensure_generation_config": ("navila_tune.handoff.generation", "ensure_generation_config"),
    "splice_vila": ("navila_tune.handoff.vila", "splice"),
    "vila_layout_problems": ("navila_tune.handoff.vila", "layout_problems"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'navila_tune.handoff' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
