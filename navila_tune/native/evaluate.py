"""Native evaluation on the held-out split: loss/perplexity, final-answer accuracy, NaVILA parse rate.

For every held-out sample (Alpaca columns through ``map_keys``) the prompt is the llama3 chat prompt of
``instruction`` (+ "\\n" + ``input``) and the reference is ``output``:
- ``loss``: token mean of the teacher-forced cross-entropy over the response tokens, encoded by
  ``navila_tune.data.encode_sample`` exactly as preprocessing labels them (``output`` + the closing
  ``<|eot_id|>``); ``perplexity = exp(loss)``. Samples of ``seq_length`` tokens or more are left out of
  the loss (preprocessing drops them too) and counted.
- ``answer_accuracy``: greedy generation; the answer is what follows the last ``answer_marker`` on its
  line (the final line when the marker is empty), compared after trimming, lower-casing and dropping
  closing punctuation; a generation without the marker is wrong.
- navigation data (most references end in a NaVILA action; or ``navigation`` forced): ``navila_parse_rate``
  is the share of generations NaVILA's parser maps to an action (``navila_actions``),
  ``navila_action_accuracy`` the share whose parsed action (kind and snapped magnitude) equals the
  reference answer's, and ``stop_hazard_count`` the generations where "stop" appears before the final
  line while their own answer is not stop: NaVILA's parser executes STOP for those.
- the action-format report (navigation data): how NaVILA's evaluator, which sees only the first
  ``NAVILA_MAX_NEW_TOKENS`` (32) new tokens, reads the final action each generation states
  (``navila_actions.navila_reading``): ``navila_read_correctly_rate``, ``navila_misread_rate`` split into
  ``navila_misread_stop_rate`` ("stop" elsewhere in the text), ``navila_misread_truncated_rate`` (answer
  beyond 32 new tokens) and ``navila_misread_other_rate``, and ``navila_no_final_action_rate``; the same
  for the references (``reference_navila_*``), which says whether the data's CoT format itself survives.
Results go to ``output_json`` (per-sample rows to ``<output_json stem>.generations.jsonl``) and are returned.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from navila_tune.native.batching import collate
from navila_tune.native.generate import Sampling, _device, generate_ids, load_for_inference, write_jsonl
from navila_tune.native.modeling import masked_ce_sum
from navila_tune.native.navila_actions import (NAVILA_MAX_NEW_TOKENS, READINGS, answer_line, answer_text,
                                               navila_reading, normalise_answer, parse_navila_action,
                                               stop_before_final_line)
from navila_tune.native.prompting import (encode_chat_prompt, encode_chat_sample, load_tokenizer, stop_token_ids,
                                          user_content)


@dataclass(kw_only=True)
class EvaluateParams:
    load_dir: str
    tokenizer_dir: str
    eval_input: str  # parquet / jsonl / json file, or a folder of parquet files
    output_json: str
    map_keys: dict[str, str | None] = field(
        default_factory=lambda: {"prompt": "instruction", "query": "input", "response": "output"})
    answer_marker: str = "The next action is"
    max_samples: int | None = None
    max_new_tokens: int = 128
    batch_size: int = 32
    device: str = "cpu"
    seq_length: int = 4096
    iteration: int | None = None
    precision: str = "auto"
    navigation: bool | None = None  # None: decide from the references
    label: str | None = None  # e.g. "base" or "finetuned", copied into the results


def evaluate(params: EvaluateParams) -> dict[str, Any]:
    p = params
    rows = read_rows(p.eval_input, p.map_keys, p.max_samples)
    device = _device(p.device)
    tokenizer = load_tokenizer(p.tokenizer_dir)
    model, meta = load_for_inference(p.load_dir, p.iteration, device, p.precision)
    keys = {**{"prompt": "instruction", "query": "input", "response": "output"}, **p.map_keys}
    prompts, samples = [], []
    for row in rows:
        history = _history(row, keys.get("history"))
        system = (row.get(keys["system"]) if keys.get("system") else None) or None
        prompts.append(encode_chat_prompt(tokenizer, row["user"], system=system, history=history))
        samples.append(encode_chat_sample(tokenizer, row["user"], str(row[keys["response"]]), system=system,
                                          history=history))
    loss, n_loss_tokens, n_overlong = teacher_forced_loss(model, samples, p.seq_length, p.batch_size, device)
    generated = generate_ids(model, prompts, Sampling(p.max_new_tokens), stop_ids=stop_token_ids(tokenizer),
                             batch_size=p.batch_size, vocab_limit=len(tokenizer), seed=0, device=device)
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids, _ in generated]
    references = [str(row[keys["response"]]) for row in rows]
    seen = [_first_tokens(tokenizer, ids) for ids, _ in generated]
    seen_refs = [_first_tokens(tokenizer, tokenizer.encode(ref, add_special_tokens=False)) for ref in references]
    per_sample, scores = score_generations(texts, references, p.answer_marker, p.navigation, seen=seen,
                                           seen_references=seen_refs)
    for record, (ids, reason), row in zip(per_sample, generated, rows):
        record.update(num_tokens=len(ids), finish_reason=reason, prompt=row["user"])
    results = {
        "label": p.label, "checkpoint": str(p.load_dir), "iteration": meta.iteration,
        "eval_input": str(p.eval_input), "num_samples": len(rows),
        "loss": loss, "perplexity": math.exp(loss) if loss < 50 else float("inf"),
        "loss_tokens": n_loss_tokens, "loss_skipped_overlong": n_overlong,
        **scores,
        "finished_rate": sum(r == "stop" for _, r in generated) / max(len(rows), 1),
        "mean_generation_tokens": sum(len(i) for i, _ in generated) / max(len(rows), 1),
        "max_new_tokens": p.max_new_tokens,
    }
    out = Path(p.output_json)
    gen_path = out.with_name(out.stem + ".generations.jsonl")
    results["generations"] = gen_path.name  # next to this file (the stage folder is renamed when done)
    write_jsonl(gen_path, per_sample)
    _write_json(out, results)
    return results


def read_rows(path: str, map_keys: dict[str, str | None], max_samples: int | None) -> list[dict[str, Any]]:
    """Rows of a parquet/jsonl/json file (or a folder of parquet files) that carry the mapped columns.

    Each row also gets ``"user"``: its user message as MindSpeed's Alpaca handler builds it.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"eval_input={path!r} does not exist. Fix: set data.eval_input to the held-out "
                                f"split (Alpaca-style parquet/jsonl).")
    files = sorted(src.glob("*.parquet")) if src.is_dir() else [src]
    if not files:
        raise FileNotFoundError(f"eval_input={path!r} is a folder without .parquet files")
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.read_table(f).to_pylist()
        elif f.suffix == ".jsonl":
            rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif f.suffix == ".json":
            data = json.loads(f.read_text(encoding="utf-8"))
            rows += data if isinstance(data, list) else [data]
        else:
            raise ValueError(f"eval_input={str(f)!r}: unsupported format {f.suffix!r}; use parquet, jsonl or json")
    keys = {**{"prompt": "instruction", "query": "input", "response": "output"}, **map_keys}
    needed = [keys["prompt"], keys["response"]]
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    missing = [c for c in needed if c not in columns]
    if missing:
        raise KeyError(f"eval_input={path!r} lacks the mapped columns {missing} (columns: {sorted(columns)}). "
                       f"Fix: set data.map_keys to its column names.")
    if not rows:
        raise ValueError(f"eval_input={path!r} holds no rows")
    rows = rows[:max_samples] if max_samples else rows
    for row in rows:
        row["user"] = user_content(row, keys["prompt"], keys.get("query"))
    return rows


