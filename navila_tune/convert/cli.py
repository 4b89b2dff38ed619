"""``python -m navila_tune.convert hf2mg|mg2hf|mg2mg``: the converters on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from navila_tune.arch import LlamaArch

EPILOG = """examples:
  python -m navila_tune.convert hf2mg --hf-dir Meta-Llama-3-8B-Instruct --out-dir mg_tp8 --tp 8 --pp 1
  python -m navila_tune.convert mg2hf --mg-dir run/mg --source-hf-dir Meta-Llama-3-8B-Instruct --out-dir hf_out
  python -m navila_tune.convert mg2mg --mg-dir mg_tp8 --out-dir mg_tp1_pp4 --tp 1 --pp 4
Outputs are written under a temporary sibling name and renamed when complete."""


def _layer_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers (e.g. 7,9,8,8)") from None


def _arch(text: str) -> LlamaArch:
    try:
        return LlamaArch.from_mapping(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise argparse.ArgumentTypeError(f"--expected-arch must be a JSON object of LlamaArch fields ({e})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m navila_tune.convert", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert Llama checkpoints between HF safetensors and the MindSpeed-LLM 2.3.0 "
                    "Megatron-mcore layout (any TP/PP), streaming tensor by tensor.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{hf2mg,mg2hf,mg2mg}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out-dir", required=True, help="output directory (must not exist, or be empty)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    def layout(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tp", type=int, required=True, help="tensor-parallel size (must divide the query groups)")
        p.add_argument("--pp", type=int, required=True, help="pipeline-parallel size")
        p.add_argument("--num-layer-list", type=_layer_list, default=None, metavar="N,N,...",
                       help="layers per pipeline stage (PP entries summing to the layer count)")

    h = sub.add_parser("hf2mg", help="HF directory -> Megatron checkpoint",
                       description="HF Llama directory (safetensors) -> Megatron checkpoint at TP/PP, iteration 1.")
    h.add_argument("--hf-dir", required=True, help="HF model directory (config.json + safetensors)")
    common(h)
    layout(h)
    h.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="weight dtype (default bf16)")
    h.add_argument("--make-vocab-size-divisible-by", type=int, default=1, metavar="M",
                   help="pad the vocab to a multiple of M*TP (MindSpeed's converter default: 1)")
    h.add_argument("--expected-arch", type=_arch, default=None, metavar="JSON",
                   help="fail unless config.json matches these LlamaArch fields")

    m = sub.add_parser("mg2hf", help="Megatron checkpoint -> HF directory",
                       description="Megatron checkpoint (any TP/PP, any iteration) -> HF directory loadable by "
                                   "transformers; config, tokenizer and generation config come from --source-hf-dir.")
    m.add_argument("--mg-dir", required=True, help="checkpoint root (holds latest_checkpointed_iteration.txt)")
    m.add_argument("--source-hf-dir", required=True, help="the HF model the checkpoint came from (weights not read)")
    common(m)
    m.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="output dtype (default: the checkpoint's)")
    m.add_argument("--iteration", type=int, default=None, help="iteration to export (default: the tracker's)")
    m.add_argument("--expected-arch", type=_arch, default=None, metavar="JSON",
                   help="fail unless the source config.json matches these LlamaArch fields")

    r = sub.add_parser("mg2mg", help="Megatron checkpoint -> Megatron checkpoint at another TP/PP",
                       description="Reshard a Megatron checkpoint to another TP/PP (model weights only; the "
                                   "iteration and args are kept).")
    r.add_argument("--mg-dir", required=True, help="checkpoint root (holds latest_checkpointed_iteration.txt)")
    common(r)
    layout(r)
    r.add_argument("--iteration", type=int, default=None, help="iteration to reshard (default: the tracker's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from navila_tune.convert import ConversionError, hf_to_megatron, megatron_to_hf, reshard

    progress = not args.quiet
    try:
        if args.command == "hf2mg":
            hf_to_megatron(args.hf_dir, args.out_dir, tp=args.tp, pp=args.pp, num_layer_list=args.num_layer_list,
                           dtype=args.dtype, make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                           expected_arch=args.expected_arch, progress=progress)
        elif args.command == "mg2hf":
            megatron_to_hf(args.mg_dir, args.out_dir, source_hf_dir=args.source_hf_dir, dtype=args.dtype,
                           iteration=args.iteration, expected_arch=args.expected_arch, progress=progress)
        else:
            reshard(args.mg_dir, args.out_dir, tp=args.tp, pp=args.pp, num_layer_list=args.num_layer_list,
                    iteration=args.iteration, progress=progress)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
