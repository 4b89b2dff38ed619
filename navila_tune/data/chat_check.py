"""Does our template produce the ids the tokenizer's own chat template produces? Checked, not assumed."""

from __future__ import annotations

from typing import Any, Sequence

from .template import Conversation, Llama3Template

# Covers the system block and an earlier turn, which single-turn data never exercises.
PROBE = Conversation(turns=(("Where is the bike lane?", "On your right."),
                            ("Which way now?\nThe road forks ahead.", "Keep left. The next action is turn left.")),
                     system="You are a cycling navigation assistant.")


def _window(tokenizer: Any, ids: Sequence[int], at: int) -> str:
    return tokenizer.decode(list(ids[max(0, at - 3):at + 3]))


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_chat_template(template: Llama3Template, samples: list[tuple[str, Conversation]]) -> dict[str, Any]:
    """Compare full conversations and generation prompts with ``tokenizer.apply_chat_template``.

    ``samples`` are (source label, conversation); the PROBE conversation is always added.
    Returns status "match" | "mismatch" | "no_chat_template" | "error", and the first difference.
    """
    tokenizer = template.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        return {"status": "no_chat_template", "checked": 0,
                "detail": "the tokenizer has no chat_template; nothing to compare with"}
    checked = 0
    for source, conv in [*samples, ("probe", PROBE)]:
        messages_ids = template.encode_conversation(conv)
        ours_full = [i for ids in messages_ids for i in ids]
        ours_prompt = [i for ids in messages_ids[:-1] for i in ids]
        messages = conv.messages()
        try:
            theirs_full = list(tokenizer.apply_chat_template(messages, tokenize=True))
            theirs_prompt = list(tokenizer.apply_chat_template(messages[:-1], tokenize=True,
                                                               add_generation_prompt=True))
        except Exception as exc:  # a template may reject a role or raise on purpose
            return {"status": "error", "checked": checked,
                    "detail": f"apply_chat_template failed on {source}: {type(exc).__name__}: {exc}"}
        checked += 1
        for what, ours, theirs in (("conversation", ours_full, theirs_full),
                                   ("generation prompt", ours_prompt, theirs_prompt)):
            at = _first_difference(ours, theirs)
            if at is not None:
                return {"status": "mismatch", "checked": checked, "first_mismatch": {
                    "source": source, "what": what, "position": at,
                    "ours": ours[at] if at < len(ours) else None,
                    "theirs": theirs[at] if at < len(theirs) else None,
                    "ours_text": _window(tokenizer, ours, at), "theirs_text": _window(tokenizer, theirs, at),
                    "ours_length": len(ours), "theirs_length": len(theirs)}}
    return {"status": "match", "checked": checked}
