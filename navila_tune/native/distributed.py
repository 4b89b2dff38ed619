"""Data parallelism from torchrun's environment: gloo on CPU, nccl on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

_BUCKET_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # this module initialised the process group (and tears it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}; the native backend runs on 'cpu' or 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no CUDA device. Fix: use device=cpu "
                           "(backend.native.device=cpu, hardware=cpu) or run on a GPU machine.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, owns_group=owns)


def shutdown(ctx: DistContext, synchronize: bool = True) -> None:
    """Leave the process group. After a normal end every rank first meets the others at a barrier, so no
    rank tears down gloo's connections while a peer is still using them (a rank that did so was seen to
    abort at exit: "terminate called without an active exception"); after an error nobody waits."""
    if ctx.owns_group and dist.is_initialized():
        if synchronize and ctx.enabled:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(ctx: DistContext, params: list[torch.nn.Parameter]) -> None:
    """Mean of the gradients over data-parallel ranks (Megatron's DDP scales by 1/DP), in flat buckets."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        bucket.append(g)
        size += g.numel()
        if size >= _BUCKET_ELEMENTS:
            _reduce_bucket(bucket, ctx.world_size)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket, ctx.world_size)


def _reduce_bucket(grads: list[torch.Tensor], world: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n