@torch.no_grad()
def teacher_forced_loss(model, samples: list[tuple[list[int], list[int]]], seq_length: int, batch_size: int,
                        device: torch.device) -> tuple[float, int, int]:
    """Token-mean cross-entropy over label tokens (unshifted labels, -100 ignored); samples of
    >= seq_length tokens are skipped. Returns (loss, label tokens, skipped samples)."""
    kept = [s for s in samples if len(s[0]) < seq_length]
    overlong = len(samples) - len(kept)
    rows = sorted(({"input_ids": np.asarray(ids, dtype=np.int64), "labels": np.asarray(labels, dtype=np.int64),
                    "attention_mask": np.ones(len(ids), dtype=np.int64)} for ids, labels in kept),
                  key=lambda r: len(r["input_ids"]))
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i:i + batch_size], pad_to_multiple_of=8).to(device)
        logits = model(input_ids=batch.input_ids, use_cache=False).logits
        loss_sum, n = masked_ce_sum(logits, batch.labels)
        total += float(loss_sum)
        count += n
    return (total / count if count else float("nan")), count, overlong


def _first_tokens(tokenizer: Any, ids: list[int]) -> str:
    """What NaVILA's evaluator sees of a generation: its first 32 new tokens, decoded as it decodes them."""
    return tokenizer.decode(list(ids)[:NAVILA_MAX_NEW_TOKENS], skip_special_tokens=True).strip()


