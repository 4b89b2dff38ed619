"""Native generation from a Megatron checkpoint: llama3 chat prompts, batched KV-cache decoding.

Decoding follows MindSpeed-LLM's sampling: greedy when ``temperature == 0``; otherwise logits are divided
by the temperature, then top-k (``top_k > 0``) and top-p (``0 < top_p < 1``) filtering, then one draw from
a generator seeded with ``seed`` (reproducible for a fixed seed and batch size). Padded vocab rows that
the tokenizer does not have are never chosen. A sequence stops at ``<|eot_id|>`` / ``<|end_of_text|>`` /
EOS (not included in the text) or after ``max_new_tokens``. Prompts are sorted by length, left-padded in
batches, and finished rows leave the batch (their cache rows are dropped).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from navila_tune.native import checkpointing as ckpt
from navila_tune.native.modeling import build_model
from navila_tune.native.prompting import encode_chat_prompt, load_tokenizer, stop_token_ids


@dataclass(kw_only=True)
class GenerateParams:
    load_dir: str  # Megatron checkpoint root (train or convert output)
    tokenizer_dir: str
    prompts: list[str]
    output_jsonl: str
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    seed: int = 1234
    device: str = "cpu"
    batch_size: int = 16
    system: str | None = None
    iteration: int | None = None  # default: the tracker's
    precision: str = "auto"  # auto (fp32 on CPU, checkpoint dtype on CUDA) | fp32 | bf16
    echo: bool = True  # print prompts and generations


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 = off)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = off)")


def generate(params: GenerateParams) -> list[dict[str, Any]]:
    """Generate for every prompt; write JSONL records and return them."""
    p = params
    sampling = Sampling(p.max_new_tokens, p.temperature, p.top_p, p.top_k)
    sampling.check()
    if not p.prompts:
        raise ValueError("prompts is empty. Fix: give generate.prompts, or let the launcher take "
                         "generate.num_eval_prompts prompts from the held-out split")
    device = _device(p.device)
    tokenizer = load_tokenizer(p.tokenizer_dir)
    model, meta = load_for_inference(p.load_dir, p.iteration, device, p.precision)
    prompt_ids = [encode_chat_prompt(tokenizer, prompt, system=p.system) for prompt in p.prompts]
    outputs = generate_ids(model, prompt_ids, sampling, stop_ids=stop_token_ids(tokenizer),
                           batch_size=p.batch_size, vocab_limit=len(tokenizer), seed=p.seed, device=device)
    records = []
    for i, (prompt, (ids, reason)) in enumerate(zip(p.prompts, outputs)):
        records.append({"index": i, "prompt": prompt, "generation": tokenizer.decode(ids, skip_special_tokens=True),
                        "num_tokens": len(ids), "finish_reason": reason,
                        "checkpoint": f"{p.load_dir}@{meta.iteration}"})
    write_jsonl(p.output_jsonl, records)
    if p.echo:
        for r in records:
            print(f"### prompt {r['index']}\n{r['prompt']}\n### generation ({r['num_tokens']} tokens, "
                  f"{r['finish_reason']})\n{r['generation']}\n", flush=True)
    return records


def load_for_inference(load_dir: str, iteration: int | None, device: torch.device, precision: str = "auto"):
    """The checkpoint as an eval-mode ``LlamaForCausalLM`` (padded vocab), and its meta."""
    meta, state = ckpt.load_state(load_dir, iteration)
    if precision == "auto":
        dtype = torch.float32
        if device.type == "cuda" and _is_bf16(meta.dtype):
            dtype = torch.bfloat16
    elif precision in ("fp32", "bf16"):
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    else:
        raise ValueError(f"precision={precision!r}: use auto, fp32 or bf16")
    model = build_model(meta.arch, meta.padded_vocab_size, state, dtype=dtype)
    del state
    return model.to(device).eval(), meta


@torch.no_grad()
def generate_ids(model, prompts: Sequence[Sequence[int]], sampling: Sampling, *, stop_ids: Sequence[int],
                 batch_size: int, vocab_limit: int | None, seed: int,
                 device: torch.device | str = "cpu") -> list[tuple[list[int], str]]:
    """New token ids (stop token excluded) and ``"stop"``/``"length"`` for each prompt, in input order."""
    from transformers import DynamicCache

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = torch.tensor(sorted(set(stop_ids)), device=device)
    pad_id = int(stop[0])
    results: list[tuple[list[int], str] | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(prompts[i]) for i in rows)
        if width == 0:
            raise ValueError("an empty prompt has no tokens to condition on")
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]):] = torch.tensor(list(prompts[i]), dtype=torch.long)
            mask[r, width - len(prompts[i]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        next_pos = positions[:, -1:] + 1
        active = list(rows)  # original prompt index of each live row
        new_tokens: dict[int, list[int]] = {i: [] for i in rows}
        for step in range(sampling.max_new_tokens):
            tokens = next_tokens(logits, sampling, vocab_limit, generator)
            is_stop = torch.isin(tokens, stop)
            keep = []
            for r, i in enumerate(active):
                if bool(is_stop[r]):
                    results[i] = (new_tokens[i], "stop")
                else:
                    new_tokens[i].append(int(tokens[r]))
                    keep.append(r)
            if not keep or step == sampling.max_new_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
                active = [active[r] for r in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos,
                           past_key_values=cache, use_cache=True).logits[:, -1]
            next_pos = next_pos + 1
        for i in rows:
            if results[i] is None:
                results[i] = (new_tokens[i], "length")
    return results  # type: ignore[return-value]


def next_tokens(logits: torch.Tensor, sampling: Sampling, vocab_limit: int | None,
                generator: torch.Generator) -> torch.Tensor:
    logits = logits.float()
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits[:, vocab_limit:] = float("-inf")
    if sampling.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs > sampling.top_p  # keeps the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def write_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


def _device(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but torch sees no CUDA device. Fix: use device=cpu.")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name != "cpu":
        raise ValueError(f"device={name!r}: use cpu or cuda")
    return torch.device("cpu")


def _is_bf16(dtype: Any) -> bool:
    return dtype in (torch.bfloat16, "bf16", "bfloat16", "torch.bfloat16")


def main(argv: list[str] | None = None) -> int:
    from navila_tune.native.cli import parse_params

    params = parse_params(GenerateParams, argv, prog="python -m navila_tune.native.generate",
                          description="Generate from a Megatron checkpoint with the llama3 chat template.")
    generate(params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
