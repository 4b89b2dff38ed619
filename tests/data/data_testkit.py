"""Helpers for the data tests: independent expected ids, input writers, indexed-file readers."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = REPO / "navila_tune" / "assets" / "llama3_tiny"
IGNORE = -100
KEYS = ("input_ids", "attention_mask", "labels")
_TOK = None


def load_tokenizer() -> Any:
    global _TOK
    if _TOK is None:
        from transformers import AutoTokenizer

        _TOK = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)
    return _TOK


# -- expected ids, built piece by piece, independently of navila_tune.data.template -------------------
def special(tok: Any, token: str) -> int:
    ids = tok.encode(token, add_special_tokens=False)
    assert ids == [tok.convert_tokens_to_ids(token)], f"{token} is not a single id in the fixture"
    return ids[0]


def piece(tok: Any, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def header(tok: Any, role: str) -> list[int]:
    """<|start_header_id|>role<|end_header_id|> then "\\n\\n" (content must start with a non-space)."""
    return ([special(tok, "<|start_header_id|>")] + piece(tok, role) + [special(tok, "<|end_header_id|>")]
            + piece(tok, "\n\n"))


def expected(tok: Any, turns: Sequence[tuple[str, str]], system: str | None = None,
             eod: bool = False) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a llama3 sample as MindSpeed writes it."""
    eot = special(tok, "<|eot_id|>")
    ids = [special(tok, "<|begin_of_text|>")]
    labels = [IGNORE]
    if system:
        block = header(tok, "system") + piece(tok, system) + [eot]
        ids += block
        labels += [IGNORE] * len(block)
    for user, reply in turns:
        prompt = header(tok, "user") + piece(tok, user) + [eot] + header(tok, "assistant")
        target = piece(tok, reply) + [eot]
        ids += prompt + target
        labels += [IGNORE] * len(prompt) + target
    if eod:
        ids.append(eot)
        labels.append(eot)
    return ids, labels


# -- inputs ---------------------------------------------------------------------------------------
def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def nav_rows(n: int, seed: int = 0, words: int = 12) -> list[dict[str, str]]:
    import random

    rng = random.Random(seed)
    vocab = "left right bike lane road car light stop slow ahead cross turn".split()
    return [{"instruction": f"Ride to the park {i}.", "input": "" if i % 3 else f"Observation: {rng.choice(vocab)}.",
             "output": " ".join(rng.choice(vocab) for _ in range(rng.randint(1, words))).capitalize()
                       + f".\nThe next action is turn {rng.choice(['left', 'right'])}."} for i in range(n)]


def preprocess_rows(tmp_path: Path, rows: Any, **overrides: Any):
    from navila_tune.data import PreprocessParams, preprocess

    path = rows if isinstance(rows, (str, Path)) else write_parquet(tmp_path / "in" / "train.parquet", rows)
    prefix = str(tmp_path / "out" / "ds")
    values = dict(input=str(path), tokenizer_dir=str(TOKENIZER_DIR), output_prefix=prefix, seq_length=128,
                  progress=False, cache_dir=str(tmp_path / "cache"))
    values.update(overrides)
    params = PreprocessParams(**values)
    return preprocess(params), params.output_prefix


# -- reading the output ---------------------------------------------------------------------------
def read_indexed(prefix: str) -> dict[str, list[list[int]]]:
    """Every sequence of the three files, read with megatron-core's IndexedDataset."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    out = {}
    for key in KEYS:
        ds = IndexedDataset(f"{prefix}_packed_{key}_document")
        out[key] = [np.asarray(ds[i]).tolist() for i in range(len(ds))]
    return out


def parse_idx(path: str) -> dict[str, Any]:
    """The .idx header and arrays, parsed byte by byte from the file (not with megatron-core)."""
    raw = Path(path).read_bytes()
    out = {"magic": raw[0:9], "version": struct.unpack("<Q", raw[9:17])[0], "dtype_code": raw[17],
           "sequence_count": struct.unpack("<Q", raw[18:26])[0],
           "document_count": struct.unpack("<Q", raw[26:34])[0]}
    s, d = out["sequence_count"], out["document_count"]
    at = 34
    out["lengths"] = np.frombuffer(raw, "<i4", s, at).tolist()
    at += 4 * s
    out["pointers"] = np.frombuffer(raw, "<i8", s, at).tolist()
    at += 8 * s
    out["document_indices"] = np.frombuffer(raw, "<i8", d, at).tolist()
    at += 8 * d
    out["trailing_bytes"] = len(raw) - at
    return out
