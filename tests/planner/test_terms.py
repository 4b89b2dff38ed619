"""Each memory term against hand-computed values and the published formulas it implements."""

from __future__ import annotations

import pytest

from navila_tune.arch import LlamaArch
from navila_tune.planner.activations import in_flight, layer_bytes, layer_terms, stage_activations
from navila_tune.planner.memory import GB, estimate_shape
from navila_tune.planner.params import stage_params
from navila_tune.planner.shape import RunShape, megatron_state_bytes

LLAMA3_8B = LlamaArch(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32,
                      num_query_groups=8, vocab_size=128256, max_position_embeddings=8192,
                      rope_theta=500000.0, norm_epsilon=1e-5)


def llama(**kw) -> RunShape:
    base = dict(arch=LLAMA3_8B, seq_length=4096, micro_batch_size=1, global_batch_size=64, world_size=1)
    base.update(kw)
    return RunShape(**base)


def state_bytes_per_param(s: RunShape) -> float:
    """(weights + gradients + optimizer) bytes per parameter of the rank."""
    b = estimate_shape(s)
    n = b.worst.params.total
    return (b.term("weights") + b.term("gradients") + b.term("optimizer")) * GB / n


# Megatron-LM README, "Distributed Optimizer": theoretical bytes per parameter, d = data-parallel size.
#   fp16 param, fp16 grads: 20 | 4 + 16/d;  bf16 param, fp32 grads: 18 | 6 + 12/d;  fp32: 16 | 8 + 8/d
@pytest.mark.parametrize("precision, plain, distributed", [
    ("bf16", 18, lambda d: 6 + 12 / d),
    ("fp16", 20, lambda d: 4 + 16 / d),
    ("fp32", 16, lambda d: 8 + 8 / d),
])
@pytest.mark.parametrize("d", [1, 2, 8])
def test_model_and_optimizer_states_match_megatron_distributed_optimizer_table(precision, plain, distributed, d):
    s = llama(world_size=d, global_batch_size=64 * d, precision=precision, **megatron_state_bytes(precision))
    assert state_bytes_per_param(s) == pytest.approx(plain)
    assert state_bytes_per_param(s.replace(distributed_optimizer=True)) == pytest.approx(distributed(d))


def test_mindspeed_memory_options_save_what_their_docs_say():
    d = 4
    base = llama(world_size=d, global_batch_size=256, distributed_optimizer=True)
    n = stage_params(base)[0].total
    before = state_bytes_per_param(base) * n

    def saved(**opts) -> float:
        s = base.replace(**megatron_state_bytes("bf16", **opts))
        return before - state_bytes_per_param(s) * n

    # MindSpeed reuse-fp32-param.md: saves sizeof(bf16) x params / DP with the distributed optimizer.
    assert saved(reuse_fp32_param=True) == pytest.approx(2 * n / d)
    # MindSpeed-LLM o2.md: --o2-optimizer saves 4N/DP, --o2-gradient saves 2N.
    assert saved(o2_optimizer=True) == pytest.approx(4 * n / d)
    assert saved(o2_gradient=True) == pytest.approx(2 * n)


def test_lora_trains_only_the_adapters():
    s = llama(finetune="lora", lora_r=16)
    b = estimate_shape(s)
    lora = 35_651_584
    assert b.term("weights") == pytest.approx((8_030_261_248 + lora) * 2 / GB)  # frozen bf16 base + adapters
    assert b.term("gradients") == pytest.approx(lora * 4 / GB)  # fp32 main grads only for trainable params
    assert b.term("optimizer") == pytest.approx(lora * 12 / GB)  # fp32 master + Adam moments


# ---- activations: Korthikanti et al. 2022, section 4 -------------------------------------------------
# Stated configuration: their GPT-3 175B row (Table 3): a = 96 heads, h = 12288, s = 2048, t = 8, b = 1,
# 16-bit activations, dropout on (1-byte masks), no flash attention, 4h GeLU MLP, LayerNorm.
GPT3 = LlamaArch(num_layers=96, hidden_size=12288, ffn_hidden_size=4 * 12288, num_attention_heads=96,
                 num_query_groups=96, vocab_size=51200, max_position_embeddings=2048, rope_theta=1.0,
                 norm_epsilon=1e-5)
S, B, H, A, T = 2048, 1, 12288, 96, 8
SBH = S * B * H


def gpt3(**kw) -> RunShape:
    base = dict(arch=GPT3, seq_length=S, micro_batch_size=B, global_batch_size=8, world_size=8,
                mlp_activation="gelu", hidden_dropout=0.1, attention_dropout=0.1, flash_attention=False)
    base.update(kw)
    return RunShape(**base)


