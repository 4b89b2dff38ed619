"""Finding and loading the input with the ``datasets`` library, with MindSpeed's ``--input`` semantics.

A file is loaded by its extension; a folder loads every file with its most common supported extension
(MindSpeed-LLM ``_get_data_format``). A path that does not exist is an error: unlike MindSpeed, nothing is
ever fetched from the hub.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError

# extension -> datasets packaged builder
BUILDERS = {"parquet": "parquet", "arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json"}


@dataclass
class InputFiles:
    builder: str
    extension: str
    files: list[str]
    ignored: list[str] = field(default_factory=list)


def resolve_input(path: str) -> InputFiles:
    if not os.path.exists(path):
        raise DataError(f"data.input={path!r} does not exist (navila_tune never downloads datasets from the hub; "
                        f"pass a local file or folder)")
    if os.path.isfile(path):
        ext = _extension(path)
        if ext not in BUILDERS:
            raise DataError(f"data.input={path!r}: unsupported extension {ext!r}; use one of "
                            f"{', '.join('.' + e for e in BUILDERS)}")
        return InputFiles(BUILDERS[ext], ext, [os.path.abspath(path)])
    entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
    files = [os.path.abspath(os.path.join(path, e)) for e in entries if os.path.isfile(os.path.join(path, e))]
    counts = Counter(_extension(f) for f in files if _extension(f) in BUILDERS)
    if not counts:
        raise DataError(f"data.input={path!r} is a folder without data files (looked for "
                        f"{', '.join('*.' + e for e in BUILDERS)})")
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        tied = sorted(e for e, n in ranked if n == ranked[0][1])
        raise DataError(f"data.input={path!r} holds as many *.{tied[0]} as *.{tied[1]} files, so the format is "
                        f"ambiguous (MindSpeed would pick by listing order); keep one format in the folder")
    ext = ranked[0][0]
    chosen = [f for f in files if _extension(f) == ext]
    return InputFiles(BUILDERS[ext], ext, chosen, ignored=[f for f in files if f not in chosen])


def _extension(path: str) -> str:
    return path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(path) else ""


def load_rows(source: InputFiles, cache_dir: str | None, progress: bool) -> Any:
    """The input as a ``datasets.Dataset`` (memory-mapped Arrow, rows in file order)."""
    import datasets

    bars_were_enabled = not datasets.are_progress_bars_disabled()
    if not progress and bars_were_enabled:
        datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(source.builder, data_files=source.files, split="train", cache_dir=cache_dir)
    except Exception as exc:  # datasets raises many types; name the files and the cause
        raise DataError(f"could not read {', '.join(source.files)} as {source.builder}: "
                        f"{type(exc).__name__}: {exc}") from exc
    finally:
        if not progress and bars_were_enabled:
            datasets.enable_progress_bars()


def check_columns(columns: list[str], map_keys: dict[str, str | None], path: str) -> None:
    """Every mapped column must exist; the error names the missing ones and the ones that do exist."""
    missing = [(key, col) for key, col in map_keys.items() if col and col not in columns]
    if missing:
        named = ", ".join(f"map_keys.{key}={col!r}" for key, col in missing)
        raise DataError(f"data.input={path!r} has no column(s) {', '.join(repr(c) for _, c in missing)} "
                        f"({named}); the columns are: {', '.join(repr(c) for c in columns)}. "
                        f"Fix data.map_keys to name existing columns.")
