"""The shipped assets (tiny tokenizer/config, nav_cot_tiny data) are what the scripts generate, and keep their rules."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "navila_tune" / "assets"
TOKENIZER_DIR = ASSETS / "llama3_tiny"
DATA_DIR = ASSETS / "nav_cot_tiny"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
                   "generation_config.json")
DATA_FILES = ("train.parquet", "heldout.parquet")
LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
ANSWER = re.compile(r"^The next action is (move forward (25|50|75) cm|turn (left|right) (15|30|45) degrees|stop)\.$")


def navila_parse(text: str) -> tuple[str, int | None] | None:
    """NaVILA's action parser (navila_trainer.py): regexes in this order, case-insensitive."""
    if re.search(r"stop", text, re.IGNORECASE):
        return ("stop", None)
    for kind, pattern in (("forward", r"is move forward"), ("left", r"is turn left"), ("right", r"is turn right")):
        if re.search(pattern, text, re.IGNORECASE):
            amount = re.search(r"(?:move forward|turn left|turn right)\s+(\d+)", text, re.IGNORECASE)
            return (kind, int(amount.group(1)) if amount else None)
    return None


def intended_action(last_line: str) -> tuple[str, int | None]:
    match = ANSWER.match(last_line)
    assert match, f"not a NaVILA action line: {last_line!r}"
    if match.group(1) == "stop":
        return ("stop", None)
    if match.group(2):
        return ("forward", int(match.group(2)))
    return (match.group(3), int(match.group(4)))


def read_rows(path: Path) -> list[dict[str, str]]:
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """Run both scripts into a temp dir, as a user would."""
    out = tmp_path_factory.mktemp("assets")
    for script, name in (("make_tiny_tokenizer.py", "llama3_tiny"), ("make_nav_cot_data.py", "nav_cot_tiny")):
        subprocess.run([sys.executable, str(REPO / "scripts" / script), "--out-dir", str(out / name)],
                       check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict[str, str]]]:
    return {name: read_rows(DATA_DIR / f"{name}.parquet") for name in ("train", "heldout")}


@pytest.mark.parametrize("name", TOKENIZER_FILES)
def test_tokenizer_files_are_what_the_script_writes(generated, name):
    committed = (TOKENIZER_DIR / name).read_bytes()
    assert (generated / "llama3_tiny" / name).read_bytes() == committed, (
        f"{TOKENIZER_DIR / name} is stale: run python scripts/make_tiny_tokenizer.py")


def test_tokenizer_dir_has_only_generated_files():
    assert sorted(p.name for p in TOKENIZER_DIR.iterdir()) == sorted(TOKENIZER_FILES)


@pytest.mark.parametrize("name", DATA_FILES)
def test_data_files_are_what_the_script_writes(generated, name):
    committed, fresh = DATA_DIR / name, generated / "nav_cot_tiny" / name
    assert read_rows(fresh) == read_rows(committed), f"{committed} is stale: run python scripts/make_nav_cot_data.py"
    writer = pq.ParquetFile(committed).metadata.created_by
    if writer == pq.ParquetFile(fresh).metadata.created_by:  # bytes can only match with the same parquet writer
        assert fresh.read_bytes() == committed.read_bytes(), f"{committed} bytes differ from a fresh run"


def test_data_script_is_deterministic(tmp_path):
    for run in ("a", "b"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_nav_cot_data.py"), "--out-dir",
                        str(tmp_path / run)], check=True, capture_output=True)
    for name in DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_special_tokens_are_single_ids(tokenizer):
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in LLAMA3_SPECIALS]
    assert all(len(i) == 1 for i in ids), dict(zip(LLAMA3_SPECIALS, ids))
    assert len({i[0] for i in ids}) == len(LLAMA3_SPECIALS)
    assert all(i[0] == tokenizer.convert_tokens_to_ids(t) for t, i in zip(LLAMA3_SPECIALS, ids))


def test_bos_is_prepended_like_llama3(tokenizer):
    assert tokenizer.bos_token == "<|begin_of_text|>"
    assert tokenizer("hi").input_ids[0] == tokenizer.bos_token_id
    assert tokenizer("hi", add_special_tokens=False).input_ids[0] != tokenizer.bos_token_id
    assert tokenizer("hi").input_ids.count(tokenizer.bos_token_id) == 1


def test_eos_pad_unk(tokenizer):
    assert tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.pad_token is None and tokenizer.unk_token is None


def test_vocab_size_is_odd_and_matches_the_model_group(tokenizer):
    from omegaconf import OmegaConf

    arch = OmegaConf.load(REPO / "conf" / "model" / "llama3_tiny.yaml").arch
    assert len(tokenizer) == arch.vocab_size
    assert len(tokenizer) % 2 == 1, "an odd vocab makes TP=2 conversion pad one row"
    config = json.loads((TOKENIZER_DIR / "config.json").read_text())
    assert config["vocab_size"] == len(tokenizer)


