"""Batched KV-cache decoding with left padding: equal to one-by-one decoding and to HF generate."""

from __future__ import annotations

import pytest
import torch

import native_testkit as kit
from navila_tune.data import encode_prompt
from navila_tune.native.generate import (GenerateParams, Sampling, generate, generate_ids, load_for_inference,
                                         next_tokens)

STOPS = [kit.eot_id(kit.tokenizer())]


@pytest.fixture(scope="module")
def model(tiny):
    m, meta = load_for_inference(str(tiny.base), None, torch.device("cpu"))
    return m


def _prompts(n=5):
    tok = kit.tokenizer()
    texts = ["Ride to the bridge.", "Turn around now please, the road is closed ahead of us.", "Stop.",
             "Where is the red door? Observation: nothing visible.", "Go."][:n]
    return [encode_prompt(tok, t) for t in texts]


def test_batched_left_padded_decoding_equals_one_by_one_and_hf_generate(model):
    prompts = _prompts()
    greedy = Sampling(max_new_tokens=10)
    free = generate_ids(model, prompts, greedy, stop_ids=STOPS, batch_size=5, vocab_limit=None, seed=0)
    # Stop tokens taken from those runs, so rows finish at different steps and leave the batch early.
    stops = sorted({free[0][0][3], free[2][0][6]} - {t for t in free[1][0]})
    batched = generate_ids(model, prompts, greedy, stop_ids=stops, batch_size=4, vocab_limit=None, seed=0)
    single = [generate_ids(model, [p], greedy, stop_ids=stops, batch_size=1, vocab_limit=None, seed=0)[0]
              for p in prompts]
    assert batched == single
    assert {reason for _, reason in batched} == {"stop", "length"}
    for p, (ids, reason) in zip(prompts, single):
        ref = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=10, eos_token_id=stops,
                             pad_token_id=stops[0], use_cache=True)[0, len(p):].tolist()
        if ref and ref[-1] in stops:
            ref = ref[:-1]
        assert ids == ref
        assert reason == ("stop" if len(ids) < 10 else "length")


def test_padded_vocab_rows_are_never_generated(tiny, model):
    limit = tiny.arch.vocab_size  # tokenizer size; the model has padded rows beyond it
    assert model.lm_head.weight.shape[0] > limit
    logits = torch.zeros(2, model.lm_head.weight.shape[0])
    logits[:, limit:] = 100.0
    logits[0, 3] = 1.0
    gen = torch.Generator().manual_seed(0)
    assert next_tokens(logits.clone(), Sampling(4), limit, gen).tolist()[0] == 3
    sampled = next_tokens(logits.clone(), Sampling(4, temperature=1.0), limit, gen)
    assert (sampled < limit).all()


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    prompts = _prompts(3)
    sample = Sampling(max_new_tokens=8, temperature=1.5, top_p=0.95, top_k=0)
    a = generate_ids(model, prompts, sample, stop_ids=STOPS, batch_size=3, vocab_limit=None, seed=7)
    b = generate_ids(model, prompts, sample, stop_ids=STOPS, batch_size=3, vocab_limit=None, seed=7)
    c = generate_ids(model, prompts, sample, stop_ids=STOPS, batch_size=3, vocab_limit=None, seed=8)
    assert a == b and a != c
    top1 = generate_ids(model, prompts, Sampling(8, temperature=1.0, top_k=1), stop_ids=STOPS, batch_size=3,
                        vocab_limit=None, seed=3)
    assert top1 == generate_ids(model, prompts, Sampling(8), stop_ids=STOPS, batch_size=3, vocab_limit=None, seed=0)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    gen = torch.Generator().manual_seed(0)
    draws = {int(next_tokens(probs.log(), Sampling(1, temperature=1.0, top_p=0.7), None, gen)) for _ in range(200)}
    assert draws == {0, 1}
    draws = {int(next_tokens(probs.log(), Sampling(1, temperature=1.0, top_k=3), None, gen)) for _ in range(300)}
    assert draws == {0, 1, 2}


def test_generate_writes_jsonl_and_prints(tiny, tmp_path, capsys):
    out = tmp_path / "g" / "gen.jsonl"
    records = generate(GenerateParams(load_dir=str(tiny.base), tokenizer_dir=str(kit.TOKENIZER_DIR),
                                      prompts=["Ride to the kiosk.", "Go."], output_jsonl=str(out),
                                      max_new_tokens=5, batch_size=2))
    assert kit.read_jsonl(out) == records
    assert [r["index"] for r in records] == [0, 1] and all(r["num_tokens"] <= 5 for r in records)
    printed = capsys.readouterr().out
    assert "### prompt 0\nRide to the kiosk." in printed and "### generation" in printed


def test_bad_sampling_settings_are_named(tiny, tmp_path):
    base = dict(load_dir=str(tiny.base), tokenizer_dir=str(kit.TOKENIZER_DIR), prompts=["x"],
                output_jsonl=str(tmp_path / "g.jsonl"))
    with pytest.raises(ValueError, match=r"top_p=0.0 must be in \(0, 1\]"):
        generate(GenerateParams(top_p=0.0, **base))
    with pytest.raises(ValueError, match=r"prompts is empty"):
        generate(GenerateParams(**{**base, "prompts": []}))
