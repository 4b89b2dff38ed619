"""Whole-config validation: every problem is collected and reported at once, each with key, value, fix."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from omegaconf import OmegaConf

from navila_tune.config.schema import STAGES
from navila_tune.layout import Layout, arch_of, layout_of

FAMILIES = ("llama3",)
PROMPT_TYPES = ("llama3",)
HANDLERS = ("AlpacaStyleInstructionHandler",)
LORA_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
PRECISIONS = ("bf16", "fp16", "fp32")
LR_DECAY_STYLES = ("constant", "linear", "cosine")
OVERLONG = ("mindspeed", "truncate", "fail")
SOURCE_FORMATS = ("hf", "vila")
ACCELERATORS = ("npu", "cuda", "cpu")
BACKEND_STAGES = {
    "mindspeed": ("convert", "preprocess", "train", "generate", "export"),
    "native": STAGES,
}


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key} = {_show(self.value)}: {self.message}\n    fix: {self.fix}"


class ConfigError(ValueError):
    """Raised with every problem found; ``problems`` keeps them for tools and tests."""

    def __init__(self, problems: list[Problem], what: str = "config"):
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"{len(problems)} {noun} in the {what}:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


def _show(value: Any) -> str:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return json.dumps(value) if isinstance(value, (list, dict, str)) else str(value)


Check = Callable[[Any, Layout], Iterable[Problem]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def validate(cfg: Any, extra_checks: Iterable[Check] = ()) -> Layout:
    """Check the resolved config; raise ConfigError listing every problem. Returns the derived layout."""
    problems = list(_schema_conformance(cfg))
    if problems:  # unknown keys make the other checks unreliable
        raise ConfigError(problems)
    layout = layout_of(cfg)
    for fn in [*CHECKS, *extra_checks]:
        problems.extend(fn(cfg, layout))
    if problems:
        raise ConfigError(problems)
    return layout


def _schema_conformance(cfg: Any) -> Iterable[Problem]:
    """Keys added with ``+key=value`` bypass the schema; report them instead of ignoring them."""

    def walk(node: Any, prefix: str) -> Iterable[Problem]:
        schema = OmegaConf.get_type(node)
        if not dataclasses.is_dataclass(schema):
            return
        known = {f.name for f in dataclasses.fields(schema)}
        for key in node:
            path = f"{prefix}{key}"
            if key not in known:
                if "tp" in str(key) or "pp" in str(key):
                    hint = "conversion and inference layouts are derived from parallelism.tp/pp; " \
                        "there is no separate knob"
                else:
                    hint = f"known keys here: {', '.join(sorted(known))}"
                yield Problem(path, node._get_node(key)._value(), "unknown key", f"remove it ({hint})")
            elif OmegaConf.is_dict(node._get_node(key)):
                yield from walk(node._get_node(key), f"{path}.")

    yield from walk(cfg, "")


@check
def _choices(cfg: Any, layout: Layout) -> Iterable[Problem]:
    for key, allowed in [
        ("model.family", FAMILIES),
        ("model.prompt_type", PROMPT_TYPES),
        ("model.params_dtype", PRECISIONS),
        ("data.handler", HANDLERS),
        ("data.overlong", OVERLONG),
        ("optim.precision", PRECISIONS),
        ("optim.lr_decay_style", LR_DECAY_STYLES),
        ("optim.finetune", ("full", "lora")),
        ("hardware.accelerator", ACCELERATORS),
        ("backend.name", tuple(BACKEND_STAGES)),
        ("backend.native.device", ("cpu", "cuda")),
        ("cluster.mode", ("local", "sbatch")),
    ]:
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            yield Problem(key, value, "unknown value", f"use one of: {', '.join(allowed)}")


@check
def _stages(cfg: Any, layout: Layout) -> Iterable[Problem]:
    stages = list(cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        yield Problem("stages", stages, f"unknown stage(s) {unknown}", f"stages are, in order: {list(STAGES)}")
        return
    if len(set(stages)) != len(stages) or stages != sorted(stages, key=STAGES.index):
        ordered = [s for s in STAGES if s in stages]
        yield Problem("stages", stages, "stages must be unique and in pipeline order", f"stages={ordered}")
    supported = BACKEND_STAGES.get(cfg.backend.name, STAGES)
    for s in stages:
        if s not in supported:
            yield Problem("stages", stages, f"backend {cfg.backend.name} has no {s} stage",
                          f"drop {s}, or run it with backend=native")
    for s in cfg.force:
        if s not in STAGES:
            yield Problem("force", list(cfg.force), f"unknown stage {s}", f"force takes stage names: {list(STAGES)}")


@check
def _world(cfg: Any, layout: Layout) -> Iterable[Problem]:
    hw = cfg.hardware
    if layout.model_parallel and not layout.dp_is_integral:
        mp = layout.model_parallel_size
        yield Problem(
            "parallelism", cfg.parallelism.name,
            f"world size {layout.world_size} (hardware {hw.name}: {hw.nnodes} node(s) x {hw.devices_per_node} "
            f"device(s)) cannot hold TP x PP x CP = {layout.tp} x {layout.pp} x {layout.cp} = {mp}; "
            f"the world size must be a multiple of it",
            f"use a hardware group with a multiple of {mp} devices, or a smaller layout "
            f"(e.g. parallelism=tp1_pp1)",
        )


@check
def _batch(cfg: Any, layout: Layout) -> Iterable[Problem]:
    o = cfg.optim
    if not layout.dp_is_integral and layout.model_parallel:
        return  # reported by _world
    dp = layout.dp
    per_step = o.micro_batch_size * dp
    if o.micro_batch_size < 1 or o.global_batch_size < 1:
        yield Problem("optim.micro_batch_size", o.micro_batch_size, "batch sizes must be positive",
                      "set optim.micro_batch_size and optim.global_batch_size >= 1")
        return
    if o.grad_accum is not None:
        if o.micro_batch_size * o.grad_accum * dp != o.global_batch_size:
            yield Problem(
                "optim.global_batch_size", o.global_batch_size,
                f"micro_batch_size {o.micro_batch_size} x grad_accum {o.grad_accum} x data-parallel {dp} = "
                f"{o.micro_batch_size * o.grad_accum * dp}, not {o.global_batch_size}",
                f"set optim.global_batch_size={o.micro_batch_size * o.grad_accum * dp}, or remove "
                f"optim.grad_accum so it is derived as global / (micro x DP)",
            )
    elif o.global_batch_size % per_step:
        yield Problem(
            "optim.global_batch_size", o.global_batch_size,
            f"not divisible by micro_batch_size x data-parallel = {o.micro_batch_size} x {dp} = {per_step}",
            f"use a multiple of {per_step}, e.g. {per_step * max(1, o.global_batch_size // per_step)}",
        )


@check
def _tensor_parallel(cfg: Any, layout: Layout) -> Iterable[Problem]:
    a = cfg.model.arch
    for key in ("num_attention_heads", "num_query_groups"):
        value = a[key]
        if value % layout.tp:
            divisors = [d for d in range(1, value + 1) if value % d == 0 and a.num_attention_heads % d == 0]
            yield Problem(
                "parallelism.tp", layout.tp, f"does not divide model.arch.{key} = {value}",
                f"use a TP that divides both heads and query groups: {divisors}",
            )
    if a.hidden_size % a.num_attention_heads:
        yield Problem("model.arch.hidden_size", a.hidden_size,
                      f"not divisible by num_attention_heads {a.num_attention_heads}", "fix the architecture")
    if a.num_attention_heads % a.num_query_groups:
        yield Problem("model.arch.num_query_groups", a.num_query_groups,
                      f"does not divide num_attention_heads {a.num_attention_heads}", "fix the architecture")
    if cfg.parallelism.cp < 1 or layout.pp < 1 or layout.tp < 1:
        yield Problem("parallelism", cfg.parallelism.name, "tp, pp and cp must be >= 1", "fix the parallelism group")


@check
def _pipeline(cfg: Any, layout: Layout) -> Iterable[Problem]:
    layers = cfg.model.arch.num_layers
    nll = cfg.parallelism.num_layer_list
    if nll:
        nll = list(nll)
        if layout.pp < 2:
            yield Problem("parallelism.num_layer_list", nll, "needs pipeline parallelism (pp > 1)",
                          "remove num_layer_list or raise parallelism.pp")
        if len(nll) != layout.pp:
            yield Problem("parallelism.num_layer_list", nll, f"has {len(nll)} entries for pp = {layout.pp}",
                          f"give exactly {layout.pp} layer counts")
        elif sum(nll) != layers or min(nll) < 1:
            yield Problem("parallelism.num_layer_list", nll,
                          f"sums to {sum(nll)} but the model has {layers} layers (each entry >= 1)",
                          f"make the {layout.pp} entries sum to {layers}")
    elif layers % layout.pp:
        yield Problem("parallelism.pp", layout.pp, f"does not divide model.arch.num_layers = {layers}",
                      f"use a PP dividing {layers}, or set parallelism.num_layer_list with {layout.pp} entries")


@check
def _sequence(cfg: Any, layout: Layout) -> Iterable[Problem]:
    seq, maxpos = cfg.data.seq_length, cfg.model.arch.max_position_embeddings
    if seq > maxpos:
        yield Problem("data.seq_length", seq, f"exceeds model.arch.max_position_embeddings = {maxpos}",
                      f"use data.seq_length <= {maxpos}")
    if cfg.data.neat_pack and not cfg.data.pack:
        yield Problem("data.neat_pack", True, "neat-pack is a packing variant and needs data.pack=true",
                      "set data.pack=true, or data.neat_pack=false")
    if cfg.data.pack and cfg.data.seq_length % cfg.data.pad_to_multiple_of:
        yield Problem("data.pad_to_multiple_of", cfg.data.pad_to_multiple_of,
                      f"packed rows are seq_length = {seq} long, which is not a multiple of it",
                      "set data.pad_to_multiple_of to a divisor of data.seq_length")
    if cfg.data.workers < 1:
        yield Problem("data.workers", cfg.data.workers, "must be >= 1", "set data.workers=1 or more")


@check
def _hardware_backend(cfg: Any, layout: Layout) -> Iterable[Problem]:
    backend, acc = cfg.backend.name, cfg.hardware.accelerator
    if backend == "mindspeed" and acc != "npu":
        yield Problem("backend", backend, f"MindSpeed-LLM runs on Ascend NPUs, but hardware {cfg.hardware.name} "
                      f"is accelerator={acc}", "use backend=native here, or an NPU hardware group (910b_x8)")
    if backend == "native":
        device = cfg.backend.native.device
        if acc == "npu":
            yield Problem("backend", backend, f"the native backend runs on cpu or cuda, not on {cfg.hardware.name}",
                          "use backend=mindspeed on NPUs, or hardware=cpu")
        elif device != acc:
            yield Problem("backend.native.device", device, f"hardware {cfg.hardware.name} is accelerator={acc}",
                          f"set backend.native.device={acc}")
        if layout.world_size < 1:
            yield Problem("hardware.devices_per_node", cfg.hardware.devices_per_node, "must be >= 1", "set it to 1+")


@check
def _optim(cfg: Any, layout: Layout) -> Iterable[Problem]:
    o = cfg.optim
    if o.finetune == "lora":
        bad = [t for t in o.lora.targets if t not in LORA_TARGETS]
        if bad or not o.lora.targets:
            yield Problem("optim.lora.targets", list(o.lora.targets), f"unknown LoRA target(s) {bad}" if bad
                          else "no LoRA targets", f"use a subset of {list(LORA_TARGETS)}")
        if o.lora.r < 1 or o.lora.alpha < 1:
            yield Problem("optim.lora.r", o.lora.r, "LoRA rank and alpha must be >= 1", "e.g. r=16, alpha=32")
    if o.train_iters < 1:
        yield Problem("optim.train_iters", o.train_iters, "must be >= 1", "set optim.train_iters")
    if not 0.0 <= o.warmup_ratio < 1.0:
        yield Problem("optim.warmup_ratio", o.warmup_ratio, "must be in [0, 1)", "e.g. optim.warmup_ratio=0.03")
    if o.min_lr > o.lr:
        yield Problem("optim.min_lr", o.min_lr, f"is above optim.lr = {o.lr}", "set min_lr <= lr")
    for key in ("log_interval", "eval_interval", "save_interval", "eval_iters"):
        if o[key] < 1:
            yield Problem(f"optim.{key}", o[key], "must be >= 1", f"set optim.{key} to 1 or more")
    if cfg.backend.name == "mindspeed" and o.precision == "fp32":
        yield Problem("optim.precision", o.precision, "MindSpeed-LLM recipes for Llama-3 train in bf16",
                      "set optim.precision=bf16")


@check
def _generate(cfg: Any, layout: Layout) -> Iterable[Problem]:
    g = cfg.generate
    if "generate" in cfg.stages and not g.prompts and not cfg.data.eval_input:
        yield Problem("generate.prompts", [], "no prompts, and no data.eval_input to take them from",
                      "set generate.prompts=[...] or data.eval_input")
    if g.temperature < 0 or not 0 < g.top_p <= 1 or g.top_k < 0 or g.max_new_tokens < 1:
        yield Problem("generate", OmegaConf.to_container(g), "temperature >= 0, 0 < top_p <= 1, top_k >= 0 and "
                      "max_new_tokens >= 1 are required", "fix the generate section")
    if cfg.backend.name == "mindspeed" and any("\n" in p for p in g.prompts):
        yield Problem("generate.prompts", list(g.prompts), "MindSpeed's chat task reads one prompt per line",
                      "put each prompt on one line")


@check
def _handoff(cfg: Any, layout: Layout) -> Iterable[Problem]:
    """The VILA source (one fact: model.vila_dir; hf_dir derived from it) and the export's NaVILA settings."""
    m, e = cfg.model, cfg.export
    if m.source_format not in SOURCE_FORMATS:
        yield Problem("model.source_format", m.source_format, "unknown value",
                      f"use one of: {', '.join(SOURCE_FORMATS)}")
    elif m.source_format == "vila":
        if not m.vila_dir:
            yield Problem("model.vila_dir", m.vila_dir, "model.source_format=vila needs the VILA checkpoint",
                          "set model.vila_dir to the NaVILA/VILA checkpoint (config.json, llm/, vision_tower/, "
                          "mm_projector/)")
        elif Path(m.hf_dir) != Path(m.vila_dir) / "llm":
            yield Problem("model.hf_dir", m.hf_dir, f"a VILA source fine-tunes {m.vila_dir}/llm, not another folder",
                          "set model.hf_dir=${model.vila_dir}/llm (derived; do not point it elsewhere)")
    elif m.vila_dir:
        yield Problem("model.vila_dir", m.vila_dir, "set, but model.source_format is hf",
                      "set model.source_format=vila to fine-tune its llm/, or remove model.vila_dir")
    if e.vila and m.source_format != "vila":
        yield Problem("export.vila", True, "a VILA checkpoint is spliced from the source's vision tower and projector, "
                      "and model.source_format is not vila", "set model.source_format=vila and model.vila_dir, or "
                      "export.vila=false")
    if e.check_samples < 1 or e.check_max_tokens < 2:
        yield Problem("export.check_samples", e.check_samples, "check_samples >= 1 and check_max_tokens >= 2 are "
                      "required", "e.g. export.check_samples=4 export.check_max_tokens=512")
    bad = [d for d in e.check_dtypes if d not in PRECISIONS]
    if bad or not e.check_dtypes:
        yield Problem("export.check_dtypes", list(e.check_dtypes), f"unknown dtype(s) {bad}" if bad else "empty",
                      f"use a subset of {list(PRECISIONS)} (NaVILA trains in bf16 and evaluates in fp16)")
    if "export" in cfg.stages:
        from navila_tune.handoff.facts import forbidden_substrings

        work = str(Path(cfg.paths.work_dir).expanduser().resolve())
        hits = forbidden_substrings(work)
        if hits:
            yield Problem("paths.work_dir", cfg.paths.work_dir, f"contains {hits}; the export lands under it, and "
                          "NaVILA picks its model class by substrings of the path (mpt/mistral/mixtral/gemma)",
                          "use a work dir whose path contains none of them")


