"""The estimator against published peak-memory measurements of Llama fine-tuning (table in
docs/memory_planner.md). Each case states the source, the quoted figure and the configuration it was
measured at, and how that configuration maps onto a RunShape.

No published MindSpeed-LLM or Megatron-LM measurement of Llama peak memory with a stated configuration
was found (their docs give throughput, and Megatron-LM's memory table is theoretical; it is checked
term by term in test_terms.py). torchtune documents measurements with their configs, so those are the
comparisons. torchtune trains in pure bf16 (no master weights; AdamW moments in bf16), checkpoints every
layer (``enable_activation_checkpointing: True``), uses PyTorch SDPA (flash attention on these GPUs) and
unfused HF-style modules. Its figures are torch allocator statistics, which exclude the CUDA context, so
the framework reserve is 0 here. GB = 1e9 bytes.

torchtune v0.1 loss path (recipes/lora_finetune_single_device.py of that release):
    logits = self._model(input_ids)                  # output(h).float(): fp32 logits
    logits = logits[..., :-1, :].contiguous()        # shifted fp32 copy, alive through backward
    loss = self._loss_fn(logits.transpose(1, 2), labels)   # CrossEntropyLoss keeps fp32 log-softmax
    loss.backward()
At the backward of the loss, the fp32 logits (4 B), the log-softmax output (4 B), its incoming gradient
(4 B) and the gradient it produces (4 B) are alive together: 16 bytes per logit.
"""

from __future__ import annotations

import pytest

from navila_tune.arch import LlamaArch
from navila_tune.planner.memory import GB, estimate_shape
from navila_tune.planner.shape import RunShape, megatron_state_bytes, native_state_bytes, pure_state_bytes

LLAMA2_7B = LlamaArch(num_layers=32, hidden_size=4096, ffn_hidden_size=11008, num_attention_heads=32,
                      num_query_groups=32, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0,
                      norm_epsilon=1e-5)
LLAMA2_70B = LlamaArch(num_layers=80, hidden_size=8192, ffn_hidden_size=28672, num_attention_heads=64,
                       num_query_groups=8, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0,
                       norm_epsilon=1e-5)
LLAMA3_8B = LlamaArch(num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32,
                      num_query_groups=8, vocab_size=128256, max_position_embeddings=8192,
                      rope_theta=500000.0, norm_epsilon=1e-5)

TORCHTUNE_README = ("https://github.com/pytorch/torchtune/blob/main/README.md (revision of spring 2024, "
                    "torchtune v0.1: 'This table captures the peak memory usage and training speed for "
                    "recipes in torchtune')")
TORCHTUNE_LLAMA3_TUTORIAL = "https://pytorch.org/torchtune/0.1/tutorials/llama3.html"


def torchtune(arch: LlamaArch, *, seq: int, batch: int, devices: int = 1, **kw) -> RunShape:
    base = dict(
        arch=arch, seq_length=seq, micro_batch_size=batch, global_batch_size=batch * devices,
        world_size=devices, devices_per_node=devices, precision="bf16", **pure_state_bytes("bf16"),
        recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1,  # per-layer AC
        flash_attention=True, flash_stats_bytes_per_head=4.0, fused_swiglu=False,
        loss_bytes_per_logit=16.0, wgrad_temp=False, reserve_gb=0.0, memory_margin=0.0,
        accelerator="cuda", chip="rtx4090", memory_gb=24.0,
    )
    base.update(kw)
    return RunShape(**base)


# (name, source, quoted figure, GB, shape)
COMPARABLE = [
    (
        "Llama2-7B LoRA, 1 x RTX 4090, batch 4, seq 2048",
        TORCHTUNE_README,
        "| 1 x RTX 4090 | LoRA | Llama2-7B | Batch Size = 4, Seq Length = 2048 | 21.3 GB | 2582 |",
        21.3,
        # config llama2/7B_lora_single_device: LoRA on q_proj and v_proj, rank 8, AdamW, bf16,
        # enable_activation_checkpointing True, compile False
        torchtune(LLAMA2_7B, seq=2048, batch=4, finetune="lora", lora_r=8, lora_targets=("q_proj", "v_proj")),
    ),
    (
        "Llama3-8B LoRA, 1 GPU, batch 2, alpaca-cleaned (max_seq_len 512)",
        TORCHTUNE_LLAMA3_TUTORIAL,
        "In our experiments, we observed a peak memory usage of 18.5 GB.",
        18.5,
        # config llama3/8B_lora_single_device of torchtune 0.1: batch_size 2, LoRA rank 8 on the
        # attention projections, bf16, activation checkpointing on; alpaca_cleaned_dataset truncates
        # samples to its default max_seq_len=512, so the peak batch is 2 x 512 tokens. (The README of
        # the same release: "LoRA on a single GPU has a peak allocated memory of ~19GB".)
        torchtune(LLAMA3_8B, seq=512, batch=2, finetune="lora", lora_r=8, lora_targets=("q_proj", "v_proj")),
    ),
    (
        "Llama2-7B full fine-tune, 4 x RTX 4090 FSDP, batch 4, seq 2048",
        TORCHTUNE_README,
        "| 4 x RTX 4090 | Full finetune | Llama2-7B | Batch Size = 4, Seq Length = 2048 | 24.1 GB | 1388 |",
        24.1,
        # config llama2/7B_full with full_finetune_distributed: FSDP FULL_SHARD over 4 GPUs (bf16
        # params, grads and AdamW states sharded by 4; one layer plus the prefetched next one and the
        # root unit gathered), activation checkpointing on, batch 4 per GPU.
        torchtune(LLAMA2_7B, seq=2048, batch=4, devices=4, fsdp=True),
    ),
]


