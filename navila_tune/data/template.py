"""Prompt templates, exactly as MindSpeed-LLM 2.3.0 applies them (``configs/finetune/templates.json``).

llama3 (class ``Template``, LLaMA-Factory 0.8.2 alignment), per message:
- first user message: BOS, then (only for a non-empty system) the system block, then the user block;
- user block: ``<|start_header_id|>user<|end_header_id|>\\n\\n{content}<|eot_id|>``
  ``<|start_header_id|>assistant<|end_header_id|>\\n\\n`` (the prompt; labels -100);
- assistant message: ``{content}`` then EOS, which the template fix makes ``<|eot_id|>`` (trained).
Each string element is encoded on its own with ``add_special_tokens=False``, so the header markers map
to their single special-token ids. No separator between turns, no default system.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .errors import DataError

IGNORE_INDEX = -100

# --prompt-type choices of MindSpeed-LLM 2.3.0's preprocess_data.py.
MINDSPEED_PROMPT_TYPES = (
    "default", "empty", "trl", "chatglm2", "chatglm3", "chatglm3_system", "glm4", "chatml", "bailing_mini",
    "chatml_de", "qwen", "qwen_r1", "qwen_math_r1", "llama3", "llama2", "mistral", "mixtral", "gemma",
    "alpaca", "deepseek2", "deepseek2-lite", "cpm", "baichuan2", "deepseek3", "intern2", "hunyuan", "qwen3",
    "magistral", "plm", "qwen_lf",
)


@dataclass(frozen=True)
class Conversation:
    """One sample: (user, assistant) turns, earlier history first, and an optional system prompt."""

    turns: tuple[tuple[str, str], ...]
    system: str | None = None

    @property
    def response(self) -> str:
        return self.turns[-1][1]

    def messages(self) -> list[dict[str, str]]:
        """The same sample as chat messages (for ``apply_chat_template``)."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for user, assistant in self.turns:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out


def user_content(instruction: str | None, query: str | None = None) -> str:
    """Alpaca user content as MindSpeed builds it: instruction + "\\n" + input, skipping empty parts."""
    return "\n".join(part for part in (instruction, query) if part)


