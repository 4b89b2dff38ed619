"""Copy an entry's pieces from sources to sinks, block by block (the one engine of every conversion).

A sink receives one tensor's bytes in order (``write`` blocks of rows, then ``close``): a region of
a rank file, an entry of a safetensors file, or a tensor in memory. Blocks are at most
``BLOCK_BYTES`` and live in reused scratch buffers, so converting a tensor never holds it whole
(except a column-split tensor's block of full-width rows) and allocates no fresh memory per tensor.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from navila_tune.convert.errors import ConversionError
from navila_tune.convert.sources import TensorSource, nbytes
from navila_tune.convert.weights import Entry, Piece, ShardContext

BLOCK_BYTES = 16 << 20


class Sink(Protocol):
    def write(self, block: torch.Tensor) -> None: ...  # a contiguous block of the next rows

    def close(self) -> None: ...


class MemorySink:
    """Fills a preallocated tensor."""

    def __init__(self, out: torch.Tensor):
        self.out = out
        self._flat = out.view(-1)
        self._pos = 0

    def write(self, block: torch.Tensor) -> None:
        n = block.numel()
        self._flat[self._pos:self._pos + n].copy_(block.reshape(-1))
        self._pos += n

    def close(self) -> None:
        if self._pos != self._flat.numel():
            raise ConversionError(f"internal: tensor filled with {self._pos} of {self._flat.numel()} values")


class Scratch:
    """Reused flat buffers, one per slot (grown when a larger block is asked for)."""

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def take(self, slot: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        size = nbytes(dtype, tuple(shape))
        buf = self._bufs.get(slot)
        if buf is None or buf.numel() < size or buf.device != device:
            buf = self._bufs[slot] = torch.empty(max(size, 1), dtype=torch.uint8, device=device)
        return buf[:size].view(dtype).view(tuple(shape))


def _rows_per_block(shape: Sequence[int], dtype: torch.dtype) -> int:
    row = dtype.itemsize
    for s in shape[1:]:
        row *= s
    return max(1, BLOCK_BYTES // max(row, 1))


def _copy_rows(src: TensorSource, start: int, length: int, dtype: torch.dtype, sink: Sink, scratch: Scratch) -> None:
    """Rows ``[start, start + length)`` of ``src`` to ``sink``, cast to ``dtype``, block by block."""
    step = _rows_per_block(src.shape, dtype)
    for r in range(0, length, step):
        k = min(step, length - r)
        block = scratch.take("rows", (k, *src.shape[1:]), dtype, src.device)
        tmp = None if dtype == src.dtype else scratch.take("cast", (k, *src.shape[1:]), src.dtype, src.device)
        src.rows_into(start + r, k, block, tmp)
        sink.write(block)


def _repeat_row(src: TensorSource, row: int, length: int, dtype: torch.dtype, sink: Sink, scratch: Scratch) -> None:
    one = torch.empty((1, *src.shape[1:]), dtype=dtype, device=src.device)
    src.rows_into(row, 1, one)
    step = _rows_per_block(src.shape, dtype)
    block = one.expand(min(step, length), *src.shape[1:]).contiguous()
    for r in range(0, length, step):
        sink.write(block[: min(step, length - r)])


def stream_shards(entry: Entry, sources: Sequence[TensorSource], ctx: ShardContext, dtype: torch.dtype,
                  open_sink: Callable[[int, tuple[int, ...]], Sink], scratch: Scratch | None = None) -> None:
    """HF tensors (in ``entry.hf`` order) -> every TP rank's tensor, each to ``open_sink(rank, shape)``.

    Pass one ``scratch`` for a whole conversion: its buffers are then allocated once (fresh ones per
    tensor would cost page faults and fragment the heap).
    """
    entry.check_hf(sources, ctx)
    scratch = scratch or Scratch()
    pieces, shapes = entry.pieces(ctx), entry.shard_shapes(ctx)
    if pieces[0].dim == 1:  # column split: each block of source rows feeds every rank
        sinks = [open_sink(rank, shape) for rank, shape in enumerate(shapes)]
        src = sources[pieces[0].hf]
        step = _rows_per_block(src.shape, src.dtype)
        rows = src.shape[0]
        for r in range(0, rows, step):
            k = min(step, rows - r)
            block = scratch.take("rows", (k, *src.shape[1:]), src.dtype, src.device)
            src.rows_into(r, k, block)
            for p in pieces:
                out = scratch.take("cols", (k, p.length), dtype, src.device)
                out.copy_(block[:, p.hf_start:p.hf_start + p.length])
                sinks[p.rank].write(out)
        for sink in sinks:
            sink.close()
        return
    for rank, shape in enumerate(shapes):
        sink = open_sink(rank, shape)
        for p in _tiling(pieces, rank, shape[0], "mg_start", "rank", entry):
            if p.broadcast:
                _repeat_row(sources[p.hf], p.hf_start, p.length, dtype, sink, scratch)
            else:
                _copy_rows(sources[p.hf], p.hf_start, p.length, dtype, sink, scratch)
        sink.close()


def stream_hf(entry: Entry, shards: Sequence[TensorSource], ctx: ShardContext, where: str, dtype: torch.dtype,
              open_sink: Callable[[int, tuple[int, ...]], Sink], scratch: Scratch | None = None) -> None:
    """Every TP rank's tensor -> the HF tensors, each (in ``entry.hf`` order) to ``open_sink(i, shape)``."""
    if len(shards) != ctx.tp:
        raise ConversionError(f"{where}: got {len(shards)} tensor-parallel shards, expected {ctx.tp}")
    for rank, (shard, shape) in enumerate(zip(shards, entry.shard_shapes(ctx))):
        if shard.shape != shape:
            raise ConversionError(
                f"{where} (TP rank {rank}) has shape {list(shard.shape)}; the checkpoint's architecture "
                f"and TP={ctx.tp} imply {list(shape)}: the checkpoint args do not describe its tensors")
    if entry.replicated:
        _check_replicas(shards, where)
    scratch = scratch or Scratch()
    pieces = [p for p in entry.pieces(ctx) if not p.broadcast and not (entry.replicated and p.rank)]
    for i, shape in enumerate(entry.hf_shapes(ctx)):
        sink = open_sink(i, shape)
        mine = [p for p in pieces if p.hf == i]
        if mine[0].dim == 1:  # column split: a block of full HF rows gathers every rank's columns
            step = _rows_per_block(shape, dtype)
            for r in range(0, shape[0], step):
                k = min(step, shape[0] - r)
                out = scratch.take("rows", (k, *shape[1:]), dtype, shards[0].device)
                for p in mine:
                    part = scratch.take("cols", (k, p.length), shards[p.rank].dtype, shards[0].device)
                    shards[p.rank].rows_into(r, k, part)
                    out[:, p.hf_start:p.hf_start + p.length].copy_(part)
                sink.write(out)
        else:
            for p in _tiling(mine, i, shape[0], "hf_start", "hf", entry):
                _copy_rows(shards[p.rank], p.mg_start, p.length, dtype, sink, scratch)
        sink.close()


