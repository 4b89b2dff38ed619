"""Where a tensor's values come from: memory, or a region of a file read with pread (no mmap).

Conversions copy blocks of rows straight from a source into the tensor being built, so a fused or
split tensor is assembled with one read per block and no intermediate copies; a block lands in
memory only when asked for, and leaves it when the tensor that holds it is dropped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from navila_tune.convert.errors import ConversionError


def nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype``."""
    return dtype.itemsize * math.prod(shape)


class TensorSource:
    """A tensor that can be read whole or by blocks of leading-dimension rows."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype

    device = torch.device("cpu")

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)

    def read(self) -> torch.Tensor:
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        if out.numel():
            self._read_rows(0, self.shape[0], out)
        return out

    def rows_into(self, start: int, length: int, out: torch.Tensor, tmp: torch.Tensor | None = None) -> None:
        """Copy rows ``[start, start + length)`` into ``out``, cast to its dtype if needed (through ``tmp``)."""
        if length == 0:
            return
        if out.dtype == self.dtype and out.is_contiguous():
            self._read_rows(start, length, out)
        else:
            if tmp is None:
                tmp = torch.empty((length, *self.shape[1:]), dtype=self.dtype, device=self.device)
            self._read_rows(start, length, tmp)
            out.copy_(tmp)

    def _read_rows(self, start: int, length: int, out: torch.Tensor) -> None:
        raise NotImplementedError


class MemorySource(TensorSource):
    def __init__(self, tensor: torch.Tensor, name: str = "tensor"):
        super().__init__(name, tuple(tensor.shape), tensor.dtype)
        self.tensor = tensor
        self.device = tensor.device

    def read(self) -> torch.Tensor:
        return self.tensor

    def _read_rows(self, start: int, length: int, out: torch.Tensor) -> None:
        out.copy_(self.tensor.narrow(0, start, length))


class FileSource(TensorSource):
    """A C-contiguous tensor stored at byte ``offset`` of an open file."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, fd: int, offset: int, path: Path):
        super().__init__(name, shape, dtype)
        self.fd, self.offset, self.path = fd, offset, path
        row = dtype.itemsize
        for s in self.shape[1:]:
            row *= s
        self.row_bytes = row

    def _read_rows(self, start: int, length: int, out: torch.Tensor) -> None:
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        pread_into(self.fd, view, self.offset + start * self.row_bytes, self.path)


def pread_into(fd: int, view: memoryview, offset: int, path: Path) -> None:
    """Fill ``view`` from ``fd`` at ``offset`` (a short file is an error naming ``path``)."""
    mv = view.cast("B")
    done = 0
    while done < len(mv):
        n = os.preadv(fd, [mv[done:]], offset + done)
        if n <= 0:
            raise ConversionError(f"{path}: unexpected end of file at byte {offset + done}; the file is truncated")
        done += n
