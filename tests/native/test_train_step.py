"""One training step against a hand-written masked cross-entropy and a plain AdamW step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import native_testkit as kit
from navila_tune.native import checkpointing
from navila_tune.native.batching import InstructionDataset


@pytest.fixture(scope="module")
def peaky_base(tiny, tmp_path_factory):
    """Base weights with a large lm_head: per-token losses spread widely, so averaging rules differ."""
    from navila_tune.convert import save_megatron_state

    _, state = checkpointing.load_state(str(tiny.base))
    state["lm_head.weight"] = state["lm_head.weight"] * 60.0
    out = tmp_path_factory.mktemp("peaky") / "base"
    save_megatron_state(state, str(out), arch=tiny.arch, tp=1, pp=1, num_layer_list=None, iteration=1,
                        padded_vocab_size=tiny.padded_vocab)
    return out


def _hf_model(tiny, base):
    from transformers import LlamaConfig, LlamaForCausalLM

    meta, state = checkpointing.load_state(str(base))
    cfg = LlamaConfig(**tiny.arch.hf_config("float32", vocab_size=tiny.padded_vocab))
    cfg._attn_implementation = "eager"  # a different attention path than training's sdpa
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(state, strict=True)
    return model


def _micro_batches(tiny, gbs: int, mbs: int, seed: int, iteration: int = 1) -> list[list[dict]]:
    data = InstructionDataset(tiny.train_prefix, 256)
    rng = np.random.RandomState(seed)
    order = np.arange(len(data))
    rng.shuffle(order)
    batch = order[(iteration - 1) * gbs:iteration * gbs]
    return [[data.sample(i) for i in batch[m:m + mbs]] for m in range(0, gbs, mbs)]


def _hand_losses(model, micro: list[dict]) -> tuple[torch.Tensor, int]:
    """Sum of -log p(label) over label tokens (shifted), each sample unpadded; and the token count."""
    total, count = torch.zeros(()), 0
    for s in micro:
        ids = torch.tensor(s["input_ids"])[None]
        labels = torch.tensor(s["labels"])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        for t in range(1, len(labels)):
            if labels[t] != -100:
                total = total - logp[t - 1, labels[t]]
                count += 1
    return total, count


def test_step_loss_is_the_mean_of_micro_batch_token_means(tiny, peaky_base, train_params):
    from navila_tune.native.train import train

    p = train_params(load_dir=str(peaky_base), train_iters=1, global_batch_size=8, micro_batch_size=4)
    train(p)
    logged = kit.read_jsonl(p.save_dir + "/metrics.jsonl")[0]
    model = _hf_model(tiny, peaky_base)
    with torch.no_grad():
        parts = [_hand_losses(model, mb) for mb in _micro_batches(tiny, 8, 4, p.seed)]
    expected = sum(float(s) / n for s, n in parts) / len(parts)
    token_mean = sum(float(s) for s, _ in parts) / sum(n for _, n in parts)
    assert logged["iteration"] == 1
    assert logged["loss"] == pytest.approx(expected, rel=1e-6)
    assert abs(expected - token_mean) > 50e-6 * expected  # the rules differ far beyond the tolerance


def test_per_token_loss_option_is_the_global_token_mean(tiny, peaky_base, train_params):
    from navila_tune.native.train import train

    p = train_params(load_dir=str(peaky_base), train_iters=1, calculate_per_token_loss=True)
    train(p)
    logged = kit.read_jsonl(p.save_dir + "/metrics.jsonl")[0]
    model = _hf_model(tiny, peaky_base)
    with torch.no_grad():
        parts = [_hand_losses(model, mb) for mb in _micro_batches(tiny, 8, 4, p.seed)]
    assert logged["loss"] == pytest.approx(sum(float(s) for s, _ in parts) / sum(n for _, n in parts), rel=1e-6)


def test_one_step_weights_equal_a_plain_adamw_step(tiny, train_params):
    """Loss -> backward -> clip -> AdamW with Megatron's no-decay group, compared with the saved checkpoint."""
    from navila_tune.native.train import train

    # adam_eps well above float noise in the gradients, so the step is a smooth function of them
    p = train_params(train_iters=1, lr=5e-3, min_lr=5e-3, lr_decay_style="constant", weight_decay=0.1,
                     clip_grad=0.5, adam_eps=1e-4)
    train(p)
    model = _hf_model(tiny, tiny.base)
    decay = [q for n, q in model.named_parameters() if q.ndim > 1]
    no_decay = [q for n, q in model.named_parameters() if q.ndim == 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-3, betas=(p.adam_beta1, p.adam_beta2), eps=p.adam_eps)
    micro = _micro_batches(tiny, 8, 4, p.seed)
    for mb in micro:
        s, n = _hand_losses(model, mb)
        (s.float() / n / len(micro)).backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    assert float(norm) > 0.5  # clipping is active
    opt.step()
    logged = kit.read_jsonl(p.save_dir + "/metrics.jsonl")[0]
    assert logged["grad_norm"] == pytest.approx(float(norm), rel=1e-4)
    saved = kit.final_weights(p.save_dir)
    base = kit.final_weights(tiny.base)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=1e-6, msg=name)
        if value.ndim > 1:
            assert float((saved[name] - base[name]).abs().max()) > 1e-3, name
