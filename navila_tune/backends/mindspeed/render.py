"""Render each stage as MindSpeed-LLM 2.3.0 commands (llama3 / mcore path).

Every flag comes from a stage's params (its slice of the config) or from the architecture table in
``navila_tune.arch``; nothing is written twice. The commands run from the MindSpeed-LLM home with the CANN
environment and ``CUDA_DEVICE_MAX_CONNECTIONS=1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from navila_tune import artifacts
from navila_tune.arch import LlamaArch, format_number
from navila_tune.backends.mindspeed.flag_parser import parse
from navila_tune.checkpoint_probe import latest_complete
from navila_tune.cluster.torchrun import torchrun_args
from navila_tune.plan import Command, FileOp, StagePaths, StageSpec, Step

ENV = {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}
HANDOFF = ("-m", "navila_tune.handoff")  # navila_tune's hand-off CLI, run with the backend's python
# model_cfg.json family for Llama 3 in convert_ckpt.py (there is no "llama3" choice).
MODEL_TYPE_HF = {"llama3": "llama2"}
PRECISION_FLAGS = {"bf16": ["--bf16"], "fp16": ["--fp16"], "fp32": []}
# Flags MindSpeed's llama3 recipes pass to every training and inference run (fused NPU kernels off where
# they are known to fail, dropout off for fine-tuning).
COMMON_MODEL_FLAGS = (
    "--use-mcore-models",
    "--attention-dropout", "0.0",
    "--hidden-dropout", "0.0",
    "--no-masked-softmax-fusion",
    "--attention-softmax-in-fp32",
    "--use-flash-attn",
)


class MindSpeedBackend:
    """Renders stage specs into MindSpeed-LLM invocations."""

    name = "mindspeed"

    def __init__(self, backend_cfg: Mapping[str, Any], hardware: Mapping[str, Any]):
        self.home = str(backend_cfg["home"])
        self.python = str(backend_cfg["python"])
        self.env_script = str(backend_cfg["env_script"])
        self.env = {**ENV, **{str(k): str(v) for k, v in (hardware.get("env") or {}).items()}}

    @property
    def params(self) -> dict[str, Any]:
        """Backend settings that shape every stage's commands (part of every fingerprint)."""
        return {"home": self.home, "python": self.python, "env_script": self.env_script, "env": self.env}

    def command(self, script_args: Sequence[str], launcher: Sequence[str] = (), stdin: str | None = None) -> Command:
        return Command(argv=(self.python, *launcher, *script_args), cwd=self.home, env=dict(self.env),
                       env_script=self.env_script, stdin=stdin)

    def render(self, spec: StageSpec, out: str, paths: StagePaths) -> list[Step]:
        """The stage's steps; every command is parsed with its script's real flag definitions first."""
        steps = getattr(self, f"_{spec.name}")(spec.params, spec.runtime, out, paths)
        for step in steps:
            if isinstance(step, Command) and not is_handoff_command(step):
                parse(*script_args(step))
        return steps

    # -- stages -------------------------------------------------------------------------------------

    def _convert(self, p: Mapping[str, Any], rt: Mapping[str, Any], out: str, paths: StagePaths) -> list[Step]:
        args = [
            "convert_ckpt.py",
            "--use-mcore-models",
            "--model-type", "GPT",
            "--model-type-hf", MODEL_TYPE_HF[p["model.family"]],
            "--load-model-type", "hf",
            "--save-model-type", "mg",
            "--params-dtype", p["model.params_dtype"],
            "--target-tensor-parallel-size", str(p["parallelism.tp"]),
            "--target-pipeline-parallel-size", str(p["parallelism.pp"]),
            *_layer_list(p),
            "--make-vocab-size-divisible-by", str(p["model.make_vocab_size_divisible_by"]),
            "--load-dir", p["model.hf_dir"],
            "--save-dir", str(Path(out) / artifacts.MEGATRON_BASE),
            "--tokenizer-model", str(Path(p["model.tokenizer_dir"]) / "tokenizer.json"),
        ]
        return [FileOp("mkdir", str(Path(out) / artifacts.MEGATRON_BASE)), self.command(args)]

    def _preprocess(self, p: Mapping[str, Any], rt: Mapping[str, Any], out: str, paths: StagePaths) -> list[Step]:
        steps: list[Step] = [FileOp("mkdir", str(Path(out) / artifacts.DATA))]
        inputs = [(p["data.input"], artifacts.TRAIN_PREFIX)]
        if p["data.eval_input"]:
            inputs.append((p["data.eval_input"], artifacts.EVAL_PREFIX))
        map_keys = {k: v for k, v in p["data.map_keys"].items() if v is not None}
        for source, prefix in inputs:
            args = [
                "preprocess_data.py",
                "--input", source,
                "--tokenizer-type", "PretrainedFromHF",
                "--tokenizer-name-or-path", p["model.tokenizer_dir"],
                "--output-prefix", str(Path(out) / prefix),
                "--workers", str(rt["data.workers"]),
                "--log-interval", "1000",
                "--handler-name", p["data.handler"],
                "--prompt-type", p["model.prompt_type"],
                "--map-keys", json.dumps(map_keys, separators=(",", ":")),
                "--seq-length", str(p["data.seq_length"]),
            ]
            args += _switch("--pack", p["data.pack"]) + _switch("--neat-pack", p["data.neat_pack"])
            args += _switch("--append-eod", p["data.append_eod"])
            if p["data.enable_thinking"] is not None:
                args += ["--enable-thinking", str(p["data.enable_thinking"]).lower()]
            steps.append(self.command(args))
        return steps

    def _train(self, p: Mapping[str, Any], rt: Mapping[str, Any], out: str, paths: StagePaths) -> list[Step]:
        par = p["parallelism"]
        lora = p["optim.finetune"] == "lora"
        save = str(Path(out) / artifacts.CHECKPOINTS)
        resume = latest_complete(save, par["tp"], par["pp"]) is not None
        if resume:  # continue this build's own latest complete checkpoint: weights, optimizer, RNG, iteration
            start = ["--load", save]
        else:  # start from the converted weights only
            start = ["--finetune", "--no-load-optim", "--no-load-rng",
                     "--load", str(Path(paths.output("convert")) / artifacts.MEGATRON_BASE)]
        args = [
            "posttrain_gpt.py",
            "--stage", "sft",
            *start,
            "--is-instruction-dataset",
            *self._model_flags(p, par["tp"], par["pp"], par["num_layer_list"]),
            "--prompt-type", p["model.prompt_type"],
            *_switch("--sequence-parallel", par["sequence_parallel"] and par["tp"] > 1),
            *(["--context-parallel-size", str(par["cp"])] if par["cp"] > 1 else []),
            *_switch("--use-distributed-optimizer", par["distributed_optimizer"]),
            *_switch("--reuse-fp32-param", par["reuse_fp32_param"]),
            *_switch("--o2-optimizer", p["optim.o2_optimizer"]),
            *_switch("--o2-gradient", p["optim.o2_gradient"]),
            *_recompute(par["recompute"]),
            "--micro-batch-size", str(p["optim.micro_batch_size"]),
            "--global-batch-size", str(p["optim.global_batch_size"]),
            "--train-iters", str(p["optim.train_iters"]),
            "--lr", format_number(p["optim.lr"]),
            "--min-lr", format_number(p["optim.min_lr"]),
            "--lr-decay-style", p["optim.lr_decay_style"],
            "--lr-warmup-fraction", format_number(p["optim.warmup_ratio"]),
            "--weight-decay", format_number(p["optim.weight_decay"]),
            "--adam-beta1", format_number(p["optim.adam_beta1"]),
            "--adam-beta2", format_number(p["optim.adam_beta2"]),
            "--adam-eps", format_number(p["optim.adam_eps"]),
            "--clip-grad", format_number(p["optim.clip_grad"]),
            "--seed", str(p["optim.seed"]),
            *PRECISION_FLAGS[p["optim.precision"]],
            "--data-path", str(Path(paths.output("preprocess")) / artifacts.TRAIN_PREFIX),
            "--split", "100,0,0",
            *_padding(p),
            "--save", save,
            "--exit-on-missing-checkpoint",
            "--log-interval", str(rt["optim.log_interval"]),
            "--save-interval", str(p["optim.save_interval"]),
            "--eval-interval", str(p["optim.eval_interval"]),
            "--eval-iters", str(p["optim.eval_iters"]),
            "--tensorboard-dir", str(Path(out) / artifacts.TENSORBOARD),
            "--distributed-backend", "nccl",
            "--no-gradient-accumulation-fusion",
            *(_lora_flags(p) if lora else []),
        ]
        launcher = torchrun_args(p["hardware.devices_per_node"], p["hardware.nnodes"], rt)
        return [FileOp("mkdir", str(Path(out) / artifacts.CHECKPOINTS)), self.command(args, launcher)]

    def _generate(self, p: Mapping[str, Any], rt: Mapping[str, Any], out: str, paths: StagePaths) -> list[Step]:
        g = p["generate"]
        tp, pp = p["parallelism.tp"], p["parallelism.pp"]
        args = [
            "inference.py",
            "--task", "chat",
            "--prompt-type", p["model.prompt_type"],
            *self._model_flags(p, tp, pp, p["parallelism.num_layer_list"]),
            *self._trained_weights(p, paths),
            "--exit-on-missing-checkpoint",
            "--use-kv-cache",
            "--micro-batch-size", "1",
            "--max-new-tokens", str(g["max_new_tokens"]),
            "--temperature", format_number(g["temperature"]),
            "--top-p", format_number(g["top_p"]),
            "--top-k", str(g["top_k"]),
            "--seed", str(p["optim.seed"]),
            *PRECISION_FLAGS[p["optim.precision"]],
        ]
        stdin = "".join(f"{prompt}\n" for prompt in g["prompts"]) + "exit\n"
        launcher = torchrun_args(tp * pp, 1, rt)
        return [self.command(args, launcher, stdin=stdin)]

    def _export(self, p: Mapping[str, Any], rt: Mapping[str, Any], out: str, paths: StagePaths) -> list[Step]:
        scratch = str(Path(out) / "scratch")
        hf_out = str(Path(out) / artifacts.HF_EXPORT)
        args = [
            "convert_ckpt.py",
            "--use-mcore-models",
            "--model-type", "GPT",
            "--model-type-hf", MODEL_TYPE_HF[p["model.family"]],
            "--load-model-type", "mg",
            "--save-model-type", "hf",
            "--params-dtype", p["model.params_dtype"],
            "--target-tensor-parallel-size", "1",
            "--target-pipeline-parallel-size", "1",
            *self._trained_weights(p, paths, load_flag="--load-dir"),
            "--save-dir", scratch,
            "--load-hf-from-config",
        ]
        source = p["model.hf_dir"]
        return [
            FileOp("mkdir", scratch),
            FileOp("copy", scratch, src=source, names=("config.json",)),
            self.command(args),
            FileOp("move", hf_out, src=str(Path(scratch) / "mg2hf")),
            FileOp("copy", hf_out, src=p["model.tokenizer_dir"], names=artifacts.TOKENIZER_FILES, optional=True),
            FileOp("copy", hf_out, src=source, names=(artifacts.GENERATION_CONFIG,), optional=True),
            FileOp("remove", scratch),
            *self._handoff(p, out, paths, hf_out),
        ]

    def _handoff(self, p: Mapping[str, Any], out: str, paths: StagePaths, hf_out: str) -> list[Step]:
        """NaVILA's side: stop ids in generation_config.json, the VILA splice, the hand-off check.

        They run with the backend's python (navila_tune must be installed there); the check's loss
        reference is the trained checkpoint as the native backend reads it, except for LoRA, whose
        MindSpeed checkpoint holds only the adapter (the loss items are then reported as skipped).
        """
        e = p["export"]
        vila_out, vila_final = str(Path(out) / artifacts.VILA_EXPORT), str(Path(paths.output("export"))
                                                                         / artifacts.VILA_EXPORT)
        steps: list[Step] = [self.command(["finalize", hf_out], HANDOFF)]
        if e["vila"]:
            steps.append(self.command(["splice", "--source", p["model.vila_dir"], "--llm", hf_out, "--out", vila_out,
                                       "--final", vila_final], HANDOFF))
        if not e["handoff_check"]:
            return steps
        args = ["check", hf_out, "--arch", json.dumps(p["model.arch"], separators=(",", ":"), sort_keys=True),
                "--dtype", p["model.params_dtype"], "--source-tokenizer", p["model.tokenizer_dir"],
                "--samples", str(e["check_samples"]), "--max-tokens", str(e["check_max_tokens"]),
                "--dtypes", ",".join(e["check_dtypes"]), "--out", out, "--relocate", f"{out}={paths.output('export')}"]
        if p["optim.finetune"] != "lora":
            args += ["--megatron", str(Path(paths.output("train")) / artifacts.CHECKPOINTS),
                     "--data-prefix", str(Path(paths.output("preprocess")) / artifacts.TRAIN_PREFIX)]
        if e["navila_python"]:
            args += ["--navila-python", e["navila_python"]]
        if e["vila"]:
            args += ["--vila", vila_out, "--vila-source", p["model.vila_dir"], "--vila-final", vila_final]
        return [*steps, self.command(args, HANDOFF)]

    # -- shared pieces ------------------------------------------------------------------------------

    def _model_flags(self, p: Mapping[str, Any], tp: int, pp: int, num_layer_list: Any) -> list[str]:
        arch = LlamaArch.from_mapping(p["model.arch"])
        return [
            *COMMON_MODEL_FLAGS,
            "--tensor-model-parallel-size", str(tp),
            "--pipeline-model-parallel-size", str(pp),
            *(["--num-layer-list", ",".join(map(str, num_layer_list))] if num_layer_list else []),
            *arch.mindspeed_flags(),
            "--make-vocab-size-divisible-by", str(p["model.make_vocab_size_divisible_by"]),
            "--padded-vocab-size", str(p["derived.padded_vocab_size"]),
            "--tokenizer-type", "PretrainedFromHF",
            "--tokenizer-name-or-path", p["model.tokenizer_dir"],
        ]

    def _trained_weights(self, p: Mapping[str, Any], paths: StagePaths, load_flag: str = "--load") -> list[str]:
        """The fine-tuned weights: the trained checkpoint, or base + LoRA adapter for LoRA runs."""
        trained = str(Path(paths.output("train")) / artifacts.CHECKPOINTS)
        if p["optim.finetune"] != "lora":
            return [load_flag, trained]
        base = str(Path(paths.output("convert")) / artifacts.MEGATRON_BASE)
        return [load_flag, base, "--lora-load", trained, *_lora_flags(p)]