def _tiling(pieces: Sequence[Piece], which: int, rows: int, start: str, key: str, entry: Entry) -> list[Piece]:
    """The pieces of one tensor in row order; they must tile its rows exactly."""
    mine = sorted((p for p in pieces if getattr(p, key) == which), key=lambda p: getattr(p, start))
    pos = 0
    for p in mine:
        if getattr(p, start) != pos:
            raise AssertionError(f"{entry.mg}: pieces do not tile {key} {which} (gap or overlap at row {pos})")
        pos += p.length
    if pos != rows:
        raise AssertionError(f"{entry.mg}: pieces cover {pos} of {rows} rows of {key} {which}")
    return mine


def _check_replicas(shards: Sequence[TensorSource], where: str) -> None:
    if shards[0].device.type == "meta":
        return
    first = shards[0].read()
    for rank, other in enumerate(shards[1:], start=1):
        if not torch.equal(first, other.read()):
            raise ConversionError(f"{where}: replicated tensor differs between TP rank 0 and {rank}; "
                                  f"the checkpoint is inconsistent")


# in-memory forms (tests, load_megatron_state, resharding): the same engine into MemorySinks


def build_shards(entry: Entry, sources: Sequence[TensorSource], ctx: ShardContext,
                 dtype: torch.dtype | None = None, scratch: Scratch | None = None) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []

    def open_sink(rank: int, shape: tuple[int, ...]) -> Sink:
        outs.append(torch.empty(shape, dtype=dtype or sources[0].dtype, device=sources[0].device))
        return MemorySink(outs[-1])

    stream_shards(entry, sources, ctx, dtype or sources[0].dtype, open_sink, scratch)
    return outs


def build_hf(entry: Entry, shards: Sequence[TensorSource], ctx: ShardContext, where: str,
             dtype: torch.dtype | None = None, scratch: Scratch | None = None) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []

    def open_sink(i: int, shape: tuple[int, ...]) -> Sink:
        outs.append(torch.empty(shape, dtype=dtype or shards[0].dtype, device=shards[0].device))
        return MemorySink(outs[-1])

    stream_hf(entry, shards, ctx, where, dtype or shards[0].dtype, open_sink, scratch)
    return outs
