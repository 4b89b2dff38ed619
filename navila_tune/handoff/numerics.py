"""Numerical equivalence: the exported model's loss on training samples equals the trained checkpoint's.

The reference is the trained Megatron checkpoint as the native backend reads it (``load_megatron_state``,
every TP/PP rank merged, built with the model group's architecture), scored over the real vocabulary
(Megatron's padding rows are left out of the softmax, as they are absent from the export). The export is
loaded exactly as NaVILA loads an LLM: ``AutoModelForCausalLM.from_pretrained(dir, torch_dtype=...)``.
Both score the same first samples of the preprocessed training set (token-mean cross-entropy over the
response labels), in each dtype; a conversion bug (swapped gate/up halves, a mis-split QKV, a wrong
rotary base or norm eps) moves the loss far beyond the tolerances, which only absorb kernel rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from navila_tune.arch import LlamaArch
from navila_tune.handoff.report import Item, failed, passed, skipped

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float

    def allows(self, got: float, want: float) -> bool:
        return abs(got - want) <= self.atol + self.rtol * abs(want)


# Both sides run the same weights in the same dtype through the same transformers code on the same device;
# only the output layer's row count (Megatron's padded vocab) can change kernel blocking. Measured on the tiny
# model: delta 0.0 in fp32, bf16 and fp16; swapped gate/up halves move the loss by 2.6% after 20 training
# iterations and by 170% on a model fitted to the samples. The tolerances leave room for kernel rounding.
TOLERANCES = {"fp32": Tolerance(1e-5, 1e-6), "bf16": Tolerance(5e-3, 1e-4), "fp16": Tolerance(2e-3, 1e-4)}


def training_samples(prefix: str, count: int, max_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``count`` samples of a preprocessed dataset that keep response labels within ``max_tokens``."""
    from navila_tune.native.batching import IGNORE_INDEX, InstructionDataset

    data = InstructionDataset(prefix, seq_length=2**62, what="hand-off data_prefix")
    out = []
    for i in range(len(data)):
        s = data.sample(i)
        ids, labels = s["input_ids"][:max_tokens], s["labels"][:max_tokens]
        if (labels[1:] != IGNORE_INDEX).any():
            out.append((ids, labels))
        if len(out) == count:
            break
    return out


@torch.no_grad()
def mean_loss(model, samples: Sequence[tuple[np.ndarray, np.ndarray]], vocab: int, device: torch.device) -> float:
    """Token-mean cross-entropy over the label tokens, logits restricted to the first ``vocab`` columns."""
    from navila_tune.native.batching import collate
    from navila_tune.native.modeling import masked_ce_sum

    rows = [{"input_ids": ids, "labels": labels, "attention_mask": np.ones(len(ids), dtype=np.int64)}
            for ids, labels in samples]
    batch = collate(rows, pad_to_multiple_of=1).to(device)
    logits = model(input_ids=batch.input_ids, use_cache=False).logits[..., :vocab]
    total, count = masked_ce_sum(logits, batch.labels)
    return float(total) / max(count, 1)


def reference_losses(megatron_dir: str, arch: LlamaArch | None, samples, dtypes: Sequence[str],
                     device: torch.device) -> dict[str, float]:
    from navila_tune.convert import load_megatron_state
    from navila_tune.native.modeling import build_model

    meta, state = load_megatron_state(megatron_dir)
    arch = arch or meta.arch
    out = {}
    for name in dtypes:
        model = build_model(arch, meta.padded_vocab_size, state, dtype=torch.float32)
        # Cast the weights only, as from_pretrained(torch_dtype=...) does: the rotary inv_freq buffer stays fp32.
        for param in model.parameters():
            param.data = param.data.to(DTYPES[name])
        model = model.to(device).eval()
        out[name] = mean_loss(model, samples, arch.vocab_size, device)
        del model
    return out


def export_losses(hf_dir: str, samples, dtypes: Sequence[str], device: torch.device) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    out = {}
    for name in dtypes:
        model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=DTYPES[name], local_files_only=True)
        model = model.to(device).eval()
        out[name] = mean_loss(model, samples, model.config.vocab_size, device)
        del model
    return out


def loss_items(hf_dir: str, *, megatron_dir: str | None, data_prefix: str | None, arch: LlamaArch | None,
               samples: int, max_tokens: int, dtypes: Sequence[str], device: str = "cpu") -> list[Item]:
    """One item per dtype: export loss vs reference loss, within that dtype's tolerance."""
    names = [f"loss_{d}" for d in dtypes]
    if not megatron_dir or not data_prefix:
        why = "no trained Megatron checkpoint" if not megatron_dir else "no preprocessed training data"
        return [skipped(n, f"{why} to compare with", "pass --megatron DIR and --data-prefix PREFIX") for n in names]
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"dtypes {unknown} unknown; use {sorted(DTYPES)}")
    dev = torch.device(device)
    try:
        picked = training_samples(data_prefix, samples, max_tokens)
    except (OSError, ValueError) as e:  # DataError: a missing or inconsistent prefix
        return [failed(n, f"training samples cannot be read: {e}", "point --data-prefix at the preprocess stage's "
                       "data/train prefix") for n in names]
    if not picked:
        return [failed(n, f"{data_prefix} has no sample with response labels in its first {max_tokens} tokens",
                       "point --data-prefix at the preprocessed training data, or raise --max-tokens") for n in names]
    tokens = int(sum(len(ids) for ids, _ in picked))
    try:
        want = reference_losses(megatron_dir, arch, picked, dtypes, dev)
    except Exception as e:  # noqa: BLE001 - the finding is that the reference cannot be built
        return [failed(n, f"the trained checkpoint {megatron_dir} cannot be scored: {e}",
                       "point --megatron at the train stage's checkpoint root") for n in names]
    try:
        got = export_losses(hf_dir, picked, dtypes, dev)
    except Exception as e:  # noqa: BLE001 - NaVILA's loader would fail the same way
        return [failed(n, f"AutoModelForCausalLM.from_pretrained({hf_dir}) fails: {e}",
                       "fix the items above (weights, index, config)") for n in names]
    items = []
    for d, name in zip(dtypes, names):
        tol, g, w = TOLERANCES[d], got[d], want[d]
        details: dict[str, Any] = {"export": g, "reference": w, "delta": g - w, "rtol": tol.rtol, "atol": tol.atol,
                                   "samples": len(picked), "tokens": tokens}
        if not (math.isfinite(g) and math.isfinite(w)):
            items.append(failed(name, f"{d}: loss is not finite (export {g}, trained checkpoint {w}); fp16 overflow "
                                f"or NaN weights", "check the finite item; NaVILA evaluates in fp16", **details))
        elif not tol.allows(g, w):
            items.append(failed(name, f"{d}: export loss {g:.6f} != trained checkpoint loss {w:.6f} (delta "
                                f"{g - w:+.3g}, tolerance {tol.atol:g} + {tol.rtol:g}*ref) on {len(picked)} training "
                                f"samples: the export does not compute what was trained",
                                "look for a conversion bug: swapped gate/up halves of linear_fc1, a QKV split that "
                                "ignores the query groups, a wrong rotary base or norm eps in config.json",
                                **details))
        else:
            items.append(passed(name, f"{d}: export {g:.6f} vs trained {w:.6f} (delta {g - w:+.2g}) on {len(picked)} "
                                f"samples / {tokens} tokens", **details))
    return items