def check_inputs(cfg: Any) -> None:
    """Run-time checks of the files a run reads (not done in dry run)."""
    problems: list[Problem] = []
    hf_dir = Path(cfg.model.hf_dir)
    config_json = hf_dir / "config.json"
    if not config_json.is_file():
        problems.append(Problem("model.hf_dir", str(hf_dir), "no config.json there",
                                "point model.hf_dir at an HF Llama directory (config.json, *.safetensors)"))
    else:
        from navila_tune.arch import LlamaArch

        try:
            source = LlamaArch.from_hf_config(json.loads(config_json.read_text()))
        except (KeyError, ValueError) as e:
            problems.append(Problem("model.hf_dir", str(config_json), f"not a Llama config: {e}",
                                    "use an HF LlamaForCausalLM directory"))
        else:
            for name, configured, found in arch_of(cfg).mismatches(source):
                problems.append(Problem(f"model.arch.{name}", configured, f"{config_json} says {found}",
                                        f"set model.arch.{name}={found}, or use the model this group describes"))
        if cfg.model.init_seed is None and not any(hf_dir.glob("*.safetensors")):
            problems.append(Problem("model.hf_dir", str(hf_dir), "holds no *.safetensors weights",
                                    "download/convert the weights there, or set model.init_seed to start random"))
    if "preprocess" in cfg.stages:
        for key in ("data.input", "data.eval_input"):
            path = OmegaConf.select(cfg, key)
            if path is not None:
                problems.extend(_check_data_file(key, Path(path), cfg.data.map_keys))
    tok = Path(cfg.model.tokenizer_dir)
    if not (tok / "tokenizer.json").is_file() and not (tok / "tokenizer_config.json").is_file():
        problems.append(Problem("model.tokenizer_dir", str(tok), "no tokenizer.json or tokenizer_config.json there",
                                "point model.tokenizer_dir at the HF tokenizer directory"))
    problems.extend(_check_handoff_inputs(cfg))
    if problems:
        raise ConfigError(problems, what="inputs")


