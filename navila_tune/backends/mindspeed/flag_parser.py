"""Argparse parsers built from MindSpeed-LLM 2.3.0's own flag definitions (``flags_2.3.0.json``).

Every command the MindSpeed backend renders is parsed by the parser of the script it calls before it
runs (and in the golden tests), so an unknown flag such as ``--top_p``, a wrong type or a bad choice is
caught here instead of minutes into an NPU job.
"""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

FLAGS_FILE = Path(__file__).with_name("flags_2.3.0.json")


class FlagError(ValueError):
    """A rendered MindSpeed command that the real script would reject."""


class _StrictParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise FlagError(message)


def _thinking(value: str) -> Any:
    return {"true": True, "false": False, "none": None}[value.lower()]


def _type(name: Any) -> Any:
    if name in (None, "str"):
        return str
    if name == "int":
        return int
    if name == "float":
        return float
    if name == "json.loads":
        return json.loads
    if isinstance(name, str) and "'true': True" in name:
        return _thinking
    return str  # other callables (enum lookups, list parsers) take a string


@lru_cache(maxsize=None)
def _data() -> dict[str, Any]:
    return json.loads(FLAGS_FILE.read_text())


def parser_name(script: str, load_model_type: str | None = None) -> str:
    if script == "convert_ckpt.py":
        if load_model_type not in ("hf", "mg"):
            raise FlagError("convert_ckpt.py needs --load-model-type hf|mg (omitted: 'Unable to load loader "
                            "plugin megatron')")
        return f"convert_ckpt.py:{load_model_type}"
    try:
        return _data()["scripts"][script]
    except KeyError:
        raise FlagError(f"no flag reference for MindSpeed-LLM script {script}") from None


@lru_cache(maxsize=None)
def build_parser(name: str) -> argparse.ArgumentParser:
    spec = _data()["parsers"][name]
    parser = _StrictParser(prog=name, allow_abbrev=False, add_help=False,
                           conflict_handler="resolve" if name.startswith("convert") else "error")
    for flag in spec["flags"]:
        kwargs: dict[str, Any] = {"dest": flag["dest"]}
        action = flag.get("action")
        if action in ("store_true", "store_false"):
            kwargs["action"] = action
        else:
            kwargs["type"] = _type(flag.get("type"))
            if "nargs" in flag:
                kwargs["nargs"] = flag["nargs"]
            if "choices" in flag:
                kwargs["choices"] = flag["choices"]
        if flag.get("required"):
            kwargs["required"] = True
        parser.add_argument(*flag["flags"], **kwargs)
    return parser


def parse(script: str, args: Sequence[str]) -> argparse.Namespace:
    """Parse ``args`` (the script's arguments, without the interpreter or launcher) as the script would."""
    load_type = None
    if script == "convert_ckpt.py" and "--load-model-type" in args:
        load_type = args[list(args).index("--load-model-type") + 1]
    namespace = build_parser(parser_name(script, load_type)).parse_args(list(args))
    for flag, allowed in _data()["runtime_choices"].get(script, {}).items():
        dest = flag.lstrip("-").replace("-", "_")
        value = getattr(namespace, dest, None)
        for v in value if isinstance(value, list) else [value] if value is not None else []:
            if v not in allowed:
                raise FlagError(f"argument {flag}: invalid choice: {v!r} (choose from {', '.join(allowed)})")
    if script == "convert_ckpt.py" and getattr(namespace, "save_model_type", None) not in ("mg", "hf"):
        raise FlagError("convert_ckpt.py needs --save-model-type mg|hf (its default 'megatron' saves nothing)")
    return namespace
