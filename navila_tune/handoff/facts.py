"""What NaVILA expects from the LLM it receives (AnjieCheng/NaVILA at 76b98f2, a VILA-1.5 fork).

Standard library only: the pinned-stack check imports this module in an environment that has nothing of
navila_tune's dependencies.
"""

from __future__ import annotations

# ``llava/train/train.py`` picks the model class by substring of ``--model_name_or_path``.
FORBIDDEN_PATH_SUBSTRINGS = ("mpt", "mistral", "mixtral", "gemma")

# The llama_3 template's special tokens; each must encode to exactly one id.
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
TEMPLATE_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, EOT)
# Their ids in Meta's Llama-3 vocabulary (128256 rows, or more with NaVILA's [PAD]).
LLAMA3_VOCAB = 128256
LLAMA3_IDS = {BEGIN_OF_TEXT: 128000, END_OF_TEXT: 128001, START_HEADER: 128006, END_HEADER: 128007, EOT: 128009}

# Tokens VILA adds to the tokenizer only, never embedded (``llava/utils/tokenizer.py``'s label sentinel, the
# media placeholders): a NaVILA llm/ tokenizer may list them beyond vocab_size.
VILA_TOKENIZER_ONLY = ("<vila/sentinel>", "<image>", "<vila/video>")

# Tokenizer files an HF Llama-3 LLM directory must ship, and the class NaVILA's loader needs
# (``use_fast=False`` still gives the fast tokenizer for this class; LlamaTokenizer would look for a
# SentencePiece tokenizer.model that Llama-3 does not have).
REQUIRED_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_CLASS = "PreTrainedTokenizerFast"

# ``build_llm_and_tokenizer``'s calls (``llava/model/language_model/builder.py``), model_max_length of every
# NaVILA script.
MODEL_MAX_LENGTH = 4096
TOKENIZER_KWARGS = {"model_max_length": MODEL_MAX_LENGTH, "padding_side": "right", "use_fast": False,
                    "legacy": False}

# ``llava/conversation.py``: conv ``llama_3`` (SeparatorStyle.LLAMA_3).
LLAMA_3_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)
LLAMA_3_ROLES = ("<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n")
LLAMA_3_SEP = EOT
LLAMA_3_SEP2 = END_OF_TEXT


def llama_3_prompt(messages: list[tuple[int, str | None]]) -> str:
    """``Conversation.get_prompt`` for ``llama_3``: (role index, message or None for the open turn).

    Every message but the last ends with ``<|eot_id|>``; the last one ends with ``<|end_of_text|>``; a
    None message leaves its role header open for generation.
    """
    text = LLAMA_3_SYSTEM + LLAMA_3_SEP
    for i, (role, message) in enumerate(messages):
        if message:
            text += LLAMA_3_ROLES[role] + message + (LLAMA_3_SEP if i < len(messages) - 1 else LLAMA_3_SEP2)
        else:
            text += LLAMA_3_ROLES[role]
    return text


def forbidden_substrings(path: str) -> list[str]:
    """The substrings of ``path`` that would make NaVILA pick a non-Llama model class (case-insensitive)."""
    low = path.lower()
    return [s for s in FORBIDDEN_PATH_SUBSTRINGS if s in low]
