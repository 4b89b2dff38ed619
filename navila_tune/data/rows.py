"""Alpaca-style rows -> conversations, sorting out bad rows (counted and shown, never fatal one by one)."""

from __future__ import annotations

from typing import Any, Sequence

from .template import Conversation, user_content

# Why a row was not turned into a sample. "overlong" is decided later, after tokenization.
MISSING = "missing_column"  # a required column is null / absent in this row
NON_STRING = "non_string"  # a text column holds a number, list, ...
EMPTY_RESPONSE = "empty_response"
EMPTY_PROMPT = "empty_prompt"  # instruction and input both empty
BAD_HISTORY = "malformed_history"  # history is not a list of [user, assistant] string pairs
OVERLONG = "overlong"
BAD_ROW_REASONS = (MISSING, NON_STRING, EMPTY_RESPONSE, EMPTY_PROMPT, BAD_HISTORY)
DROP_REASONS = BAD_ROW_REASONS + (OVERLONG,)

BadRow = tuple[str, str]  # (reason, detail)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_conversation(values: dict[str, Any], columns: dict[str, str | None]) -> Conversation | BadRow:
    """One row (mapped key -> value) as a Conversation, or (reason, detail) when it is bad."""

    def text(key: str, required: bool) -> str | BadRow | None:
        value = values.get(key)
        if value is None:
            return (MISSING, f"column {columns[key]!r} is null/absent") if required else None
        if not isinstance(value, str):
            return NON_STRING, f"column {columns[key]!r} holds {type(value).__name__} {_short(value)}"
        return value

    got: dict[str, Any] = {}
    for key, required in (("prompt", True), ("response", True), ("query", False), ("system", False)):
        if not columns.get(key):
            got[key] = None
            continue
        value = text(key, required)
        if isinstance(value, tuple):
            return value
        got[key] = value
    turns: list[tuple[str, str]] = []
    if columns.get("history") and values.get("history") is not None:
        history = values["history"]
        if not isinstance(history, (list, tuple)) or not all(
                isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
                for pair in history):
            return BAD_HISTORY, f"column {columns['history']!r} is not a list of [user, assistant] strings: " \
                                f"{_short(history)}"
        turns = [(pair[0], pair[1]) for pair in history]
    if not got["response"].strip():
        return EMPTY_RESPONSE, f"column {columns['response']!r} is empty"
    user = user_content(got["prompt"], got["query"])
    if not user:
        return EMPTY_PROMPT, f"columns {columns['prompt']!r} and {columns.get('query')!r} are both empty"
    turns.append((user, got["response"]))
    return Conversation(turns=tuple(turns), system=got["system"] or None)


def convert_rows(batch: dict[str, Sequence[Any]], columns: dict[str, str | None],
                 n_rows: int) -> list[Conversation | BadRow]:
    """Column batch (column name -> values) -> one Conversation or BadRow per row."""
    keys = [k for k, col in columns.items() if col]
    values = [batch[columns[k]] for k in keys]
    return [to_conversation({k: v[i] for k, v in zip(keys, values)}, columns) for i in range(n_rows)]