def _check_handoff_inputs(cfg: Any) -> list[Problem]:
    from navila_tune.handoff.vila import layout_problems

    problems = []
    if cfg.model.source_format == "vila" and cfg.model.vila_dir:
        problems += [Problem("model.vila_dir", cfg.model.vila_dir, why, "point model.vila_dir at a NaVILA/VILA "
                             "checkpoint (config.json, llm/, vision_tower/, mm_projector/)")
                     for why in layout_problems(cfg.model.vila_dir)]
    py = cfg.export.navila_python
    if py and "export" in cfg.stages and not Path(py).is_file():
        problems.append(Problem("export.navila_python", py, "no such file", "create the pinned environment with "
                                "scripts/make_navila_env.sh and give its bin/python, or remove the key"))
    return problems


def _check_data_file(key: str, path: Path, map_keys: Any) -> list[Problem]:
    if not path.exists():
        return [Problem(key, str(path), "no such file or folder (hub names are never downloaded)",
                        f"point {key} at a local parquet/json/jsonl/csv/arrow file or folder")]
    columns = _columns(path)
    if columns is None:
        return []
    wanted = {k: v for k, v in OmegaConf.to_container(map_keys).items() if v}
    missing = {k: v for k, v in wanted.items() if v not in columns}
    return [Problem(f"data.map_keys.{k}", v, f"column not in {path} (columns: {sorted(columns)})",
                    f"map {k} to one of the existing columns") for k, v in missing.items()]


def _columns(path: Path) -> set[str] | None:
    """Column names of a parquet file (or the first parquet file in a folder); None when not knowable cheaply."""
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    if not files or files[0].suffix != ".parquet":
        return None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    return set(pq.read_schema(files[0]).names)
