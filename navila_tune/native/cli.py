"""Command lines built from the params dataclasses: one ``--flag`` per field, same names with dashes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from typing import Any, Sequence, TypeVar

from navila_tune.arch import LlamaArch

T = TypeVar("T")


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(inner type, optional) for ``X | None`` / ``Optional[X]``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r} ({e})") from e


def _arch(text: str) -> LlamaArch:
    return LlamaArch.from_mapping(_json_value(text))


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, optional = _unwrap(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kwargs: dict[str, Any] = {"dest": f.name, "required": required}
        if not required:
            kwargs["default"] = default
        shown = "" if required else f" (default: {default!r})"
        origin = typing.get_origin(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            (item,) = typing.get_args(hint)
            kwargs.update(nargs="*", type=item, metavar=item.__name__.upper())
        elif origin is dict or hint is dict:
            kwargs.update(type=_json_value, metavar="JSON")
        elif hint is LlamaArch:
            kwargs.update(type=_arch, metavar="JSON")
        elif hint in (int, float, str):
            kwargs.update(type=hint, metavar=hint.__name__.upper())
        else:
            raise TypeError(f"no command-line form for {cls.__name__}.{f.name}: {hint}")
        kwargs["help"] = ("required" if required else "optional" if optional else "") + shown
        parser.add_argument(flag, **kwargs)
    return parser


def parse_params(cls: type[T], argv: Sequence[str] | None, prog: str, description: str) -> T:
    args = build_parser(cls, prog, description).parse_args(argv)
    return cls(**vars(args))


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=1, sort_keys=True, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()
