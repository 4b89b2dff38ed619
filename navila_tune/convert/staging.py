"""Write a directory under a temporary sibling name and rename it into place only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from navila_tune.convert.errors import ConversionError

TMP_MARK = ".incomplete-"


def check_fresh_output(out_dir: Path, *inputs: Path) -> None:
    """``out_dir`` must not exist (an empty directory is allowed) and must not be an input."""
    out = out_dir.resolve()
    for src in inputs:
        s = src.resolve()
        if out == s or s in out.parents or out in s.parents:
            raise ConversionError(f"output {out_dir} overlaps input {src}; write to a separate directory")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConversionError(f"output {out_dir} already exists and is not empty; remove it or choose another")


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final``; rename it to ``final`` if the block succeeds.

    On any error the temporary directory is removed, so nothing half-written is left under a name a
    later stage could take for a finished output. An existing ``final`` (an empty directory, or an
    iteration directory being re-saved) is replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, old / final.name)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and ``os.replace`` it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
