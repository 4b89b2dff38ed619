"""``python -m navila_tune.handoff {check,finalize,splice}``.

check DIR      every hand-off check of an exported LLM directory; prints the report, writes
               handoff_report.{json,txt} with --out, exits 1 when an item failed.
finalize DIR   make generation_config.json's eos list include <|end_of_text|> and <|eot_id|>.
splice         write a VILA checkpoint: the source's vision_tower/, mm_projector/, config.json + a new llm/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from navila_tune.handoff.check import DEFAULT_DTYPES


def _arch(value: str | None, model: str | None) -> tuple[Any, str | None]:
    """(LlamaArch or None, params dtype or None) from --arch JSON/FILE or --model GROUP."""
    from navila_tune.arch import LlamaArch

    if value:
        text = Path(value).read_text() if Path(value).is_file() else value
        return LlamaArch.from_mapping(json.loads(text)), None
    if model:
        from omegaconf import OmegaConf

        from navila_tune.config import compose

        cfg = compose([f"model={model}"])
        return LlamaArch.from_mapping(OmegaConf.to_container(cfg.model.arch, resolve=True)), cfg.model.params_dtype
    return None, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m navila_tune.handoff",
                                     description="Check an exported LLM for NaVILA, and splice it into a VILA "
                                                 "checkpoint.")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="run the hand-off checks on an exported HF directory")
    c.add_argument("hf_dir")
    c.add_argument("--arch", help="the model group's arch as JSON (or a JSON file); default: config.json's")
    c.add_argument("--model", help="a model group name (conf/model/NAME.yaml) to take arch and dtype from")
    c.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="dtype the weights were exported in")
    c.add_argument("--source-tokenizer", help="folder the tokenizer files were copied from (byte comparison)")
    c.add_argument("--megatron", help="trained Megatron checkpoint root (reference for the loss check)")
    c.add_argument("--data-prefix", help="preprocessed training data prefix (samples for the loss check)")
    c.add_argument("--samples", type=int, default=4, help="training samples for the loss check (default 4)")
    c.add_argument("--max-tokens", type=int, default=512, help="tokens per sample kept (default 512)")
    c.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES), help="loss check dtypes (default fp32,bf16,fp16)")
    c.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    c.add_argument("--navila-python", help="python of a NaVILA-pinned env (scripts/make_navila_env.sh)")
    c.add_argument("--vila", help="a spliced VILA checkpoint holding this export as llm/")
    c.add_argument("--vila-source", help="the VILA checkpoint it was spliced from")
    c.add_argument("--vila-final", help="where the spliced checkpoint will live (default --vila)")
    c.add_argument("--out", help="write handoff_report.json and handoff_report.txt into this folder")
    c.add_argument("--relocate", metavar="OLD=NEW", help="when the check passes, report paths under OLD as "
                                                          "under NEW (a folder renamed once complete)")

    f = sub.add_parser("finalize", help="make generation_config.json stop on <|end_of_text|> and <|eot_id|>")
    f.add_argument("hf_dir")

    s = sub.add_parser("splice", help="write a VILA checkpoint holding a fine-tuned llm/")
    s.add_argument("--source", required=True, help="the NaVILA/VILA checkpoint (config.json, llm/, vision_tower/, "
                                                   "mm_projector/)")
    s.add_argument("--llm", required=True, help="the exported HF LLM directory")
    s.add_argument("--out", required=True, help="the new checkpoint directory (must not exist)")
    s.add_argument("--final", help="where it will live, written into its config (default --out)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "finalize":
        from navila_tune.handoff.generation import ensure_generation_config

        print(json.dumps(ensure_generation_config(args.hf_dir)))
        return 0
    if args.command == "splice":
        from navila_tune.handoff.vila import VilaError, splice

        try:
            print(json.dumps(splice(args.source, args.llm, args.out, final_dir=args.final)))
        except VilaError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    from navila_tune.handoff.check import CheckOptions, run_checks

    arch, model_dtype = _arch(args.arch, args.model)
    report = run_checks(CheckOptions(
        hf_dir=args.hf_dir, arch=arch, dtype=args.dtype or model_dtype, source_tokenizer_dir=args.source_tokenizer,
        megatron_dir=args.megatron, data_prefix=args.data_prefix, samples=args.samples, max_tokens=args.max_tokens,
        dtypes=[d for d in args.dtypes.split(",") if d], device=args.device, navila_python=args.navila_python,
        vila_dir=args.vila, vila_source=args.vila_source, vila_final_dir=args.vila_final))
    if args.relocate and report.ok:  # a failed stage keeps its folder's name
        old, _, new = args.relocate.partition("=")
        report.relocate(old, new)
    print(report.text(), flush=True)
    if args.out:
        for path in report.write(args.out):
            print(f"wrote {path}")
    return 0 if report.ok else 1