def test_per_layer_activations_reproduce_megatron_formula():
    # No parallelism: s b h (34 + 5 a s / h)
    assert layer_bytes(gpt3(world_size=1)) == SBH * (34 + 5 * A * S / H) == 2_868_903_936
    # Tensor parallel: s b h (10 + 24/t + 5 a s / (h t))
    assert layer_bytes(gpt3(tp=T)) == SBH * (10 + 24 / T + 5 * A * S / (H * T)) == 578_813_952
    # Tensor + sequence parallel: s b h / t (34 + 5 a s / h)
    assert layer_bytes(gpt3(tp=T, sequence_parallel=True)) == SBH / T * (34 + 5 * A * S / H) == 358_612_992
    # + selective recompute: 34 s b h / t
    selective = gpt3(tp=T, sequence_parallel=True, recompute_granularity="selective")
    assert layer_bytes(selective, selective=True) == 34 * SBH / T == 106_954_752
    # Tensor parallel + selective, no sequence parallel: s b h (10 + 24/t)
    assert layer_bytes(gpt3(tp=T), selective=True) == SBH * (10 + 24 / T)


def test_full_recompute_keeps_each_layer_input_only():
    # Full recompute stores 2 s b h per layer (/t with sequence parallel); the last stage also keeps the
    # final norm and output-layer inputs (2 more).
    s = gpt3(tp=T, sequence_parallel=True, recompute_granularity="full", pp=1)
    act = stage_activations(s, stage_params(s)[0])
    assert act.stored_per_microbatch == (96 + 2) * 2 * SBH // T
    assert act.recompute_transient == layer_bytes(s)  # one layer is re-materialised at a time
    two = s.replace(recompute_num_layers=2)
    act2 = stage_activations(two, stage_params(two)[0])
    assert act2.stored_per_microbatch == (48 + 2) * 2 * SBH // T
    assert act2.recompute_transient == 2 * layer_bytes(s)


def test_llama3_8b_layer_activations_adapted_for_gqa_swiglu_and_flash_attention():
    # Per token at TP1 (bytes): norms 2x2h + qkv/fc1 inputs 2x2h + q 2h + k,v 2x2x1024 + attention out 2h
    # + SwiGLU 2x2f + fc2 input 2f + npu_fusion_attention stats 2 x 8 x 4 B x 32 heads
    h, f = 4096, 14336
    expected = 8 * h + 2 * h + 4 * 1024 + 2 * h + 6 * f + 64 * 32
    assert expected == 141_312 == 34.5 * h
    s = llama()
    assert layer_terms(s).per_token(s) == expected
    # CUDA flash attention keeps one fp32 log-sum-exp per head: 34 h + 128 B
    cuda = s.replace(flash_stats_bytes_per_head=4.0)
    assert layer_terms(cuda).per_token(cuda) == 34 * h + 128
    # With TP4 and sequence parallel everything is split by 4; without SP the 8h of norm and linear
    # inputs stay whole on every rank.
    assert layer_terms(s).per_token(s.replace(tp=4, sequence_parallel=True)) == expected / 4
    assert layer_terms(s).per_token(s.replace(tp=4)) == 8 * h + (expected - 8 * h) / 4
    assert layer_bytes(s.replace(micro_batch_size=4)) == 4 * 4096 * expected


def test_first_stage_holds_min_pp_and_micro_batches_in_flight():
    s = llama(pp=4, world_size=4, global_batch_size=256)  # GA 256
    assert [in_flight(s, i) for i in range(4)] == [4, 3, 2, 1]
    few = s.replace(global_batch_size=2)  # GA 2 < PP
    assert [in_flight(few, i) for i in range(4)] == [2, 2, 2, 1]
    act = stage_activations(s, stage_params(s)[0])
    assert act.stored == 4 * 8 * layer_bytes(s)
    assert in_flight(llama(), 0) == 1


def test_megatron_loss_keeps_six_bytes_per_logit_on_the_last_stage():
    s = llama(tp=4, sequence_parallel=True, world_size=4, micro_batch_size=4, finetune="lora")
    act = stage_activations(s, stage_params(s)[-1])
    # fp32 softmax (4 B) kept by vocab_parallel_cross_entropy + bf16 gradient (2 B) for the output layer
    assert act.loss_peak == 4 * 4096 * 128_256 // 4 * 6
    first = llama(pp=2, world_size=2, global_batch_size=64)
    assert stage_activations(first, stage_params(first)[0]).loss_peak == 0


def test_cot_8b_breakdown_by_hand():
    """TP4 PP1 DP2, SP, distributed optimizer, MBS 4, seq 4096, no recompute, reserve 3 GB."""
    s = llama(tp=4, sequence_parallel=True, world_size=8, micro_batch_size=4, global_batch_size=512,
              distributed_optimizer=True)
    b = estimate_shape(s)
    n = 2_007_764_992  # 32 x (LINEAR/4 + 8192) + 2 x 525,336,576 / 4 + 4096
    assert b.term("weights") == pytest.approx(2 * n / GB)
    assert b.term("gradients") == pytest.approx(4 * n / GB)
    assert b.term("optimizer") == pytest.approx(12 * n / 2 / GB)
    tokens = 4 * 4096
    stored = 32 * tokens * 141_312 / 4 + 2 * tokens * 2 * 4096 / 4
    loss = tokens * 128_256 / 4 * 6 + 2 * (128_256 * 4096 // 4)  # + bf16 weight-grad temp of the output
    assert b.term("activations") == pytest.approx((stored + loss) / GB, rel=1e-6)
    assert b.term("reserve") == 3.0
    assert b.total_gb == pytest.approx(49.1, abs=0.05)
