"""Tokenizer loading and the llama3 chat template (``navila_tune.data``, as preprocessing applies it)."""

from __future__ import annotations

from typing import Any, Sequence

STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>")


def load_tokenizer(tokenizer_dir: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"tokenizer_dir={tokenizer_dir!r} holds no loadable HF tokenizer ({e}). Fix: point it at the "
            f"model's folder with tokenizer.json / tokenizer_config.json (model.tokenizer_dir).") from e


def encode_chat_prompt(tokenizer: Any, user: str, system: str | None = None,
                       history: Sequence[tuple[str, str]] = ()) -> list[int]:
    """Token ids of the llama3 template up to and including the assistant header and ``\\n\\n``."""
    from navila_tune.data import encode_prompt

    return list(encode_prompt(tokenizer, user, system=system, history=tuple(history)))


def encode_chat_sample(tokenizer: Any, user: str, response: str, system: str | None = None,
                       history: Sequence[tuple[str, str]] = ()) -> tuple[list[int], list[int]]:
    """(input_ids, labels) exactly as preprocessing writes them: labels -100 over the prompt."""
    from navila_tune.data import encode_sample

    ids, labels = encode_sample(tokenizer, user, response, system=system, history=tuple(history))
    return list(ids), list(labels)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """``<|eot_id|>``, ``<|end_of_text|>`` and the tokenizer's EOS, those that exist."""
    ids = set()
    unk = getattr(tokenizer, "unk_token_id", None)
    for token in STOP_TOKENS:
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid >= 0 and tid != unk:
            ids.add(tid)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the tokenizer has neither <|eot_id|> nor an EOS token; generation could not stop")
    return sorted(ids)


def user_content(row: dict[str, Any], prompt_key: str, query_key: str | None) -> str:
    """A data row's user turn, built exactly as preprocessing builds it (``navila_tune.data.user_content``)."""
    from navila_tune.data import user_content as alpaca_user_content

    query = row.get(query_key) if query_key else None
    return alpaca_user_content(str(row.get(prompt_key) or ""), str(query) if query else None)