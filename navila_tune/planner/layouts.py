"""Candidate layouts on a hardware group: enumeration, ranking, Hydra overrides, other hardware groups.

A candidate varies TP, PP (DP follows from the world size), the micro batch size (smaller, with more
accumulation; the global batch stays), recompute, the distributed optimizer and, for alternatives, the
fine-tuning method. Only layouts the validator accepts are produced: TP divides heads and query groups
and stays inside a node, PP divides the layers, world = TP x PP x CP x DP, GBS divisible by MBS x DP.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from navila_tune.planner.memory import MemoryBreakdown, estimate_shape
from navila_tune.planner.params import linear_shapes
from navila_tune.planner.shape import RunShape, divisors, layout_problems
from navila_tune.planner.throughput import Throughput, throughput


@dataclass(frozen=True)
class Candidate:
    shape: RunShape
    memory: MemoryBreakdown
    perf: Throughput
    relative_throughput: float = 1.0  # tokens/s relative to the best candidate of its list

    @property
    def total_gb(self) -> float:
        return self.memory.total_gb

    @property
    def fits(self) -> bool:
        return self.memory.fits

    def describe(self) -> str:
        s = self.shape
        split = f" (layers {','.join(map(str, s.num_layer_list))})" if s.num_layer_list else ""
        parts = [f"TP{s.tp}/PP{s.pp}" + (f"/CP{s.cp}" if s.cp > 1 else "") + f"/DP{s.dp}{split}",
                 f"MBS {s.micro_batch_size} x GA {s.ga}", f"recompute {s.recompute_label}"]
        if s.dp * s.cp > 1:
            parts.append("distributed optimizer" if s.distributed_optimizer else "no distributed optimizer")
        parts.append("LoRA" if s.finetune == "lora" else "full SFT")
        return ", ".join(parts)


def evaluate(shape: RunShape) -> Candidate:
    return Candidate(shape, estimate_shape(shape), throughput(shape))


def _recompute_options(base: RunShape, layers_per_stage: int) -> list[tuple[Optional[str], str, int]]:
    if not base.model_parallel:  # the native backend does not recompute
        return [(None, "uniform", 1)]
    options: list[tuple[Optional[str], str, int]] = [(None, "uniform", 1), ("full", "uniform", 1)]
    if layers_per_stage >= 2:
        options.append(("full", "block", layers_per_stage // 2))
    if not base.flash_attention:  # with flash attention, selective recompute saves nothing
        options.append(("selective", "uniform", 1))
    own = (base.recompute_granularity, base.recompute_method, base.recompute_num_layers)
    if own not in options:
        options.append(own)
    return options


def _micro_batches(base: RunShape, dp: int) -> list[int]:
    sizes, b = set(), 1
    while b <= base.micro_batch_size:
        sizes.add(b)
        b *= 2
    sizes.add(base.micro_batch_size)
    return sorted(m for m in sizes if base.global_batch_size % (m * dp) == 0)


def balanced_layer_list(shape: RunShape, pp: int) -> Optional[tuple[int, ...]]:
    """An uneven PP split that gives the last stage fewer layers for the output layer it also runs
    (the first stage, which holds the most micro batches in flight, gets no extra layers); None when
    the even split is already the balanced one."""
    a = shape.arch
    if pp < 2:
        return None
    layer = 2.0 * sum(i * o for i, o in linear_shapes(a).values()) + 2.0 * shape.seq_length * a.hidden_size
    output = 2.0 * shape.padded_vocab * a.hidden_size
    target = (a.num_layers + output / layer) / pp
    last = max(1, round(target - output / layer))
    rest = a.num_layers - last
    if rest < pp - 1:
        return None
    counts = [rest // (pp - 1)] * (pp - 1)
    for i in range(rest % (pp - 1)):
        counts[pp - 2 - i] += 1
    counts.append(last)
    return None if len(set(counts)) == 1 else tuple(counts)


def enumerate_shapes(base: RunShape, finetunes: Iterable[str] | None = None) -> Iterator[RunShape]:
    """Every validator-accepted variant of ``base`` on its hardware."""
    a, world = base.arch, base.world_size
    finetunes = tuple(finetunes or (base.finetune,))
    tps = [t for t in divisors(a.num_query_groups)
           if a.num_attention_heads % t == 0 and t <= base.devices_per_node and world % t == 0]
    pps = divisors(a.num_layers)
    if not base.model_parallel:
        tps, pps = [1], [1]
    for tp in tps:
        for pp in pps:
            mp = tp * pp * base.cp
            if world % mp:
                continue
            dp = world // mp
            splits = [base.num_layer_list if pp == base.pp else None]
            balanced = balanced_layer_list(base, pp)
            if balanced and balanced not in splits:
                splits.append(balanced)
            for split, mbs in ((sp, m) for sp in splits for m in _micro_batches(base, dp)):
                for granularity, method, n in _recompute_options(base, a.num_layers // pp):
                    for dist in ((True, False) if dp * base.cp > 1 else (base.distributed_optimizer,)):
                        for finetune in finetunes:
                            shape = base.replace(
                                tp=tp, pp=pp, sequence_parallel=tp > 1,
                                num_layer_list=split,
                                micro_batch_size=mbs,
                                grad_accum=None if base.grad_accum is None
                                else base.global_batch_size // (mbs * dp),
                                recompute_granularity=granularity, recompute_method=method,
                                recompute_num_layers=n, distributed_optimizer=dist, finetune=finetune)
                            if not layout_problems(shape):
                                yield shape


def rank(cands: list[Candidate]) -> list[Candidate]:
    """Best first (highest estimated tokens/s; less memory breaks ties), with relative throughput."""
    ordered = sorted(cands, key=lambda c: (-round(c.perf.tokens_per_second, 6), c.total_gb))
    if not ordered:
        return []
    best = ordered[0].perf.tokens_per_second
    return [Candidate(c.shape, c.memory, c.perf, c.perf.tokens_per_second / best) for c in ordered]


def feasible(base: RunShape, finetunes: Iterable[str] | None = None) -> list[Candidate]:
    """Candidates of ``base``'s hardware that fit its memory, best first."""
    return rank([c for c in map(evaluate, enumerate_shapes(base, finetunes)) if c.fits])


