"""One tensor-parallel rank of megatron-core's GPTModel on CPU (gloo); run by test_megatron_core_tp.

argv: rank world port rank_file arch_json padded_vocab ids_file out_file
Loads its own ``mp_rank_XX/model_optim_rng.pt`` strictly, runs the forward, and rank 0 writes the
vocab-gathered logits to ``out_file``. Test-only: carries the two CPU patches of the test suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rank_file, arch_json, padded, ids_file, out_file = sys.argv[4], sys.argv[5], int(sys.argv[6]), *sys.argv[7:9]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import random as tp_random

    from convert_mcore import build_gpt_model, forward
    from navila_tune.arch import LlamaArch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
    torch.cuda.current_device = lambda: "cpu"  # the two CPU patches
    tp_random.get_cuda_rng_tracker().fork = lambda *a, **k: contextlib.nullcontext()

    model = build_gpt_model(LlamaArch.from_mapping(json.loads(arch_json)), padded)
    model.load_state_dict(torch.load(rank_file, weights_only=False)["model"], strict=True)
    logits = forward(model, torch.load(ids_file))
    parts = [torch.empty_like(logits) for _ in range(world)]
    dist.all_gather(parts, logits.contiguous())
    if rank == 0:
        torch.save(torch.cat(parts, dim=-1), out_file)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