@pytest.mark.parametrize("name, source, quote, published, shape", COMPARABLE, ids=[c[0] for c in COMPARABLE])
def test_estimate_within_15_percent_of_published_measurement(name, source, quote, published, shape):
    estimated = estimate_shape(shape).total_gb
    assert abs(estimated / published - 1) <= 0.15, f"{name}: estimated {estimated:.1f} GB, published {published}"


def test_not_comparable_figures_are_documented_with_a_reason():
    """Published figures the estimator is not compared with, and a checkable reason for each."""
    # torchtune README, same table: "| 1 x RTX 4090 | Full finetune * | Llama2-7B | Batch Size = 4,
    # Seq Length = 2048 | 24.1 GB | 702 |" with "*= Uses PagedAdamW from bitsandbytes": paged optimizer
    # states live in CUDA unified memory that is evicted to host RAM, so device memory does not hold them.
    # Reason, checked: the bf16 weights plus bf16 AdamW states alone exceed the figure.
    weights_and_adam = 6_738_415_616 * (2 + 4) / GB
    assert weights_and_adam > 24.1

    # Same table: "| 8 x A100 | LoRA | Llama2-70B | Batch Size = 4, Seq Length = 4096 | 26.4 GB | 3384 |".
    # At the stated settings the checkpointed layer inputs (80 x 2 s b h) and the 1/8 FSDP shard of the
    # bf16 weights alone exceed the figure, so it cannot have been measured at those settings.
    stored = 80 * 2 * 4096 * 4 * 8192 / GB
    shard = 2 * 68_976_648_192 / 8 / GB
    assert stored + shard > 26.4
    big = estimate_shape(torchtune(LLAMA2_70B, seq=4096, batch=4, devices=8, fsdp=True, finetune="lora",
                                   lora_r=8, lora_targets=("q_proj", "v_proj"))).total_gb
    assert big > 1.5 * 26.4

    # Same table, QLoRA rows (12.3 GB): NF4-quantised base weights are not modelled by the planner.
    # LLaMA-Factory README "Hardware Requirement" table is marked "* estimated" (not a measurement):
    # "Full (bf16 or fp16) | 32 | 120GB | ... | 18x GB", "Full (pure_bf16) | 16 | 60GB | ... | 8x GB",
    # "Freeze/LoRA/GaLore/APOLLO/BAdam | 16 | 16GB | ... | 2x GB" (x = billions of parameters).
    # Its per-parameter multipliers are the model-state bytes of the planner:
    assert sum(megatron_state_bytes("bf16")[k] for k in ("weight_bytes", "grad_bytes", "master_bytes",
                                                         "optim_state_bytes")) == 18
    assert sum(pure_state_bytes("bf16")[k] for k in ("weight_bytes", "grad_bytes", "master_bytes",
                                                     "optim_state_bytes")) == 8
    assert native_state_bytes("bf16")["weight_bytes"] + native_state_bytes("bf16")["grad_bytes"] \
        + native_state_bytes("bf16")["optim_state_bytes"] == 16  # the native backend: fp32 master weights


def comparison_rows() -> list[tuple[str, float, float]]:
    """(case, published GB, estimated GB) — the table in docs/memory_planner.md."""
    return [(name, published, estimate_shape(shape).total_gb) for name, _, _, published, shape in COMPARABLE]


def test_docs_table_matches_the_estimator():
    from navila_testing import REPO

    doc = (REPO / "docs" / "memory_planner.md").read_text()
    for name, published, estimated in comparison_rows():
        row = f"| {name} | {published:.1f} | {estimated:.1f} | {estimated / published - 1:+.1%} |"
        assert row in doc, f"docs/memory_planner.md lacks the row: {row}"
