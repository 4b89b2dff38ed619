"""``python -m navila_tune.data preprocess ...`` and ``python -m navila_tune.data show PREFIX --index N``."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import DataError
from .params import OVERLONG_CHOICES, PreprocessParams, default_map_keys

_THINKING = {"true": True, "false": False, "none": None}


def _thinking(value: str) -> bool | None:
    try:
        return _THINKING[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{value!r}: use true, false or none") from None


def _map_keys(value: str) -> dict:
    try:
        keys = json.loads(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--map-keys must be JSON, e.g. '{{\"prompt\":\"question\"}}': {exc}")
    if not isinstance(keys, dict):
        raise argparse.ArgumentTypeError("--map-keys must be a JSON object")
    merged = default_map_keys()
    merged.update({k: (v or None) for k, v in keys.items()})
    return merged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m navila_tune.data",
                                     description="Native MindSpeed-compatible preprocessing and label view.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("preprocess", help="Alpaca-style data -> PREFIX_packed_*_document.{bin,idx} + report")
    p.add_argument("--input", required=True, help="file or folder (parquet, json, jsonl, csv, arrow)")
    p.add_argument("--tokenizer", "--tokenizer-name-or-path", dest="tokenizer", required=True)
    p.add_argument("--output-prefix", required=True)
    p.add_argument("--seq-length", type=int, required=True)
    p.add_argument("--prompt-type", default="llama3")
    p.add_argument("--handler", "--handler-name", dest="handler", default="AlpacaStyleInstructionHandler")
    p.add_argument("--map-keys", type=_map_keys, default=None, help="JSON, as MindSpeed's --map-keys")
    p.add_argument("--pack", action="store_true")
    p.add_argument("--neat-pack", action="store_true")
    p.add_argument("--append-eod", action="store_true")
    p.add_argument("--enable-thinking", type=_thinking, default=None, help="true | false | none")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overlong", choices=OVERLONG_CHOICES, default="mindspeed")
    p.add_argument("--max-bad-row-fraction", type=float, default=0.01)
    p.add_argument("--answer-marker", default="The next action is", help="'' for none (final line only)")
    p.add_argument("--cache-dir", default=None, help="datasets cache for the loaded input")
    p.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("show", help="print one written sequence with prompt and trained tokens marked")
    s.add_argument("prefix")
    s.add_argument("--index", type=int, required=True)
    s.add_argument("--tokenizer", default=None, help="default: the tokenizer named in the data report")
    s.add_argument("--color", "--colour", dest="color", choices=("auto", "always", "never"), default="auto")
    s.add_argument("--tokens", action="store_true", help="also print a per-token table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "preprocess":
            from .pipeline import preprocess

            params = PreprocessParams(
                input=args.input, tokenizer_dir=args.tokenizer, output_prefix=args.output_prefix,
                seq_length=args.seq_length, prompt_type=args.prompt_type, handler=args.handler,
                map_keys=args.map_keys or default_map_keys(), pack=args.pack, neat_pack=args.neat_pack,
                append_eod=args.append_eod, enable_thinking=args.enable_thinking, workers=args.workers,
                overlong=args.overlong, max_bad_row_fraction=args.max_bad_row_fraction,
                answer_marker=args.answer_marker or None, progress=not args.no_progress,
                cache_dir=args.cache_dir)
            preprocess(params)
        else:
            from .show import show

            colour = {"auto": None, "always": True, "never": False}[args.color]
            show(args.prefix, args.index, args.tokenizer, colour, args.tokens)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `show ... | head`
        sys.stderr.close()
        return 0
    return 0