def score_generations(texts: list[str], references: list[str], marker: str, navigation: bool | None,
                      seen: list[str] | None = None,
                      seen_references: list[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-sample rows and the aggregate answer / NaVILA scores.

    ``seen`` / ``seen_references``: each text's first ``NAVILA_MAX_NEW_TOKENS`` tokens, decoded (default:
    the whole text, i.e. no truncation) for the action-format report.
    """
    seen = seen if seen is not None else texts
    seen_references = seen_references if seen_references is not None else references
    rows = []
    for text, ref, text_seen, ref_seen in zip(texts, references, seen, seen_references):
        got, want = normalise_answer(answer_text(text, marker)), normalise_answer(answer_text(ref, marker))
        if want is None:  # reference without the marker: compare final lines
            got, want = normalise_answer(answer_text(text, "")), normalise_answer(answer_text(ref, ""))
        ref_action = parse_navila_action(answer_line(ref, marker))
        gen_action = parse_navila_action(text)
        own_action = parse_navila_action(answer_line(text, marker))
        hazard = stop_before_final_line(text) and not (own_action is not None and own_action.kind == "stop")
        rows.append({
            "generation": text, "reference": ref, "answer": got, "reference_answer": want,
            "exact_match": got is not None and got == want,
            "navila_action": asdict(gen_action) if gen_action else None,
            "reference_action": asdict(ref_action) if ref_action else None,
            "stop_hazard": hazard,
            "navila_reading": navila_reading(text, text_seen, marker)[0],
            "reference_navila_reading": navila_reading(ref, ref_seen, marker)[0],
        })
    n = max(len(rows), 1)
    is_nav = navigation if navigation is not None else (
        sum(r["reference_action"] is not None for r in rows) >= 0.5 * len(rows) and bool(rows))
    scores: dict[str, Any] = {
        "answer_marker": marker,
        "answer_accuracy": sum(r["exact_match"] for r in rows) / n,
        "answer_found_rate": sum(r["answer"] is not None for r in rows) / n,
        "navigation": is_nav,
    }
    if is_nav:
        scores.update(
            navila_parse_rate=sum(r["navila_action"] is not None for r in rows) / n,
            navila_action_accuracy=sum(r["navila_action"] is not None and r["navila_action"] == r["reference_action"]
                                       for r in rows) / n,
            stop_hazard_count=sum(r["stop_hazard"] for r in rows),
            navila_max_new_tokens=NAVILA_MAX_NEW_TOKENS,
            **_reading_rates(rows, "navila_reading", "navila_"),
            **_reading_rates(rows, "reference_navila_reading", "reference_navila_"),
        )
    return rows, scores


def _reading_rates(rows: list[dict[str, Any]], key: str, prefix: str) -> dict[str, float]:
    n = max(len(rows), 1)
    rates = {f"{prefix}{r}_rate": sum(row[key] == r for row in rows) / n for r in READINGS}
    rates[f"{prefix}misread_rate"] = sum(row[key].startswith("misread") for row in rows) / n
    return rates


def _history(row: dict[str, Any], key: str | None) -> list[tuple[str, str]]:
    if not key or not row.get(key):
        return []
    return [(str(q), str(a)) for q, a in row[key]]


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    from navila_tune.native.cli import parse_params, print_json

    params = parse_params(EvaluateParams, argv, prog="python -m navila_tune.native.evaluate",
                          description="Score a Megatron checkpoint on an Alpaca-style held-out split.")
    print_json(evaluate(params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