def lowest_memory(base: RunShape, finetunes: Iterable[str] | None = None) -> Optional[Candidate]:
    """The validator-accepted variant needing the least memory (whether it fits or not)."""
    cands = [evaluate(s) for s in enumerate_shapes(base, finetunes)]
    return min(cands, key=lambda c: c.total_gb) if cands else None


def pick_distinct(cands: list[Candidate], n: int) -> list[Candidate]:
    """The best ``n`` candidates, preferring distinct (TP, PP, method): the best variant of each layout
    first, then the next-best variants when there are fewer layouts than ``n``."""
    seen, out = set(), []
    for c in cands:
        key = (c.shape.tp, c.shape.pp, c.shape.finetune)
        if key not in seen:
            seen.add(key)
            out.append(c)
    out = out[:n]
    out += [c for c in cands if c not in out][: n - len(out)]
    return sorted(out, key=lambda c: -c.relative_throughput)


# ---- config groups ---------------------------------------------------------------------------------

def _conf_dir() -> Path:
    return Path(str(resources.files("navila_tune.conf")))


@functools.lru_cache(maxsize=None)
def _group(group: str) -> dict[str, dict[str, Any]]:
    """name -> plain dict of every YAML file of a config group (read directly, not composed)."""
    from omegaconf import OmegaConf

    out = {}
    for path in sorted((_conf_dir() / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        out[path.stem] = OmegaConf.to_container(node, resolve=False)  # type: ignore[assignment]
    return out


def hardware_groups(accelerator: str) -> list[dict[str, Any]]:
    """Hardware groups of one accelerator kind, fewest devices (then least memory) first."""
    from navila_tune.config.schema import HardwareConfig

    defaults = HardwareConfig()
    groups = []
    for name, g in _group("hardware").items():
        if g.get("accelerator") != accelerator:
            continue
        groups.append({
            "name": g.get("name", name),
            "memory_gb": float(g["memory_gb"]),
            "devices_per_node": int(g.get("devices_per_node", defaults.devices_per_node)),
            "nnodes": int(g.get("nnodes", defaults.nnodes)),
            "memory_margin": float(g.get("memory_margin", defaults.memory_margin)),
            "reserve_gb": float(g.get("reserve_gb", defaults.reserve_gb)),
            "chip": str(g.get("chip", "?")),
        })
    return sorted(groups, key=lambda g: (g["devices_per_node"] * g["nnodes"], g["memory_gb"]))


def on_hardware(base: RunShape, hw: dict[str, Any]) -> RunShape:
    return base.replace(world_size=hw["devices_per_node"] * hw["nnodes"], devices_per_node=hw["devices_per_node"],
                        memory_gb=hw["memory_gb"], memory_margin=hw["memory_margin"], reserve_gb=hw["reserve_gb"],
                        hardware_name=hw["name"], chip=hw["chip"])


def smallest_hardware(base: RunShape) -> Optional[Candidate]:
    """The best layout on the smallest hardware group (other than the current) where the run fits."""
    for hw in hardware_groups(base.accelerator):
        if hw["name"] == base.hardware_name:
            continue
        found = feasible(on_hardware(base, hw))
        if found:
            return found[0]
    return None


def _optim_finetune(name: str, seen: tuple[str, ...] = ()) -> Optional[str]:
    g = _group("optim").get(name)
    if g is None or name in seen:
        return None
    if "finetune" in g:
        return g["finetune"]
    for d in g.get("defaults", []):
        if isinstance(d, str) and d in _group("optim"):
            return _optim_finetune(d, seen + (name,))
    return "full"  # the schema default


def experiments_for(model: str, hardware: str, finetune: str) -> list[str]:
    """Shipped experiments that train ``model`` on ``hardware`` with ``finetune``."""
    names = []
    for name, g in _group("experiment").items():
        picks: dict[str, str] = {}
        for d in g.get("defaults", []):
            if isinstance(d, dict):
                for k, v in d.items():
                    picks[k.replace("override ", "").strip().lstrip("/")] = v
        if picks.get("model") == model and picks.get("hardware") == hardware \
                and _optim_finetune(picks.get("optim", "")) == finetune:
            names.append(name)
    return names


def _parallelism_group(tp: int, pp: int, cp: int) -> Optional[str]:
    for name, g in _group("parallelism").items():
        if (g.get("tp", 1), g.get("pp", 1), g.get("cp", 1)) == (tp, pp, cp) and not g.get("num_layer_list") \
                and bool(g.get("sequence_parallel", False)) == (tp > 1):
            return name
    return None


def _lora_optim_group() -> Optional[str]:
    return next((n for n in _group("optim") if _optim_finetune(n) == "lora"), None)


def overrides(cfg: Any, shape: RunShape, hardware: Optional[str] = None) -> list[str]:
    """Hydra overrides that turn ``cfg`` into ``shape`` (checked by composing them in the tests)."""
    par, optim = cfg.parallelism, cfg.optim
    out = []
    if hardware and hardware != cfg.hardware.name:
        out.append(f"hardware={hardware}")
    layout_changed = shape.model_parallel and ((shape.tp, shape.pp, shape.cp) != (par.tp, par.pp, par.cp)
                                               or shape.sp != (bool(par.sequence_parallel) and par.tp > 1))
    if layout_changed:
        group = _parallelism_group(shape.tp, shape.pp, shape.cp)
        if group:
            out.append(f"parallelism={group}")
        else:
            out += [f"parallelism.tp={shape.tp}", f"parallelism.pp={shape.pp}",
                    f"parallelism.sequence_parallel={str(shape.tp > 1).lower()}"]
    if shape.model_parallel and (tuple(par.num_layer_list) if par.num_layer_list else None) != shape.num_layer_list:
        nll = "null" if not shape.num_layer_list else "[" + ",".join(map(str, shape.num_layer_list)) + "]"
        out.append(f"parallelism.num_layer_list={nll}")
    if shape.model_parallel and bool(par.distributed_optimizer) != shape.distributed_optimizer:
        out.append(f"parallelism.distributed_optimizer={str(shape.distributed_optimizer).lower()}")
    rc = par.recompute
    if shape.recompute_granularity is None:
        if rc.granularity is not None:
            out.append("parallelism.recompute.granularity=null")
    else:
        if rc.granularity != shape.recompute_granularity:
            out.append(f"parallelism.recompute.granularity={shape.recompute_granularity}")
        if shape.recompute_granularity == "full":
            if (rc.method or "uniform") != shape.recompute_method:
                out.append(f"parallelism.recompute.method={shape.recompute_method}")
            if (rc.num_layers or 1) != shape.recompute_num_layers:
                out.append(f"parallelism.recompute.num_layers={shape.recompute_num_layers}")
    method_changed = shape.finetune != optim.finetune
    if method_changed:
        group = _lora_optim_group() if shape.finetune == "lora" else None
        out.append(f"optim={group}" if group else f"optim.finetune={shape.finetune}")
    if method_changed or shape.micro_batch_size != optim.micro_batch_size:
        out.append(f"optim.micro_batch_size={shape.micro_batch_size}")
    if method_changed:
        out.append(f"optim.global_batch_size={shape.global_batch_size}")
    if shape.grad_accum is not None and shape.grad_accum != optim.grad_accum:
        out.append(f"optim.grad_accum={shape.grad_accum}")
    return out
