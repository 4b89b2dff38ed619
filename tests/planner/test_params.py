"""Parameter counts of Llama-3-8B against hand-computed values (total and per rank under TP/PP)."""

from __future__ import annotations

import pytest

from navila_tune.arch import LlamaArch
from navila_tune.planner.params import layer_params, lora_layer_params, stage_params, total_params
from navila_tune.planner.shape import RunShape

LLAMA3_8B = LlamaArch(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32,
                      num_query_groups=8, vocab_size=128256, max_position_embeddings=8192,
                      rope_theta=500000.0, norm_epsilon=1e-5)

# Hand computation (h 4096, ffn 14336, 32 heads x 128, 8 query groups, vocab 128256):
#   linear_qkv  4096 x (32 + 2 x 8) x 128 = 4096 x 6144  =  25,165,824
#   linear_proj 4096 x 4096                              =  16,777,216
#   linear_fc1  4096 x 2 x 14336                         = 117,440,512
#   linear_fc2  14336 x 4096                             =  58,720,256
#   two RMSNorm weights 2 x 4096                         =       8,192
#   one layer                                            = 218,112,000
#   embedding = output layer = 128256 x 4096             = 525,336,576
#   32 x 218,112,000 + 2 x 525,336,576 + 4096 (final norm) = 8,030,261,248
LAYER = 218_112_000
LINEAR = LAYER - 8_192
VOCAB_MATRIX = 525_336_576


def shape(tp: int, pp: int, **kw) -> RunShape:
    return RunShape(arch=LLAMA3_8B, seq_length=4096, micro_batch_size=1, global_batch_size=64,
                    world_size=tp * pp, tp=tp, pp=pp, **kw)


def test_llama3_8b_has_8_030_261_248_parameters():
    assert layer_params(LLAMA3_8B) == LAYER
    assert total_params(LLAMA3_8B) == 8_030_261_248
    assert sum(s.total for s in stage_params(shape(1, 1))) == 8_030_261_248


def test_tp1_pp4_per_rank():
    stages = [s.total for s in stage_params(shape(1, 4))]
    # 8 layers per stage; the embedding on stage 0; output layer and final norm on stage 3.
    assert stages == [8 * LAYER + VOCAB_MATRIX, 8 * LAYER, 8 * LAYER, 8 * LAYER + VOCAB_MATRIX + 4096]
    assert stages == [2_270_232_576, 1_744_896_000, 1_744_896_000, 2_270_236_672]


def test_tp8_pp1_per_rank():
    (rank,) = stage_params(shape(8, 1))
    # Linear weights / 8, norms replicated; embedding and output split over the vocab.
    per_layer = LINEAR // 8 + 8_192
    assert per_layer == 27_271_168
    assert rank.total == 32 * per_layer + 2 * VOCAB_MATRIX // 8 + 4096 == 1_004_015_616


def test_tp2_pp2_per_rank():
    first, last = (s.total for s in stage_params(shape(2, 2)))
    per_layer = LINEAR // 2 + 8_192  # 109,060,096
    assert first == 16 * per_layer + VOCAB_MATRIX // 2 == 2_007_629_824
    assert last == 16 * per_layer + VOCAB_MATRIX // 2 + 4096 == 2_007_633_920


def test_uneven_pipeline_split():
    stages = [s.layers for s in stage_params(shape(1, 4, num_layer_list=(8, 9, 9, 6)))]
    assert stages == [8, 9, 9, 6]


def test_vocab_padding_follows_megatron():
    # make-vocab-size-divisible-by 128 at TP4: ceil(128256 / 512) x 512 = 128512.
    s = shape(4, 1, make_vocab_size_divisible_by=128)
    assert s.padded_vocab == 128_512
    (rank,) = stage_params(s)
    assert rank.embedding == 128_512 * 4096 // 4
    # MindSpeed's llama3 recipes use 1: no padding at any TP.
    assert shape(8, 1).padded_vocab == 128_256


def test_tied_embeddings_are_counted_once_without_pipeline_and_twice_with_it():
    tied = LlamaArch(**{**LLAMA3_8B.to_dict(), "tie_word_embeddings": True})
    one = RunShape(arch=tied, seq_length=8, micro_batch_size=1, global_batch_size=1, world_size=1)
    assert sum(s.total for s in stage_params(one)) == 8_030_261_248 - VOCAB_MATRIX
    two = one.replace(pp=2, world_size=2)
    assert sum(s.total for s in stage_params(two)) == 8_030_261_248


@pytest.mark.parametrize("tp, expected", [
    # r = 16 on the four Megatron linears (peft LoraParallelLinear sharding):
    #   qkv  (column): 16 x 4096 + 16 x 6144 / t ; proj (row): 16 x 4096 / t + 16 x 4096
    #   fc1  (column): 16 x 4096 + 16 x 28672 / t; fc2  (row): 16 x 14336 / t + 16 x 4096
    (1, 163_840 + 131_072 + 524_288 + 294_912),
    (2, (65_536 + 49_152) + (32_768 + 65_536) + (65_536 + 229_376) + (114_688 + 65_536)),
])
def test_lora_parameters_per_layer(tp, expected):
    targets = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
    assert lora_layer_params(LLAMA3_8B, 16, targets, tp) == expected
    if tp == 1:
        assert 32 * expected == 35_651_584
