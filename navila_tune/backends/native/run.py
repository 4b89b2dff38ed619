"""Run one native stage from its job file: ``python -m navila_tune.backends.native.run JOB.json``.

The job file (written by the executor from the plan) holds the stage's params keyed by config path,
its runtime settings, where to write and the outputs of its upstream stages. This module only maps
those onto the library calls (converter, preprocessor, trainer, generator, evaluator).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

from navila_tune import artifacts
from navila_tune.arch import LlamaArch

Job = dict[str, Any]
STAGES: dict[str, Callable[[Job], dict[str, Any]]] = {}


def stage(fn: Callable[[Job], dict[str, Any]]) -> Callable[[Job], dict[str, Any]]:
    STAGES[fn.__name__] = fn
    return fn


def _arch(p: dict[str, Any]) -> LlamaArch:
    return LlamaArch.from_mapping(p["model.arch"])


def _threads(job: Job) -> None:
    threads = job["runtime"].get("backend.native.threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@stage
def convert(job: Job) -> dict[str, Any]:
    from navila_tune.backends.native.init_weights import has_weights, init_random_weights
    from navila_tune.convert import hf_to_megatron

    p, out = job["params"], Path(job["output"])
    hf_dir = Path(p["model.hf_dir"])
    if not has_weights(hf_dir):
        if p["model.init_seed"] is None:
            raise SystemExit(f"model.hf_dir = {hf_dir} holds no *.safetensors weights; put the weights there, "
                             "or set model.init_seed to start from random weights")
        hf_dir = init_random_weights(hf_dir, out / "init_hf", seed=p["model.init_seed"], dtype=p["model.params_dtype"])
    hf_to_megatron(hf_dir, out / artifacts.MEGATRON_BASE, tp=p["parallelism.tp"], pp=p["parallelism.pp"],
                   num_layer_list=p["parallelism.num_layer_list"], dtype=p["model.params_dtype"],
                   make_vocab_size_divisible_by=p["model.make_vocab_size_divisible_by"], expected_arch=_arch(p))
    return {"megatron": str(out / artifacts.MEGATRON_BASE)}


@stage
def preprocess(job: Job) -> dict[str, Any]:
    from navila_tune.data import PreprocessParams
    from navila_tune.data import preprocess as run_preprocess

    p, out = job["params"], Path(job["output"])
    reports = {}
    for key, prefix in (("data.input", artifacts.TRAIN_PREFIX), ("data.eval_input", artifacts.EVAL_PREFIX)):
        if not p[key]:
            continue
        report = run_preprocess(PreprocessParams(
            input=p[key], tokenizer_dir=p["model.tokenizer_dir"], output_prefix=str(out / prefix),
            seq_length=p["data.seq_length"], prompt_type=p["model.prompt_type"], handler=p["data.handler"],
            map_keys=p["data.map_keys"], pack=p["data.pack"], neat_pack=p["data.neat_pack"],
            append_eod=p["data.append_eod"], enable_thinking=p["data.enable_thinking"],
            workers=job["runtime"]["data.workers"], overlong=p["data.overlong"],
            max_bad_row_fraction=p["data.max_bad_row_fraction"], answer_marker=p["data.answer_marker"],
        ))
        reports[prefix] = report.to_dict() if hasattr(report, "to_dict") else str(report)
    return reports


@stage
def train(job: Job) -> dict[str, Any]:
    from navila_tune.native.train import TrainParams
    from navila_tune.native.train import train as run_train

    p, rt, out, up = job["params"], job["runtime"], Path(job["output"]), job["upstream"]
    par, optim = p["parallelism"], {k.split(".", 1)[1]: v for k, v in p.items() if k.startswith("optim.")}
    eval_prefix = Path(up["preprocess"]) / artifacts.EVAL_PREFIX
    return run_train(TrainParams(
        load_dir=str(Path(up["convert"]) / artifacts.MEGATRON_BASE),
        data_prefix=str(Path(up["preprocess"]) / artifacts.TRAIN_PREFIX),
        eval_prefix=str(eval_prefix) if Path(f"{eval_prefix}_packed_input_ids_document.idx").exists() else None,
        save_dir=str(out / artifacts.CHECKPOINTS), output_dir=str(out),
        tp=par["tp"], pp=par["pp"], num_layer_list=par["num_layer_list"],
        finetune=optim["finetune"], lora_r=optim["lora"]["r"], lora_alpha=optim["lora"]["alpha"],
        lora_targets=list(optim["lora"]["targets"]),
        lr=optim["lr"], min_lr=optim["min_lr"], lr_decay_style=optim["lr_decay_style"],
        warmup_ratio=optim["warmup_ratio"], weight_decay=optim["weight_decay"], adam_beta1=optim["adam_beta1"],
        adam_beta2=optim["adam_beta2"], adam_eps=optim["adam_eps"], clip_grad=optim["clip_grad"],
        train_iters=optim["train_iters"], global_batch_size=optim["global_batch_size"],
        micro_batch_size=optim["micro_batch_size"], log_interval=rt["optim.log_interval"],
        eval_interval=optim["eval_interval"], eval_iters=optim["eval_iters"], save_interval=optim["save_interval"],
        seed=optim["seed"], precision=optim["precision"], seq_length=p["data.seq_length"],
        pad_to_multiple_of=p["data.pad_to_multiple_of"], device=p["backend.native.device"],
        expected_arch=_arch(p), threads=rt.get("backend.native.threads"),
    ))


def _prompts(p: dict[str, Any]) -> list[str]:
    g = p["generate"]
    if g["prompts"]:
        return list(g["prompts"])
    from navila_tune.native.evaluate import read_rows

    rows = read_rows(p["data.eval_input"], p["data.map_keys"], g["num_eval_prompts"])
    return [r["user"] for r in rows]


@stage
def generate(job: Job) -> dict[str, Any]:
    from navila_tune.native.generate import GenerateParams
    from navila_tune.native.generate import generate as run_generate

    _threads(job)
    p, out, up = job["params"], Path(job["output"]), job["upstream"]
    g = p["generate"]
    records = run_generate(GenerateParams(
        load_dir=str(Path(up["train"]) / artifacts.CHECKPOINTS), tokenizer_dir=p["model.tokenizer_dir"],
        prompts=_prompts(p), output_jsonl=str(out / artifacts.GENERATIONS), max_new_tokens=g["max_new_tokens"],
        temperature=g["temperature"], top_p=g["top_p"], top_k=g["top_k"], seed=p["optim.seed"],
        device=p["backend.native.device"],
    ))
    return {"generations": len(records)}


@stage
def evaluate(job: Job) -> dict[str, Any]:
    from navila_tune.native.evaluate import EvaluateParams
    from navila_tune.native.evaluate import evaluate as run_evaluate

    _threads(job)
    p, rt, out, up = job["params"], job["runtime"], Path(job["output"]), job["upstream"]
    common = dict(
        tokenizer_dir=p["model.tokenizer_dir"], eval_input=p["data.eval_input"], map_keys=p["data.map_keys"],
        answer_marker=p["data.answer_marker"], max_samples=p["evaluate.max_samples"],
        max_new_tokens=p["evaluate.max_new_tokens"], batch_size=rt["evaluate.batch_size"],
        device=p["backend.native.device"], seq_length=p["data.seq_length"],
    )
    results = {"finetuned": run_evaluate(EvaluateParams(
        load_dir=str(Path(up["train"]) / artifacts.CHECKPOINTS), output_json=str(out / "finetuned.json"),
        label="finetuned", **common))}
    if p["evaluate.baseline"]:
        results["base"] = run_evaluate(EvaluateParams(
            load_dir=str(Path(up["convert"]) / artifacts.MEGATRON_BASE), output_json=str(out / "base.json"),
            label="base", **common))
    (out / artifacts.METRICS).write_text(json.dumps(results, indent=1, sort_keys=True))
    return results


@stage
def export(job: Job) -> dict[str, Any]:
    from navila_tune.convert import megatron_to_hf

    p, out, up = job["params"], Path(job["output"]), job["upstream"]
    hf_out = out / artifacts.HF_EXPORT
    megatron_to_hf(Path(up["train"]) / artifacts.CHECKPOINTS, hf_out, source_hf_dir=p["model.hf_dir"],
                   dtype=p["model.params_dtype"], expected_arch=_arch(p))
    return {"hf": str(hf_out)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m navila_tune.backends.native.run JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    result = STAGES[job["stage"]](job)
    if _is_rank_zero():
        (Path(job["output"]) / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    return 0


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