def _switch(flag: str, on: bool) -> list[str]:
    return [flag] if on else []


def _layer_list(p: Mapping[str, Any]) -> list[str]:
    nll = p["parallelism.num_layer_list"]
    return ["--num-layer-list", ",".join(map(str, nll))] if nll else []


def _recompute(rc: Mapping[str, Any]) -> list[str]:
    if not rc["granularity"]:
        return []
    args = ["--recompute-granularity", rc["granularity"]]
    if rc["granularity"] == "full":
        args += ["--recompute-method", rc["method"] or "uniform",
                 "--recompute-num-layers", str(rc["num_layers"] or 1)]
    return args


def _padding(p: Mapping[str, Any]) -> list[str]:
    """Packed rows are already seq_length long; otherwise pad each batch to a multiple (dynamic padding)."""
    seq = ["--seq-length", str(p["data.seq_length"])]
    if p["data.pack"]:
        return [*seq, "--reset-attention-mask"]
    return [*seq, "--no-pad-to-seq-lengths", "--pad-to-multiple-of", str(p["data.pad_to_multiple_of"])]


def _lora_flags(p: Mapping[str, Any]) -> list[str]:
    lora = p["optim.lora"]
    return ["--lora-r", str(lora["r"]), "--lora-alpha", str(lora["alpha"]),
            "--lora-target-modules", *lora["targets"]]


def is_handoff_command(command: Command) -> bool:
    """A ``python -m navila_tune.handoff ...`` step (navila_tune's own CLI, not a MindSpeed script)."""
    n = len(HANDOFF)
    return any(tuple(command.argv[i:i + n]) == HANDOFF for i in range(len(command.argv)))


def script_args(command: Command) -> tuple[str, list[str]]:
    """(script, its arguments) of a rendered command, skipping the interpreter and launcher."""
    argv = list(command.argv)
    for i, token in enumerate(argv):
        if token.endswith(".py"):
            return token, argv[i + 1:]
    raise ValueError(f"no MindSpeed script in {command.display()}")
