"""LoRA on MindSpeed's linear layers: only adapters train; checkpoints hold base + (alpha / r) * B @ A."""

from __future__ import annotations

import re

import pytest
import torch

import native_testkit as kit
from navila_tune.native import checkpointing as ckpt
from navila_tune.native.modeling import LORA_TARGETS, hf_lora_targets
from navila_tune.native.train import train

_ADAPTER = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.default\.weight$")


def _adapters(train_state) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in train_state["trainable"].items():
        m = _ADAPTER.match(name)
        assert m, f"non-adapter parameter was trainable: {name}"
        out.setdefault(m["module"], {})[m["ab"]] = value
    return out


def test_lora_trains_only_adapters_and_exports_base_plus_scaled_delta(tiny, train_params):
    r, alpha = 4, 16
    p = train_params(finetune="lora", lora_r=r, lora_alpha=alpha, train_iters=5, lr=1e-2)
    train(p)
    state = ckpt.load_train_state(p.save_dir, 5)
    assert all(".lora_" in n for n in state["param_names"])
    adapters = _adapters(state)
    expected_modules = {f"model.layers.{i}.{part}.{proj}" for i in range(tiny.arch.num_layers)
                        for part, proj in [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
                                           ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
                                           ("mlp", "down_proj")]}
    assert set(adapters) == expected_modules
    base, merged = kit.final_weights(tiny.base), kit.final_weights(p.save_dir)
    assert merged.keys() == base.keys()
    for name in base:
        module = name.removesuffix(".weight")
        if module in adapters:
            delta = (alpha / r) * adapters[module]["B"] @ adapters[module]["A"]
            assert float(delta.abs().max()) > 1e-4, f"{module} adapter did not train"
            torch.testing.assert_close(merged[name], base[name] + delta, rtol=0, atol=1e-6, msg=name)
        else:
            assert torch.equal(merged[name], base[name]), f"{name} is not an adapter target but changed"


def test_lora_target_names_map_to_hf_modules(tiny, train_params):
    assert hf_lora_targets(["linear_qkv", "linear_fc2"]) == ["q_proj", "k_proj", "v_proj", "down_proj"]
    assert set(LORA_TARGETS) == {"linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"}
    with pytest.raises(ValueError, match=r"lora_targets contains 'linear_qkvv'"):
        hf_lora_targets(["linear_qkvv"])
    p = train_params(finetune="lora", lora_r=2, lora_alpha=2, lora_targets=["linear_proj"], train_iters=1)
    train(p)
    assert {m.rsplit(".", 1)[-1] for m in _adapters(ckpt.load_train_state(p.save_dir, 1))} == {"o_proj"}
