"""What each stage reads from the config: the single list behind fingerprints, rendering and reasons.

Each stage declares the config keys that determine its output (``PARAMS``) and those that only affect
how it runs (``RUNTIME``: worker counts, log cadence). Backends render a stage from these values only, so
a key that is not listed cannot change what a stage does, and changing a listed key always changes the
stage's fingerprint and every fingerprint downstream.
"""

from __future__ import annotations

from typing import Any, Sequence

from omegaconf import OmegaConf

from navila_tune.config.schema import STAGES
from navila_tune.layout import Layout
from navila_tune.plan import StageSpec

ARCH = ("model.family", "model.arch", "model.make_vocab_size_divisible_by")
CHECKPOINT_LAYOUT = ("parallelism.tp", "parallelism.pp", "parallelism.num_layer_list")
TOKENIZER = ("model.tokenizer_dir", "model.prompt_type")
LORA = ("optim.finetune", "optim.lora")

PARAMS: dict[str, tuple[str, ...]] = {
    "convert": (*ARCH, *CHECKPOINT_LAYOUT, "model.hf_dir", "model.tokenizer_dir", "model.params_dtype",
                "model.init_seed"),
    "preprocess": (*TOKENIZER, "data.input", "data.eval_input", "data.handler", "data.map_keys",
                   "data.seq_length", "data.pack", "data.neat_pack", "data.append_eod", "data.enable_thinking",
                   "data.overlong", "data.max_bad_row_fraction", "data.answer_marker"),
    "train": (*ARCH, *TOKENIZER, "parallelism", "optim.finetune", "optim.lora", "optim.lr", "optim.min_lr",
              "optim.lr_decay_style", "optim.warmup_ratio", "optim.weight_decay", "optim.adam_beta1",
              "optim.adam_beta2", "optim.adam_eps", "optim.clip_grad", "optim.train_iters",
              "optim.global_batch_size", "optim.micro_batch_size", "optim.grad_accum", "optim.eval_interval",
              "optim.eval_iters", "optim.save_interval", "optim.seed", "optim.precision", "optim.o2_optimizer",
              "optim.o2_gradient", "data.seq_length",
              "data.pad_to_multiple_of", "data.pack", "hardware.devices_per_node", "hardware.nnodes",
              "backend.native.device"),
    "generate": (*ARCH, *TOKENIZER, *CHECKPOINT_LAYOUT, *LORA, "generate", "data.eval_input", "data.map_keys",
                 "data.seq_length", "optim.seed", "optim.precision", "backend.native.device"),
    "evaluate": (*ARCH, *TOKENIZER, "evaluate.max_samples", "evaluate.max_new_tokens", "evaluate.baseline",
                 "data.eval_input", "data.map_keys", "data.answer_marker",
                 "data.seq_length", "optim.seed", "backend.native.device"),
    "export": (*ARCH, *LORA, "model.hf_dir", "model.tokenizer_dir", "model.params_dtype", "model.source_format",
               "model.vila_dir", "export", "backend.native.device"),
}
RUNTIME: dict[str, tuple[str, ...]] = {
    "convert": (),
    "preprocess": ("data.workers",),
    "train": ("optim.log_interval", "hardware.master_addr", "hardware.master_port", "hardware.rdzv_backend",
              "hardware.rdzv_id", "hardware.node_rank", "backend.native.threads"),
    "generate": ("hardware.master_addr", "hardware.master_port", "backend.native.threads"),
    "evaluate": ("evaluate.batch_size", "backend.native.threads"),
    "export": ("backend.native.threads",),
}
# Stage -> the stages whose outputs it reads.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "convert": (),
    "preprocess": (),
    "train": ("convert", "preprocess"),
    "generate": ("train", "convert"),
    "evaluate": ("train", "convert"),
    "export": ("train", "convert", "preprocess"),  # preprocess: training samples for the hand-off check
}


def pick(cfg: Any, keys: Sequence[str]) -> dict[str, Any]:
    """Plain values of the given config paths (subtrees become dicts)."""
    out = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def input_files(name: str, params: dict[str, Any]) -> list[str]:
    """Files and folders outside the work dir a stage reads, for fingerprints and run-time checks."""
    keys = {
        "convert": ("model.hf_dir",),
        "preprocess": ("data.input", "data.eval_input", "model.tokenizer_dir"),
        "train": ("model.tokenizer_dir",),
        "generate": ("model.tokenizer_dir", "data.eval_input"),
        "evaluate": ("model.tokenizer_dir", "data.eval_input"),
        "export": ("model.hf_dir", "model.tokenizer_dir", "model.vila_dir"),
    }[name]
    seen: list[str] = []
    for k in keys:
        v = params.get(k)
        if v and v not in seen:
            seen.append(v)
    return seen


def stage_specs(cfg: Any, layout: Layout) -> list[StageSpec]:
    """Specs of every stage of the pipeline (selected or not: unselected ones may be reused from cache)."""
    specs = []
    for name in STAGES:
        params = pick(cfg, PARAMS[name])
        params["derived.padded_vocab_size"] = layout.padded_vocab_size
        if name == "train":
            params["derived.data_parallel_size"] = layout.dp
            params["derived.grad_accum"] = layout.grad_accum
        upstream = list(UPSTREAM[name])
        if name == "evaluate" and not cfg.evaluate.baseline:
            upstream.remove("convert")
        specs.append(StageSpec(
            name=name, params=params, inputs=input_files(name, params), upstream=upstream,
            runtime=pick(cfg, RUNTIME[name]), resumable=name == "train",
        ))
    return specs
