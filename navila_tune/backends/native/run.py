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
    results = final_paths(results, job["output"])
    (out / artifacts.METRICS).write_text(json.dumps(results, indent=1, sort_keys=True, default=str))
    return results


@stage
def export(job: Job) -> dict[str, Any]:
    from navila_tune.convert import megatron_to_hf

    _threads(job)
    p, out, up = job["params"], Path(job["output"]), job["upstream"]
    hf_out = out / artifacts.HF_EXPORT
    trained = Path(up["train"]) / artifacts.CHECKPOINTS
    megatron_to_hf(trained, hf_out, source_hf_dir=p["model.hf_dir"], dtype=p["model.params_dtype"],
                   expected_arch=_arch(p))
    return {"hf": str(hf_out), **_handoff(job, hf_out, trained)}


def _handoff(job: Job, hf_out: Path, trained: Path) -> dict[str, Any]:
    """NaVILA's side of the export: stop ids, the VILA splice, the hand-off check (its failure fails the stage)."""
    from navila_tune.handoff import CheckOptions, ensure_generation_config, run_checks, splice_vila

    p, out, e = job["params"], Path(job["output"]), job["params"]["export"]
    result: dict[str, Any] = ensure_generation_config(hf_out)
    vila_out = out / artifacts.VILA_EXPORT
    if e["vila"]:
        result["splice"] = splice_vila(p["model.vila_dir"], hf_out, vila_out,
                                       final_dir=final_paths(str(vila_out), job["output"]))
        result["vila"] = str(vila_out)
    if not e["handoff_check"]:
        return result
    report = run_checks(CheckOptions(
        hf_dir=str(hf_out), arch=_arch(p), dtype=p["model.params_dtype"], source_tokenizer_dir=p["model.tokenizer_dir"],
        megatron_dir=str(trained), data_prefix=str(Path(job["upstream"]["preprocess"]) / artifacts.TRAIN_PREFIX),
        samples=e["check_samples"], max_tokens=e["check_max_tokens"], dtypes=e["check_dtypes"],
        device=p["backend.native.device"], navila_python=e["navila_python"],
        vila_dir=str(vila_out) if e["vila"] else None, vila_source=p["model.vila_dir"] if e["vila"] else None,
        vila_final_dir=final_paths(str(vila_out), job["output"]) if e["vila"] else None))
    if report.ok:  # the folder is renamed to its final name once the stage completes
        report.relocate(job["output"], final_paths(job["output"], job["output"]))
    json_path, text_path = report.write(out)
    print(report.text(), flush=True)
    if not report.ok:
        raise SystemExit(f"NaVILA hand-off check failed ({', '.join(i.name for i in report.failures)}); the report "
                         f"is {text_path}. Fix what it names and re-run the export stage.")
    result["handoff"] = {"status": "pass", "report": str(json_path),
                         "warnings": [i.name for i in report.items if i.status == "warn"]}
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m navila_tune.backends.native.run JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text())
    result = STAGES[job["stage"]](job)
    if _is_rank_zero():
        out = Path(job["output"])
        (out / "result.json").write_text(json.dumps(final_paths(result, job["output"]), indent=1, sort_keys=True,
                                                    default=str))
    return 0


def final_paths(obj: Any, partial: str) -> Any:
    """Paths into the stage's ``.partial`` folder, as they will read once the executor renamed it."""
    final = partial[: -len(".partial")] if partial.endswith(".partial") else partial
    if isinstance(obj, str):
        return obj.replace(partial, final)
    if isinstance(obj, dict):
        return {k: final_paths(v, partial) for k, v in obj.items()}
    if isinstance(obj, list):
        return [final_paths(v, partial) for v in obj]
    return obj


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