class Llama3Template:
    """The llama3 template bound to one tokenizer: constant ids plus the per-message strings to encode."""

    name = "llama3"
    # How the template treats enable_thinking: "ignored" (accepted, no effect: MindSpeed's llama3 is a plain
    # Template, not a ReasoningTemplate), "unsupported" (refused) or "supported".
    thinking = "ignored"
    USER_HEAD = "<|start_header_id|>user<|end_header_id|>\n\n"
    USER_TAIL = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    SYSTEM_HEAD = "<|start_header_id|>system<|end_header_id|>\n\n"
    SYSTEM_TAIL = "<|eot_id|>"
    SPECIAL_TOKENS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    STOP_WORD = "<|eot_id|>"  # replace_eos=true: EOS becomes the first stop word

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} is not a fast "
                            f"tokenizer; the data pipeline needs tokenizer.json (a fast tokenizer)")
        self.backend = tokenizer.backend_tokenizer
        ids = {t: self.backend.token_to_id(t) for t in self.SPECIAL_TOKENS}
        missing = [t for t, i in ids.items()
                   if i is None or self.backend.encode(t, add_special_tokens=False).ids != [i]]
        if missing:
            raise DataError(f"tokenizer {tokenizer.name_or_path!r} lacks the llama3 special token(s) {missing} "
                            f"as single added tokens; prompt_type=llama3 needs <|start_header_id|>, "
                            f"<|end_header_id|> and <|eot_id|>")
        self.tokenizer = tokenizer
        self.bos_id: int | None = tokenizer.bos_token_id  # MindSpeed skips the BOS slot when it is None
        self.eos_id: int = ids[self.STOP_WORD]
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.prefix_ids: list[int] = [] if self.bos_id is None else [self.bos_id]

    # -- strings handed to the tokenizer, one per MindSpeed message element --------------------------
    def user_text(self, content: str) -> str:
        return self.USER_HEAD + content + self.USER_TAIL

    def system_text(self, content: str) -> str:
        return self.SYSTEM_HEAD + content + self.SYSTEM_TAIL

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Batch-encode with the fast tokenizer, exactly like ``tokenizer.encode(t, add_special_tokens=False)``."""
        if not texts:
            return []
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def texts_for(self, conv: Conversation) -> list[str]:
        """The strings of one conversation in encoding order: [system], then user_i, assistant_i per turn."""
        out = [self.system_text(conv.system)] if conv.system else []
        for user, assistant in conv.turns:
            out += [self.user_text(user), assistant]
        return out

    def messages_ids(self, conv: Conversation, encoded: Sequence[list[int]]) -> list[list[int]]:
        """MindSpeed's per-message id lists (user, assistant, user, ...) from ``texts_for``'s encodings."""
        system = encoded[0] if conv.system else []
        rest = encoded[1:] if conv.system else encoded
        return self.assemble(system, rest[0::2], rest[1::2])

    def assemble(self, system_ids: Sequence[int], users_ids: Sequence[list[int]],
                 replies_ids: Sequence[list[int]]) -> list[list[int]]:
        """Per-message ids: [BOS + system + user_0, reply_0 + EOS, user_1, reply_1 + EOS, ...]."""
        out: list[list[int]] = []
        for t, (user_ids, reply_ids) in enumerate(zip(users_ids, replies_ids)):
            out.append(self.prefix_ids + list(system_ids) + user_ids if t == 0 else list(user_ids))
            out.append(reply_ids + [self.eos_id])
        return out

    def encode_conversation(self, conv: Conversation) -> list[list[int]]:
        return self.messages_ids(conv, self.encode_texts(self.texts_for(conv)))


TEMPLATES: dict[str, type] = {"llama3": Llama3Template}


def template_class(prompt_type: str, enable_thinking: bool | None = None) -> type:
    """The template class for a prompt type; refuses unknown types and unhonourable enable_thinking."""
    cls = TEMPLATES.get(prompt_type)
    if cls is None:
        known = ", ".join(sorted(TEMPLATES))
        if prompt_type in MINDSPEED_PROMPT_TYPES:
            raise DataError(f"prompt_type={prompt_type!r} is a MindSpeed-LLM template the native backend does "
                            f"not implement; native prompt types: {known} (or use backend=mindspeed)")
        raise DataError(f"prompt_type={prompt_type!r} is not a known prompt type; native: {known}; "
                        f"MindSpeed-LLM: {', '.join(MINDSPEED_PROMPT_TYPES)}")
    if enable_thinking is not None and cls.thinking == "unsupported":
        raise DataError(f"data.enable_thinking={enable_thinking} cannot be honoured by prompt_type="
                        f"{prompt_type!r} (it has no thinking block); set data.enable_thinking=null")
    return cls


def get_template(tokenizer: Any, prompt_type: str = "llama3") -> Llama3Template:
    return template_class(prompt_type)(tokenizer)


def _conversation(user: str, system: str | None, history: Iterable[tuple[str, str]],
                  response: str = "") -> Conversation:
    return Conversation(turns=tuple((u, a) for u, a in history) + ((user, response),), system=system or None)


def encode_prompt(tokenizer: Any, user: str, system: str | None = None,
                  history: Iterable[tuple[str, str]] = (), prompt_type: str = "llama3") -> list[int]:
    """Ids up to and including the final assistant header + "\\n\\n": what generation continues from."""
    template = get_template(tokenizer, prompt_type)
    messages = template.encode_conversation(_conversation(user, system, history))
    return [i for ids in messages[:-1] for i in ids]


def encode_sample(tokenizer: Any, user: str, response: str, system: str | None = None,
                  history: Iterable[tuple[str, str]] = (), append_eod: bool = False,
                  prompt_type: str = "llama3") -> tuple[list[int], list[int]]:
    """One untruncated training sample: (input_ids, labels), labels unshifted and -100 over the prompt."""
    template = get_template(tokenizer, prompt_type)
    messages = template.encode_conversation(_conversation(user, system, history, response))
    input_ids: list[int] = []
    labels: list[int] = []
    for k, ids in enumerate(messages):
        input_ids += ids
        labels += ids if k % 2 else [IGNORE_INDEX] * len(ids)
    if append_eod:
        input_ids.append(template.eos_id)
        labels.append(template.eos_id)
    return input_ids, labels
