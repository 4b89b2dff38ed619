"""Write ``navila_tune/assets/llama3_tiny``: a tiny Llama-3-style tokenizer and model config (no weights).

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on the training split of the
``nav_cot_tiny`` dataset (``scripts/make_nav_cot_data.py``), shaped like Meta's Llama-3 tokenizer:

- Llama-3's pre-tokenizer regex, byte-level alphabet and decoder, so any text encodes;
- the Llama-3 special tokens after the BPE tokens in Meta's order (``<|begin_of_text|>``,
  ``<|end_of_text|>``, ``<|reserved_special_token_0..3|>``, ``<|start_header_id|>``, ``<|end_header_id|>``,
  ``<|reserved_special_token_4|>``, ``<|eot_id|>``, then reserved tokens up to VOCAB_SIZE, as Llama-3 fills
  its vocabulary up to 128256), each one id;
- a post-processor that prepends ``<|begin_of_text|>`` (``tokenizer("hi").input_ids[0] == bos``);
- eos ``<|eot_id|>`` as in the fixed Llama-3-Instruct release, no pad and no unk token;
- Meta's Llama-3-Instruct ``chat_template``.

BPE merges are stored in the ``"a b"`` string form that tokenizers < 0.20 (NaVILA pins 0.15) can read.
The vocabulary size (``len(tokenizer)``) is odd on purpose (VOCAB_SIZE), so that a TP=2 conversion must
pad the embedding by one row; it must equal ``arch.vocab_size`` in ``conf/model/llama3_tiny.yaml``.

Usage: ``python scripts/make_tiny_tokenizer.py [--out-dir DIR]``. Deterministic: byte-identical on rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_nav_cot_data  # noqa: E402  (the dataset generator next to this script)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "navila_tune" / "assets" / "llama3_tiny"

VOCAB_SIZE = 1023  # len(tokenizer), odd on purpose; = arch.vocab_size in conf/model/llama3_tiny.yaml
BPE_MAX_SIZE = 767  # at most this many BPE tokens (bytes + merges), so at least 256 specials as in Llama-3
MIN_SPECIAL = 12
MODEL_MAX_LENGTH = 1024  # = arch.max_position_embeddings

BOS = "<|begin_of_text|>"
EOS_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"

# Llama-3's pre-tokenizer split pattern (from Meta's tokenizer.json).
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Meta's Llama-3-Instruct chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Text besides the dataset, so that the template's role names and NaVILA's prompt words get tokens.
EXTRA_TEXT = (
    "system\n\n", "user\n\n", "assistant\n\n", "tool\n\n",
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language.",
    "Imagine you are a robot programmed for navigation tasks. You have been given a video of historical "
    "observations and an image of the current observation. Your assigned task is: Analyze this series "
    "of images to decide your next action, which could be turning left or right by a specific degree, "
    "moving forward a certain distance, or stop if the task is completed.",
    "0 1 2 3 4 5 6 7 8 9 10 100 % . , ; : ! ? ( ) [ ] \" ' - / + = * #",
)


def special_tokens(count: int) -> list[str]:
    """``count`` special tokens in Llama-3's order; reserved tokens fill the vocabulary up to VOCAB_SIZE."""
    tokens = [BOS, EOS_TEXT] + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    tokens += [START_HEADER, END_HEADER, "<|reserved_special_token_4|>", EOT]
    tokens += [f"<|reserved_special_token_{i}|>" for i in range(5, 5 + count - len(tokens))]
    return tokens


def training_text() -> list[str]:
    train, _ = make_nav_cot_data.build_splits()
    lines = list(EXTRA_TEXT)
    for example in train:
        lines += [example.instruction, example.input, example.output]
    return lines


def train_tokenizer():
    """The trained ``tokenizers.Tokenizer`` with Llama-3's pipeline and special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_MAX_SIZE, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tokenizer.train_from_iterator(training_text(), trainer=trainer)
    num_special = VOCAB_SIZE - tokenizer.get_vocab_size()
    if num_special < MIN_SPECIAL:
        raise RuntimeError(f"only {num_special} ids left for special tokens; raise VOCAB_SIZE or lower BPE_MAX_SIZE")
    specials = special_tokens(num_special)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(
            single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, bos_id)],
        ),
    ])
    return tokenizer


def tokenizer_json(tokenizer) -> dict:
    """tokenizer.json content, with merges in the legacy ``"a b"`` form and no newer-only model keys."""
    data = json.loads(tokenizer.to_str())
    model = data["model"]
    model["merges"] = [" ".join(pair) if isinstance(pair, list) else pair for pair in model["merges"]]
    model.pop("ignore_merges", None)  # unknown to tokenizers 0.15; its default (False) is what we train with
    return data


def tokenizer_config(tokenizer) -> dict:
    first_special = tokenizer.token_to_id(BOS)
    added = {
        str(i): {
            "content": tokenizer.id_to_token(i), "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True,
        }
        for i in range(first_special, tokenizer.get_vocab_size())
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "eos_token": EOT,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MODEL_MAX_LENGTH,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map() -> dict:
    def entry(t: str) -> dict:
        return {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    return {"bos_token": entry(BOS), "eos_token": entry(EOT)}


def read_arch() -> dict:
    """``arch`` of conf/model/llama3_tiny.yaml (the one place the architecture lives)."""
    from omegaconf import OmegaConf

    arch = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf" / "model" / "llama3_tiny.yaml").arch)
    if arch["vocab_size"] != VOCAB_SIZE:
        raise SystemExit(
            f"conf/model/llama3_tiny.yaml: arch.vocab_size is {arch['vocab_size']}, but the tokenizer has "
            f"{VOCAB_SIZE} tokens; set arch.vocab_size: {VOCAB_SIZE}"
        )
    return arch


def model_config(arch: dict, bos_id: int, eos_id: int) -> dict:
    """config.json of a LlamaForCausalLM with the configured architecture (navila_tune.arch's mapping)."""
    sys.path.insert(0, str(REPO_ROOT))
    from navila_tune.arch import LlamaArch

    config = LlamaArch.from_mapping(arch).hf_config(
        torch_dtype="float32", bos_token_id=bos_id, eos_token_id=eos_id,
        attention_dropout=0.0, initializer_range=0.02, use_cache=True,
    )
    return dict(sorted(config.items()))


def generation_config(bos_id: int, eos_ids: list[int]) -> dict:
    return {"bos_token_id": bos_id, "do_sample": False, "eos_token_id": eos_ids}


def dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_assets(out_dir: Path) -> None:
    """Write every file into ``out_dir`` (built in a temp dir next to it, then swapped in)."""
    arch = read_arch()
    tokenizer = train_tokenizer()
    if tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    bos_id, eos_text_id, eot_id = (tokenizer.token_to_id(t) for t in (BOS, EOS_TEXT, EOT))
    files = {
        "tokenizer.json": dump(tokenizer_json(tokenizer)),
        "tokenizer_config.json": dump(tokenizer_config(tokenizer)),
        "special_tokens_map.json": dump(special_tokens_map()),
        "config.json": dump(model_config(arch, bos_id, eot_id)),
        "generation_config.json": dump(generation_config(bos_id, [eos_text_id, eot_id])),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", suffix=".tmp", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    write_assets(args.out_dir)
    print(f"wrote tokenizer ({VOCAB_SIZE} tokens) and config to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
