"""Byte-level file comparisons."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def differing_files(a: Path, b: Path) -> list[str]:
    """Relative names that are not byte-identical between two folders (a file missing on either side counts)."""
    names_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    names_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    out = sorted(names_a ^ names_b)
    out += [n for n in sorted(names_a & names_b) if sha256(a / n) != sha256(b / n)]
    return out
