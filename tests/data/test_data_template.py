"""The llama3 template: exact ids and labels against an independent piece-by-piece construction."""

from __future__ import annotations

import pytest

from data_testkit import IGNORE, expected, header, piece, special
from navila_tune.data import DataError, encode_prompt, encode_sample, user_content
from navila_tune.data.template import Llama3Template, template_class


def test_special_tokens_are_single_ids(tok):
    for token in ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        special(tok, token)
    t = Llama3Template(tok)
    assert t.bos_id == special(tok, "<|begin_of_text|>")
    assert t.eos_id == t.pad_id == special(tok, "<|eot_id|>")  # the fixture has no pad token


def test_single_turn(tok):
    ids, labels = encode_sample(tok, "Ride to the park.", "Go straight.\nThe next action is turn left.")
    want_ids, want_labels = expected(tok, [("Ride to the park.", "Go straight.\nThe next action is turn left.")])
    assert ids == want_ids and labels == want_labels
    # prompt = BOS + user block + assistant header; trained = reply + <|eot_id|>
    n_prompt = 1 + len(header(tok, "user")) + len(piece(tok, "Ride to the park.")) + 1 + len(header(tok, "assistant"))
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and ids[-1] == special(tok, "<|eot_id|>")


def test_with_input_joins_instruction_and_input_with_a_newline(tok):
    user = user_content("Ride to the park.", "Observation: a car ahead.")
    assert user == "Ride to the park.\nObservation: a car ahead."
    assert user_content("Ride.", "") == user_content("Ride.", None) == "Ride."
    assert user_content("", "Only input.") == "Only input."
    ids, labels = encode_sample(tok, user, "Slow down.")
    assert (ids, labels) == expected(tok, [(user, "Slow down.")])


def test_with_system(tok):
    ids, labels = encode_sample(tok, "Ride to the park.", "Stop.", system="You are a cycling assistant.")
    assert (ids, labels) == expected(tok, [("Ride to the park.", "Stop.")], system="You are a cycling assistant.")
    assert ids[1] == special(tok, "<|start_header_id|>")
    # an empty system adds nothing (llama3 has no default system)
    assert encode_sample(tok, "Hi.", "Go.", system="") == expected(tok, [("Hi.", "Go.")])


def test_multi_turn_history_trains_every_reply(tok):
    history = [("Where is the lane?", "On the right."), ("And now?", "Keep left.")]
    ids, labels = encode_sample(tok, "Which way?", "Turn right.", system="Sys.", history=history)
    want = expected(tok, [*history, ("Which way?", "Turn right.")], system="Sys.")
    assert (ids, labels) == want
    trained = [i for i, lab in zip(ids, labels) if lab != IGNORE]
    eot = special(tok, "<|eot_id|>")
    assert trained == (piece(tok, "On the right.") + [eot] + piece(tok, "Keep left.") + [eot]
                       + piece(tok, "Turn right.") + [eot])


def test_append_eod_adds_a_trained_eot(tok):
    ids, labels = encode_sample(tok, "Hi.", "Go.", append_eod=True)
    assert (ids, labels) == expected(tok, [("Hi.", "Go.")], eod=True)


def test_encode_prompt_ends_with_the_assistant_header(tok):
    history = [("Where?", "Here.")]
    prompt = encode_prompt(tok, "Which way?", system="Sys.", history=history)
    full, labels = encode_sample(tok, "Which way?", "Left.", system="Sys.", history=history)
    assert full[:len(prompt)] == prompt
    assert prompt[-len(header(tok, "assistant")):] == header(tok, "assistant")
    assert labels[len(prompt) - 1] == IGNORE and labels[len(prompt)] != IGNORE


def test_matches_the_tokenizers_chat_template(tok):
    """The fixture's chat template renders the same ids (content without surrounding whitespace)."""
    msgs = [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Where?"},
            {"role": "assistant", "content": "Here."}, {"role": "user", "content": "Which way?"},
            {"role": "assistant", "content": "Left."}]
    ids, _ = encode_sample(tok, "Which way?", "Left.", system="Sys.", history=[("Where?", "Here.")])
    assert ids == list(tok.apply_chat_template(msgs, tokenize=True))
    assert encode_prompt(tok, "Which way?", system="Sys.", history=[("Where?", "Here.")]) == list(
        tok.apply_chat_template(msgs[:-1], tokenize=True, add_generation_prompt=True))


def test_unknown_and_unimplemented_prompt_types(monkeypatch):
    with pytest.raises(DataError, match=r"'llama_3' is not a known prompt type; native: llama3"):
        template_class("llama_3")
    with pytest.raises(DataError, match=r"'qwen3' is a MindSpeed-LLM template the native backend does not"):
        template_class("qwen3")
    assert template_class("llama3", enable_thinking=True) is Llama3Template  # accepted, no effect

    class NoThinking(Llama3Template):
        thinking = "unsupported"

    monkeypatch.setitem(__import__("navila_tune.data.template", fromlist=["TEMPLATES"]).TEMPLATES,
                        "plain", NoThinking)
    with pytest.raises(DataError, match=r"enable_thinking=True cannot be honoured by prompt_type='plain'"):
        template_class("plain", enable_thinking=True)
    assert template_class("plain", enable_thinking=None) is NoThinking


def test_a_tokenizer_without_the_llama3_special_tokens_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"hello": 0, "<unk>": 1}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(DataError, match=r"lacks the llama3 special token\(s\) \['<\|start_header_id\|>'"):
        Llama3Template(plain)


def test_pipeline_tokenizer_is_what_autotokenizer_builds(tok):
    from data_testkit import TOKENIZER_DIR
    from navila_tune.data.pipeline import load_tokenizer

    direct = load_tokenizer(str(TOKENIZER_DIR))
    assert type(direct) is type(tok)
    assert direct.get_vocab() == tok.get_vocab() and direct.all_special_tokens == tok.all_special_tokens
    assert (direct.bos_token_id, direct.eos_token_id, direct.pad_token_id) == (
        tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert direct.chat_template == tok.chat_template
