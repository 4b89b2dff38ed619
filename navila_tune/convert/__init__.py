"""Native checkpoint conversion: HF Llama <-> Megatron-mcore (MindSpeed-LLM 2.3.0 layout), any TP/PP.

Public API (imported lazily, so ``python -m navila_tune.convert --help`` does not load torch):
``hf_to_megatron``, ``megatron_to_hf``, ``reshard``, ``load_megatron_state``, ``save_megatron_state``,
``latest_complete_iteration``, ``megatron_shard_shapes``, ``MegatronMeta``, ``ConversionError``.
Only the native backend and the native trainer import this package (it needs torch and safetensors).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "hf_to_megatron": "navila_tune.convert.api",
    "megatron_to_hf": "navila_tune.convert.api",
    "reshard": "navila_tune.convert.api",
    "load_megatron_state": "navila_tune.convert.api",
    "save_megatron_state": "navila_tune.convert.api",
    "megatron_shard_shapes": "navila_tune.convert.api",
    "latest_complete_iteration": "navila_tune.convert.megatron_files",
    "MegatronMeta": "navila_tune.convert.megatron_files",
    "ConversionError": "navila_tune.convert.errors",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from navila_tune.convert.api import (hf_to_megatron, load_megatron_state, megatron_shard_shapes,
                                         megatron_to_hf, reshard, save_megatron_state)
    from navila_tune.convert.errors import ConversionError
    from navila_tune.convert.megatron_files import MegatronMeta, latest_complete_iteration


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'navila_tune.convert' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
