"""What validation and ``plan=true`` show: the memory problem with its fixes, and the plan report."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from navila_tune.planner import layouts
from navila_tune.planner.layouts import Candidate
from navila_tune.planner.memory import MemoryBreakdown, estimate_shape
from navila_tune.planner.params import total_params
from navila_tune.planner.shape import RunShape, layout_problems

N_ALTERNATIVES = 3
PLAN_ROWS = 15


class MemoryProblem(NamedTuple):
    """Same fields as navila_tune.validate.Problem: ``Problem(*p)``."""

    key: str
    value: Any
    message: str
    fix: str


def _method(finetune: str) -> str:
    return "LoRA" if finetune == "lora" else "full SFT"


def _hw(shape: RunShape) -> str:
    n = shape.world_size
    return f"{shape.hardware_name} ({n} x {shape.chip}, {shape.memory_gb:g} GB, {shape.usable_gb:.1f} GB usable)"


def _run(shape: RunShape) -> str:
    batch = f"GBS {shape.global_batch_size} = MBS {shape.micro_batch_size} x GA {shape.ga} x DP {shape.dp}" \
        if shape.dp >= 1 else f"GBS {shape.global_batch_size}, MBS {shape.micro_batch_size}"
    return f"{_method(shape.finetune)}, {shape.precision}, seq {shape.seq_length}, {batch}"


def _suggestion(cfg: Any, c: Candidate, hardware: Optional[str] = None, shown: Optional[set] = None) -> str:
    ov = " ".join(layouts.overrides(cfg, c.shape, hardware=hardware))
    line = f"{c.describe()}: {c.total_gb:.1f} GB, relative throughput {c.relative_throughput:.2f}"
    line += f"\n             overrides: {ov}" if ov else ""
    if c.shape.finetune != cfg.optim.finetune:
        exps = [e for e in layouts.experiments_for(cfg.model.name, c.shape.hardware_name, c.shape.finetune)
                if shown is None or e not in shown]
        if shown is not None:
            shown.update(exps)
        if exps:
            line += "\n             or the shipped experiment: " + ", ".join(f"+experiment={e}" for e in exps)
    return line


CHANGE_KEYS = ("tp", "pp", "cp", "num_layer_list", "micro_batch_size", "recompute_granularity", "recompute_method",
               "recompute_num_layers", "distributed_optimizer", "finetune")


def _changes(a: RunShape, b: RunShape) -> int:
    return sum(getattr(a, k) != getattr(b, k) for k in CHANGE_KEYS)


def alternatives(cfg: Any, shape: RunShape) -> list[Candidate]:
    """The cheapest feasible alternatives on the same hardware: highest estimated throughput first (ties:
    fewest changes to the configured run); the configured fine-tuning method first, then LoRA."""
    def order(cands: list[Candidate]) -> list[Candidate]:
        return sorted(cands, key=lambda c: (-round(c.relative_throughput, 2), _changes(c.shape, shape)))

    same = order(layouts.pick_distinct(layouts.feasible(shape), N_ALTERNATIVES))
    if len(same) < N_ALTERNATIVES and shape.finetune == "full":
        other = layouts.pick_distinct(layouts.feasible(shape, finetunes=("lora",)), N_ALTERNATIVES - len(same))
        same += order(other)
    return same


def check_fits(cfg: Any) -> list[MemoryProblem]:
    """[] when the run fits the device memory (or allow_oom_risk=true); else one problem with the breakdown
    and fixes. A layout the validator rejects anyway is only reported here when no layout of the run
    fits this hardware at all."""
    if cfg.get("allow_oom_risk", False):
        return []
    problem = memory_problem(cfg, RunShape.from_config(cfg))
    return [problem] if problem else []


def memory_problem(cfg: Any, shape: RunShape) -> Optional[MemoryProblem]:
    """The memory problem of ``shape`` (built from ``cfg``), or None when it fits."""
    invalid = layout_problems(shape)
    breakdown: Optional[MemoryBreakdown] = None
    if not invalid:
        breakdown = estimate_shape(shape)
        if breakdown.fits:
            return None
    same_method = layouts.feasible(shape)
    if invalid and same_method:
        return None  # the layout problems are reported by validation, with their own fix
    usable = shape.usable_gb
    where = f"{shape.hardware_name} ({shape.memory_gb:g} GB per device - {shape.memory_margin:.0%} margin " \
            f"= {usable:.1f} GB usable)"
    if breakdown is not None:
        w = breakdown.worst
        stage = f"stage {w.stage} of " if shape.pp > 1 else ""
        message = (f"estimated peak memory {breakdown.total_gb:.1f} GB per device (worst rank: {stage}"
                   f"TP{shape.tp}/PP{shape.pp}/DP{shape.dp}, {_run(shape)}, recompute {shape.recompute_label}) "
                   f"exceeds the {where}: {breakdown.summary()}")
    else:
        low = layouts.lowest_memory(shape)
        need = f"at least {low.total_gb:.1f} GB per device ({low.describe()}: {low.memory.summary()})" \
            if low else "more devices than it has"
        message = (f"{_method(shape.finetune)} of this model cannot fit {where} with any layout: it needs {need}; "
                   f"the configured TP{shape.tp}/PP{shape.pp}/CP{shape.cp} does not fit the "
                   f"{shape.world_size} device(s) either")
    fixes = []
    alts = alternatives(cfg, shape)
    if alts:
        fixes.append(f"cheapest feasible alternatives on {shape.hardware_name}:")
        shown: set = set()
        fixes += [f"  {i}. {_suggestion(cfg, c, shown=shown)}" for i, c in enumerate(alts, 1)]
    if not same_method:
        bigger = layouts.smallest_hardware(shape)
        if bigger is not None:
            s = bigger.shape
            fixes.append(f"for {_method(shape.finetune)}, the smallest hardware group that fits is {s.hardware_name} "
                         f"({s.world_size} devices):")
            fixes.append(f"  {_suggestion(cfg, bigger, hardware=s.hardware_name)}")
        else:
            fixes.append(f"no hardware group in conf/hardware fits {_method(shape.finetune)} of this model")
    fixes.append("or set allow_oom_risk=true to launch anyway")
    return MemoryProblem("hardware.memory_gb", shape.memory_gb, message, "\n        ".join(fixes))


def _table(cands: list[Candidate], current: Optional[RunShape] = None) -> list[str]:
    head = (f"  {'#':>2} {'TP':>2} {'PP':>2} {'DP':>2} {'MBS':>3} {'GA':>4} {'recompute':<14} {'dist-opt':<8} "
            f"{'mem GB':>7} {'rel thr':>7} {'bubble':>6} {'TP comm':>7} {'recomp':>6}  layers/stage")
    rows = [head]
    for i, c in enumerate(cands, 1):
        s = c.shape
        mark = " <- configured" if current is not None and _same_layout(s, current) else ""
        rows.append(f"  {i:>2} {s.tp:>2} {s.pp:>2} {s.dp:>2} {s.micro_batch_size:>3} {s.ga:>4} "
                    f"{s.recompute_label:<14} {'yes' if s.distributed_optimizer else 'no':<8} "
                    f"{c.total_gb:>7.1f} {c.relative_throughput:>7.2f} {c.perf.bubble:>6.1%} "
                    f"{c.perf.tp_comm:>7.1%} {c.perf.recompute:>6.1%}  "
                    f"{','.join(map(str, s.stage_layers)) if s.pp > 1 else '-'}{mark}")
    return rows


def _same_layout(a: RunShape, b: RunShape) -> bool:
    keys = ("tp", "pp", "cp", "micro_batch_size", "recompute_granularity", "distributed_optimizer", "finetune",
            "num_layer_list")
    same = all(getattr(a, k) == getattr(b, k) for k in keys)
    if same and a.recompute_granularity == "full":
        same = (a.recompute_method, a.recompute_num_layers) == (b.recompute_method, b.recompute_num_layers)
    return same


def candidates(cfg: Any) -> list[Candidate]:
    """Feasible layouts of the configured run on its hardware, best first."""
    return layouts.feasible(RunShape.from_config(cfg))


def render_plan(cfg: Any) -> str:
    """The ``plan=true`` report: breakdown of the configured run and the candidate layouts."""
    shape = RunShape.from_config(cfg)
    a = shape.arch
    lines = [
        f"Memory plan: {shape.labels.get('experiment', '?')} on {_hw(shape)}",
        f"  model: {a.num_layers} layers, hidden {a.hidden_size}, {total_params(a):,} parameters "
        f"(padded vocab {shape.padded_vocab})",
        f"  run: {_run(shape)}",
        f"  layout: TP{shape.tp} PP{shape.pp} CP{shape.cp} DP{shape.dp if shape.dp >= 1 else '-'}, sequence parallel "
        f"{'on' if shape.sp else 'off'}, distributed optimizer {'on' if shape.distributed_optimizer else 'off'}, "
        f"recompute {shape.recompute_label}",
        "",
    ]
    invalid = layout_problems(shape)
    if invalid:
        lines.append("  the configured layout is not valid here: " + "; ".join(invalid))
    else:
        lines.append("Per-rank peak memory (worst rank):")
        lines.append(estimate_shape(shape).table())
    lines.append("")
    feasible = layouts.feasible(shape)
    lines.append(f"Candidate layouts on {shape.hardware_name} ({_method(shape.finetune)}, GBS "
                 f"{shape.global_batch_size}, seq {shape.seq_length}), best first:")
    if feasible:
        lines += _table(feasible[:PLAN_ROWS], current=shape)
        if len(feasible) > PLAN_ROWS:
            lines.append(f"  ... {len(feasible) - PLAN_ROWS} more feasible variants not shown")
        if not invalid and not any(_same_layout(c.shape, shape) for c in feasible[:PLAN_ROWS]):
            mine = layouts.evaluate(shape)
            best = feasible[0].perf.tokens_per_second
            lines.append(f"  configured: {mine.total_gb:.1f} GB, relative throughput "
                         f"{mine.perf.tokens_per_second / best:.2f}"
                         + ("" if mine.fits else " (does not fit)"))
    else:
        lines.append(f"  none: {_method(shape.finetune)} does not fit any layout of {shape.hardware_name}")
        problem = memory_problem(cfg, shape)
        if problem:
            lines.append("  " + problem.fix.replace("\n", "\n  "))
    lines.append("  (relative throughput: pipeline bubble, TP communication and recompute overhead on the "
                 "assumed chip speed; see docs/memory_planner.md)")
    return "\n".join(lines)

