"""Label view: one written sequence, decoded, with the trained tokens marked (what the model will learn)."""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

import numpy as np

from .errors import DataError
from .template import IGNORE_INDEX
from .writer import KEYS, dataset_prefix, output_files, report_path

GREEN, DIM, RESET = "\033[1;32m", "\033[2m", "\033[0m"
OPEN, CLOSE = "[[", "]]"


def read_sequence(prefix: str, index: int) -> dict[str, np.ndarray]:
    """Sequence ``index`` of each of the three files, read with megatron-core's IndexedDataset."""
    missing = [f for f in output_files(prefix) if not os.path.exists(f)]
    if missing:
        raise DataError(f"{prefix!r} is not a complete dataset prefix: missing {', '.join(missing)}")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    out = {}
    for key in KEYS:
        ds = IndexedDataset(dataset_prefix(prefix, key))
        if not 0 <= index < len(ds):
            raise DataError(f"--index {index} is out of range: {prefix!r} holds {len(ds)} sequences (0..{len(ds) - 1})")
        out[key] = np.array(ds[index])  # a copy: the view dies with ds's memory map
    return out


def _report(prefix: str) -> dict[str, Any]:
    try:
        with open(report_path(prefix)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _spans(labels: np.ndarray) -> list[tuple[int, int, bool]]:
    """Runs of (start, end, trained)."""
    out = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or (labels[i] != IGNORE_INDEX) != (labels[start] != IGNORE_INDEX):
            out.append((start, i, bool(labels[start] != IGNORE_INDEX)))
            start = i
    return out


def _trailing_pads(ids: np.ndarray, labels: np.ndarray, pad_id: int | None) -> int:
    if pad_id is None:
        return 0
    n = 0
    while n < len(ids) and ids[-1 - n] == pad_id and labels[-1 - n] == IGNORE_INDEX:
        n += 1
    return n


def render(seq: dict[str, np.ndarray], tokenizer: Any | None, colour: bool, packed: bool = False,
           pad_id: int | None = None) -> str:
    ids, labels, mask = seq["input_ids"], seq["labels"], seq["attention_mask"]
    pads = _trailing_pads(ids, labels, pad_id) if packed else 0
    body = len(ids) - pads
    trained = int((labels != IGNORE_INDEX).sum())
    lines = [f"{len(ids)} tokens: {trained} trained (label != -100), {body - trained} prompt/masked"
             + (f", {pads} padding" if pads else "")]
    if set(np.unique(mask).tolist()) - {0, 1}:
        numbers = [int(v) for v in np.unique(mask) if v]
        lines.append(f"neat-pack samples in this row: {numbers} (attention_mask holds the sample number)")
    lines.append("legend: " + (f"{DIM}prompt{RESET} {GREEN}trained{RESET}" if colour
                               else f"prompt text plain, {OPEN}trained text{CLOSE}"))
    if tokenizer is None:
        lines.append("(no tokenizer: pass --tokenizer DIR to decode) ids/labels:")
        lines.append(" ".join(f"{i}" if l == IGNORE_INDEX else f"{OPEN}{i}{CLOSE}" for i, l in zip(ids[:body], labels[:body])))
        return "\n".join(lines)
    text = []
    for b, e, is_trained in _spans(labels[:body]):
        piece = tokenizer.decode(ids[b:e].tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if colour:
            text.append((GREEN if is_trained else DIM) + piece + RESET)
        else:
            text.append(f"{OPEN}{piece}{CLOSE}" if is_trained else piece)
    if pads:
        text.append(f"<pad x{pads}>")
    lines.append("".join(text))
    return "\n".join(lines)


def token_table(seq: dict[str, np.ndarray], tokenizer: Any | None) -> str:
    rows = ["pos\tid\tlabel\tmask\ttoken"]
    for pos, (i, l, m) in enumerate(zip(seq["input_ids"], seq["labels"], seq["attention_mask"])):
        piece = tokenizer.convert_ids_to_tokens(int(i)) if tokenizer is not None else ""
        rows.append(f"{pos}\t{i}\t{l}\t{m}\t{piece!r}")
    return "\n".join(rows)


def show(prefix: str, index: int, tokenizer_dir: str | None = None, colour: bool | None = None,
         tokens: bool = False, out: TextIO | None = None) -> str:
    """Render sequence ``index`` of ``prefix``; the tokenizer defaults to the one named in the data report."""
    import sys

    out = out or sys.stdout
    report = _report(prefix)
    settings = report.get("settings", {})
    tokenizer_dir = tokenizer_dir or settings.get("tokenizer_dir")
    tokenizer = None
    if tokenizer_dir:
        from .pipeline import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_dir)
    if colour is None:
        colour = hasattr(out, "isatty") and out.isatty()
    seq = read_sequence(prefix, index)
    text = f"{prefix} sequence {index}: " + render(seq, tokenizer, colour, bool(settings.get("pack")),
                                                   settings.get("pad_id"))
    if tokens:
        text += "\n" + token_table(seq, tokenizer)
    print(text, file=out)
    return text