def test_config_json_is_the_model_groups_architecture():
    from omegaconf import OmegaConf

    from navila_tune.arch import LlamaArch

    config = json.loads((TOKENIZER_DIR / "config.json").read_text())
    model_group = OmegaConf.load(REPO / "conf" / "model" / "llama3_tiny.yaml")
    arch = LlamaArch.from_mapping(OmegaConf.to_container(model_group.arch))
    assert LlamaArch.from_hf_config(config).mismatches(arch) == []
    assert config["architectures"] == ["LlamaForCausalLM"] and config["torch_dtype"] == "float32"
    assert config["rope_scaling"] is None and config["tie_word_embeddings"] is False
    assert config["rope_theta"] == 500000.0
    assert 2 <= config["num_key_value_heads"] < config["num_attention_heads"]
    assert config["num_key_value_heads"] % 2 == 0 and config["num_hidden_layers"] % 2 == 0  # TP=2, PP=2


def test_config_loads_and_ids_agree(tokenizer):
    config = transformers.AutoConfig.from_pretrained(TOKENIZER_DIR)
    generation = transformers.GenerationConfig.from_pretrained(TOKENIZER_DIR)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    end_of_text = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    assert config.bos_token_id == generation.bos_token_id == tokenizer.bos_token_id
    assert config.eos_token_id == eot
    assert sorted(generation.eos_token_id) == sorted([end_of_text, eot])


def test_chat_template_is_llama3_instruct(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Ride forward 50 cm."}], add_generation_prompt=True, tokenize=False)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nRide forward 50 cm.<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_any_text_round_trips(tokenizer):
    text = "Ünïcode, digits 1234567 and a word never seen: xylophone!"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_merges_use_the_legacy_string_form():
    merges = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)  # readable by tokenizers 0.15


def test_columns_and_sizes(splits):
    for name, rows in splits.items():
        assert rows and all(list(r) == ["instruction", "input", "output"] for r in rows), name
    assert 2000 <= len(splits["train"]) <= 10000 and 100 <= len(splits["heldout"]) <= 1000


def test_stop_appears_only_when_the_answer_is_stop(splits):
    for name, rows in splits.items():
        for i, row in enumerate(rows):
            answer_is_stop = row["output"].endswith("The next action is stop.")
            assert bool(re.search("stop", row["output"], re.IGNORECASE)) == answer_is_stop, (name, i, row["output"])


def test_every_response_ends_with_one_action_that_navila_parses_to_it(splits):
    for name, rows in splits.items():
        for i, row in enumerate(rows):
            lines = row["output"].split("\n")
            assert len(lines) == 2 and lines[0], (name, i, row["output"])
            assert navila_parse(row["output"]) == intended_action(lines[-1]), (name, i, row["output"])


def test_heldout_instructions_never_appear_in_train(splits):
    train = {r["instruction"] for r in splits["train"]}
    assert not [r["instruction"] for r in splits["heldout"] if r["instruction"] in train]


def test_heldout_covers_every_kind_of_answer(splits):
    kinds = {intended_action(r["output"].split("\n")[-1])[0] for r in splits["heldout"]}
    assert kinds == {"forward", "left", "right", "stop"}


def test_sequence_lengths_fit_the_data_group(tokenizer, splits):
    from omegaconf import OmegaConf

    seq_length = OmegaConf.load(REPO / "conf" / "data" / "nav_cot_tiny.yaml").seq_length
    template = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>")
    header = len(tokenizer.encode(template, add_special_tokens=False))
    for rows in splits.values():
        for row in rows:
            user = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
            n = header + sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in (user, row["output"]))
            assert n < seq_length, (n, row)  # MindSpeed drops samples of length >= seq_length


def test_data_card_examples_are_real_rows(splits):
    card = (DATA_DIR / "README.md").read_text()
    block = card.split("```\n")[1]
    examples = [e for e in block.strip().split("\n\n")]
    assert len(examples) >= 2
    train = {(r["instruction"], r["input"]): r["output"] for r in splits["train"]}
    for example in examples:
        fields: dict[str, list[str]] = {}
        key = None
        for line in example.split("\n"):
            head, _, rest = line.partition(":")
            if head in ("instruction", "input", "output"):
                key = head
                fields[key] = [rest.strip()]
            else:
                fields[key].append(line.strip())
        instruction, situation = fields["instruction"][0], fields["input"][0]
        assert train.get((instruction, situation)) == "\n".join(fields["output"]), example


def test_every_part_occurs_in_training(splits):
    """Held-out rows recombine parts; each part on its own must be seen in training."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_nav_cot_data as data

    text = " ".join(r["instruction"].lower() for r in splits["train"])
    parts = data.FORWARD_VERBS + data.TURN_VERBS + data.LANDMARKS
    parts += tuple(p.split(" {lm}")[0] for p in data.STOP_PHRASES)
    assert [p for p in parts if p not in text] == []

