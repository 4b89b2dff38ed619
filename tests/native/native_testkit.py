"""Tiny models, tokenizer, datasets and checkpoints for the native-backend tests (built in-process)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from navila_tune.arch import LlamaArch

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "navila_tune" / "assets" / "llama3_tiny"
IGNORE = -100


# ------------------------------------------------------------------------------------ tokenizer
_TOKENIZER = None


def tokenizer():
    global _TOKENIZER
    if _TOKENIZER is None:
        from transformers import AutoTokenizer

        _TOKENIZER = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)
    return _TOKENIZER


def eot_id(tok) -> int:
    return tok.convert_tokens_to_ids("<|eot_id|>")


# ----------------------------------------------------------------------------------- architecture
def tiny_arch(vocab_size: int | None = None, num_layers: int = 2, hidden: int = 64) -> LlamaArch:
    return LlamaArch(num_layers=num_layers, hidden_size=hidden, ffn_hidden_size=2 * hidden,
                     num_attention_heads=4, num_query_groups=2,
                     vocab_size=vocab_size if vocab_size is not None else len(tokenizer()),
                     max_position_embeddings=512, rope_theta=500000.0, norm_epsilon=1e-5)


def padded(vocab: int, multiple: int = 16) -> int:
    return -(-vocab // multiple) * multiple


def random_hf_state(arch: LlamaArch, padded_vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    from navila_tune.native.modeling import build_model

    torch.manual_seed(seed)
    model = build_model(arch, padded_vocab)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_checkpoint(out_dir: Path, arch: LlamaArch, padded_vocab: int, seed: int = 0, tp: int = 1,
                     pp: int = 1, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A 'converted' base checkpoint (iteration 1) of random weights; returns the HF state."""
    state = {k: v.to(dtype) for k, v in random_hf_state(arch, padded_vocab, seed).items()}
    from navila_tune.convert import save_megatron_state

    save_megatron_state(state, str(out_dir), arch=arch, tp=tp, pp=pp, num_layer_list=None, iteration=1,
                        padded_vocab_size=padded_vocab)
    return state


# ------------------------------------------------------------------------------------- datasets
GOALS = ["the red door", "the bike rack", "the blue gate", "the fountain", "the bakery", "the bridge",
         "the library", "the bus stop sign", "the tall tree", "the crosswalk", "the yellow van", "the kiosk"]
SITUATIONS = [
    ("is straight ahead, about {n} cm away", "move forward {n} cm", "it is ahead"),
    ("is on the left, about {d} degrees", "turn left {d} degrees", "I must face it first"),
    ("is on the right, about {d} degrees", "turn right {d} degrees", "I must face it first"),
    ("is right in front of the wheel", "stop", "I have arrived"),
]


def nav_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Alpaca rows of synthetic bicycle-navigation chain of thought with a final action line."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        goal = rng.choice(GOALS)
        where, action, why = rng.choice(SITUATIONS)
        dist, deg = rng.choice([25, 50, 75]), rng.choice([15, 30, 45])
        rows.append({
            "instruction": f"Ride the bicycle to {goal}.",
            "input": f"Observation: {goal} {where.format(n=dist, d=deg)}.",
            "output": f"{goal.capitalize()} {where.format(n=dist, d=deg)}, so {why}.\n"
                      f"The next action is {action.format(n=dist, d=deg)}.",
        })
    return rows


def encode_sample(tok, row: dict[str, str]) -> tuple[list[int], list[int]]:
    """A training sample exactly as preprocessing writes it."""
    from navila_tune.data import encode_sample as encode, user_content

    ids, labels = encode(tok, user_content(row["instruction"], row.get("input")), row["output"])
    return list(ids), list(labels)


def write_dataset(prefix: str | Path, samples: Sequence[tuple[Sequence[int], Sequence[int]]],
                  attention_masks: Sequence[Sequence[int]] | None = None) -> str:
    """PREFIX_packed_{input_ids,attention_mask,labels}_document.{bin,idx} with megatron-core's builder."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(prefix)
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    columns = {
        "input_ids": [list(ids) for ids, _ in samples],
        "attention_mask": ([list(m) for m in attention_masks] if attention_masks
                           else [[1] * len(ids) for ids, _ in samples]),
        "labels": [list(lab) for _, lab in samples],
    }
    for key, seqs in columns.items():
        p = f"{prefix}_packed_{key}_document"
        builder = IndexedDatasetBuilder(p + ".bin", dtype=np.int32)
        for seq in seqs:
            builder.add_item(torch.tensor(seq, dtype=torch.int32))
            builder.end_document()
        builder.finalize(p + ".idx")
    return prefix


def write_nav_dataset(prefix: Path, rows: list[dict[str, str]]) -> str:
    tok = tokenizer()
    return write_dataset(prefix, [encode_sample(tok, r) for r in rows])


def write_parquet(path: Path, rows: list[dict[str, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def random_samples(n: int, vocab: int, seed: int, min_len: int = 6,
                   max_len: int = 20) -> list[tuple[list[int], list[int]]]:
    """Random token samples with a prompt part (-100) and a response part."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        length = int(rng.randint(min_len, max_len + 1))
        ids = rng.randint(0, vocab, size=length).tolist()
        cut = int(rng.randint(1, length - 1))
        out.append((ids, [IGNORE] * cut + ids[cut:]))
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def final_weights(save_dir: Path) -> dict[str, torch.Tensor]:
    from navila_tune.native import checkpointing

    meta, state = checkpointing.load_state(str(save_dir))
    return state


def env_for_subprocess() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
