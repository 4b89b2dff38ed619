"""Megatron (MindSpeed-LLM 2.3.0, legacy ``torch`` format) checkpoint directories: layout, args, reading.

```
<root>/latest_checkpointed_iteration.txt      the iteration as text, no newline ("1" after hf->mg)
<root>/iter_0000001/mp_rank_TT[_PPP]/model_optim_rng.pt
```
Each rank file is a ``torch.save`` dict: ``args`` (argparse.Namespace), ``checkpoint_version`` (3.0),
``iteration``, ``model`` (mcore state dict of that rank), ``rerun_state_machine``,
``num_floating_point_operations_so_far`` (and, from training, optimizer/scheduler/rng keys).
"""

from __future__ import annotations

import argparse
import copy
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from navila_tune.arch import LlamaArch
from navila_tune.convert.errors import ConversionError
from navila_tune.convert.parallel import ParallelLayout, parse_num_layer_list, rank_dir_name
from navila_tune.convert.sources import TensorSource
from navila_tune.convert.torch_zip import LazyTensor, MissingClass, TorchFileReader
from navila_tune.convert.weights import EXTRA_STATE_SUFFIX, Entry

TRACKER = "latest_checkpointed_iteration.txt"
RANK_FILE = "model_optim_rng.pt"
CHECKPOINT_VERSION = 3.0
# Top-level keys every rank file gets from the writer itself (``extra`` may not replace them).
RESERVED_KEYS = ("args", "checkpoint_version", "iteration", "model")
# What Megatron's RerunStateMachine.load_state_dict treats as "disabled" (RerunMode is a str Enum),
# without pickling a megatron class into the file.
DEFAULT_RERUN_STATE: dict[str, Any] = {"mode": "disabled"}

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def parse_dtype(name: str) -> torch.dtype:
    key = _DTYPE_ALIASES.get(name, name)
    if key not in DTYPES:
        raise ConversionError(f"dtype {name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    for name, d in DTYPES.items():
        if d == dtype:
            return name
    raise ConversionError(f"tensor dtype {dtype} is not one of {sorted(DTYPES)} (bf16, fp16, fp32)")


def iteration_dir_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def read_tracker(root: Path) -> int | None:
    path = root / TRACKER
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if text == "release":
        raise ConversionError(f"{path} says 'release': release checkpoints are not supported; re-save the "
                              f"checkpoint with an iteration number")
    try:
        return int(text)
    except ValueError:
        raise ConversionError(f"{path} holds {text!r}, not an iteration number") from None


def iterations_on_disk(root: Path) -> list[int]:
    out = []
    for p in root.glob("iter_*"):
        m = re.fullmatch(r"iter_(\d{7,})", p.name)
        if m and p.is_dir():
            out.append(int(m.group(1)))
    return sorted(out)


def build_args(arch: LlamaArch, layout: ParallelLayout, padded_vocab: int, dtype: torch.dtype, *,
               make_vocab_size_divisible_by: int, iteration: int,
               overrides: dict[str, Any] | None = None) -> argparse.Namespace:
    """The ``args`` Namespace of a rank file: what MindSpeed/Megatron read back (reference 3a)."""
    values = arch.megatron_args(padded_vocab)
    values.update(
        seq_length=arch.max_position_embeddings,
        tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp,
        virtual_pipeline_model_parallel_size=None,
        num_layers_per_virtual_pipeline_stage=None,
        expert_model_parallel_size=1,
        num_layer_list=layout.num_layer_list_arg,
        world_size=layout.tp * layout.pp,
        data_parallel_size=1,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
        tokenizer_type="PretrainedFromHF",
        use_mcore_models=True,
        transformer_impl="local",
        ckpt_format="torch",
        iteration=iteration,
        consumed_train_samples=0,
        consumed_valid_samples=0,
    )
    if float(values["rotary_base"]).is_integer():
        values["rotary_base"] = int(values["rotary_base"])  # Megatron's --rotary-base is an int
    values.update(overrides or {})
    return argparse.Namespace(**values)


def arch_from_args(args: Any, fallback_vocab: int) -> LlamaArch:
    """Architecture from checkpoint args, also those MindSpeed writes.

    Megatron semantics: without ``group_query_attention`` the query groups equal the heads (the
    stored ``num_query_groups`` is then a meaningless default); ``vocab_size`` is usually None in
    MindSpeed-written args, so ``fallback_vocab`` (the padded size) stands in.
    """
    def need(name: str) -> Any:
        value = getattr(args, name, None)
        if value is None:
            raise ConversionError(f"checkpoint args lack {name}: not a Megatron GPT checkpoint this tool reads")
        return value

    heads = need("num_attention_heads")
    groups = getattr(args, "num_query_groups", None) if getattr(args, "group_query_attention", False) else heads
    return LlamaArch(
        num_layers=need("num_layers"),
        hidden_size=need("hidden_size"),
        ffn_hidden_size=need("ffn_hidden_size"),
        num_attention_heads=heads,
        num_query_groups=groups or heads,
        vocab_size=getattr(args, "vocab_size", None) or fallback_vocab,
        max_position_embeddings=getattr(args, "max_position_embeddings", None) or need("seq_length"),
        rope_theta=float(getattr(args, "rotary_base", 10000)),
        norm_epsilon=float(getattr(args, "norm_epsilon", 1e-5)),
        tie_word_embeddings=not getattr(args, "untie_embeddings_and_output_weights", False),
    )


def picklable_args(args: Any) -> tuple[argparse.Namespace, list[str]]:
    """A copy of ``args`` without values whose class is not importable here (names of dropped attrs)."""
    out = copy.copy(args)
    dropped = [k for k, v in vars(out).items() if isinstance(v, MissingClass)]
    for k in dropped:
        delattr(out, k)
    return out, dropped


@dataclass
class MegatronMeta:
    """What a Megatron checkpoint says about itself (rank 0's file)."""

    arch: LlamaArch
    padded_vocab_size: int
    tp: int
    pp: int
    num_layer_list: list[int] | None
    iteration: int
    dtype: str  # bf16 | fp16 | fp32
    args: argparse.Namespace
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys other than RESERVED_KEYS


class MegatronCheckpoint:
    """One iteration of a Megatron checkpoint, validated on open and read tensor by tensor.

    Validation reads no tensor data: the tracker and iteration directory, one ``mp_rank`` directory
    per TP/PP rank named by the args (no more, no fewer), each rank file's zip directory and pickle,
    its ``model`` keys against the Llama mcore layout of its stage, and that every tensor's bytes are
    in the file (a truncated file fails here).
    """

    def __init__(self, root: str | Path, iteration: int | None = None):
        self.root = Path(root)
        self.iteration = self._resolve_iteration(iteration)
        self.iter_dir = self.root / iteration_dir_name(self.iteration)
        if not self.iter_dir.is_dir():
            have = [iteration_dir_name(i) for i in iterations_on_disk(self.root)]
            raise ConversionError(f"{self.iter_dir} does not exist (iterations present: {have or 'none'})")
        first = self._rank_file(self._rank0_dir())
        self._readers: dict[tuple[int, int], TorchFileReader] = {}
        self._models: dict[tuple[int, int], dict[str, Any]] = {}
        obj0 = self._open(first, (0, 0))
        self.args = obj0["args"]
        self._top0 = obj0
        self.tp = int(getattr(self.args, "tensor_model_parallel_size", 1) or 1)
        self.pp = int(getattr(self.args, "pipeline_model_parallel_size", 1) or 1)
        if (getattr(self.args, "expert_model_parallel_size", 1) or 1) > 1:
            raise ConversionError(f"{first}: expert-parallel (MoE) checkpoints are not supported")
        if getattr(self.args, "virtual_pipeline_model_parallel_size", None) not in (None, 1):
            raise ConversionError(f"{first}: virtual-pipeline checkpoints (model0, model1, ...) are not supported")
        self.padded_vocab = int(getattr(self.args, "padded_vocab_size", 0) or 0)
        if self.padded_vocab <= 0:
            raise ConversionError(f"{first}: args lack padded_vocab_size")
        self.arch = arch_from_args(self.args, self.padded_vocab)
        self.true_vocab_known = bool(getattr(self.args, "vocab_size", None))
        self.layout = ParallelLayout(self.arch, self.tp, self.pp,
                                     parse_num_layer_list(getattr(self.args, "num_layer_list", None)))
        self._check_rank_dirs()
        for t, p in self.layout.ranks():
            path = self._rank_file(self.iter_dir / rank_dir_name(t, p, self.pp))
            if (t, p) != (0, 0):
                self._open(path, (t, p))
            self._check_keys((t, p), path)
        self.dtype = self._models[(0, 0)][self.layout.stage_keys(0)[0]].dtype
        self._consumed: set[tuple[int, int, str]] = set()

    # --- layout -----------------------------------------------------------------------------------
    def _resolve_iteration(self, iteration: int | None) -> int:
        root = self.root
        if not root.is_dir():
            raise ConversionError(f"Megatron checkpoint directory {root} does not exist")
        if re.fullmatch(r"iter_\d+|release", root.name) or root.name.startswith("mp_rank_"):
            raise ConversionError(f"{root} is inside a checkpoint; pass the directory that holds {TRACKER} "
                                  f"(an ancestor of {root.name})")
        tracker = read_tracker(root)
        if iteration is not None:
            return int(iteration)
        if tracker is not None:
            return tracker
        on_disk = iterations_on_disk(root)
        if (root / "config.json").is_file():
            raise ConversionError(f"{root} is an HF model directory, not a Megatron checkpoint (no {TRACKER})")
        if on_disk:
            raise ConversionError(f"{root} has no {TRACKER}; pass the iteration explicitly "
                                  f"(present: {[iteration_dir_name(i) for i in on_disk]})")
        raise ConversionError(f"{root} is not a Megatron checkpoint: unknown layout (no {TRACKER}, no iter_* "
                              f"directories; found {sorted(p.name for p in root.iterdir())[:5]})")

    def _rank0_dir(self) -> Path:
        for name in ("mp_rank_00", "mp_rank_00_000"):
            if (self.iter_dir / name).is_dir():
                return self.iter_dir / name
        names = sorted(p.name for p in self.iter_dir.iterdir())
        if any(n.endswith(".distcp") or n == "metadata.json" for n in names):
            raise ConversionError(f"{self.iter_dir} is a torch_dist (distributed) checkpoint; only the legacy "
                                  f"'torch' format (mp_rank_* directories) is supported: save with --ckpt-format torch")
        raise ConversionError(f"{self.iter_dir}: unknown checkpoint layout: no mp_rank_00 or mp_rank_00_000 "
                              f"directory (found {names[:5]})")

    def _rank_file(self, rank_dir: Path) -> Path:
        path = rank_dir / RANK_FILE
        if not path.is_file():
            raise ConversionError(f"{path} is missing: the checkpoint is incomplete")
        return path

    def _check_rank_dirs(self) -> None:
        expected = {rank_dir_name(t, p, self.pp) for t, p in self.layout.ranks()}
        present = {p.name for p in self.iter_dir.iterdir() if p.name.startswith("mp_rank_")}
        missing, extra = sorted(expected - present), sorted(present - expected)
        if missing or extra:
            raise ConversionError(
                f"{self.iter_dir}: rank directories do not match the args (TP={self.tp}, PP={self.pp}): "
                f"missing {missing}, unexpected {extra}; the checkpoint is incomplete or mixes layouts")

    def _open(self, path: Path, rank: tuple[int, int]) -> dict[str, Any]:
        reader = TorchFileReader(path)
        obj = reader.load_object()
        if not isinstance(obj, dict) or "args" not in obj:
            raise ConversionError(f"{path}: not a Megatron rank file (no 'args')")
        if "model" not in obj:
            if "model0" in obj:
                raise ConversionError(f"{path}: virtual-pipeline checkpoint (model0, model1, ...): not supported")
            raise ConversionError(f"{path}: unknown checkpoint layout: no 'model' key (keys: {sorted(obj)[:6]})")
        self._readers[rank] = reader
        self._models[rank] = obj["model"]
        return obj

    def _check_keys(self, rank: tuple[int, int], path: Path) -> None:
        model = self._models[rank]
        expected = [k for k in self.layout.stage_keys(rank[1]) if not k.endswith(EXTRA_STATE_SUFFIX)]
        present = [k for k in model if not k.endswith(EXTRA_STATE_SUFFIX)]
        missing = [k for k in expected if k not in model]
        unexpected = [k for k in present if k not in set(expected)]
        if unexpected and any(k.startswith("language_model.") for k in unexpected):
            raise ConversionError(f"{path}: legacy (non-mcore) Megatron layout (language_model.*); convert it "
                                  f"with --use-mcore-models")
        if missing or unexpected:
            hint = ""
            if any("layer_norm_weight" in k for k in unexpected):
                hint = " (Transformer-Engine fused-norm keys: MindSpeed writes the local spec)"
            raise ConversionError(
                f"{path}: model keys do not match the Llama mcore layout of stage {rank[1]} "
                f"({self.layout.counts[rank[1]]} layers): missing {missing[:4]}, unexpected {unexpected[:4]}{hint}")
        reader = self._readers[rank]
        for k in expected:
            value = model[k]
            if not isinstance(value, LazyTensor):
                raise ConversionError(f"{path}: {k} is {type(value).__name__}, not a tensor")
            reader.check(value)

    # --- reading ----------------------------------------------------------------------------------
    def stage_and_local(self, entry: Entry, layer: int | None) -> tuple[int, int | None]:
        if layer is not None:
            return self.layout.stage_of(layer)
        return (0 if entry.scope == "first" else self.pp - 1), None

    def shard_sources(self, entry: Entry, layer: int | None) -> tuple[list[TensorSource], str]:
        """The TP shards of ``entry`` at ``layer`` (read lazily) and a description of where they are."""
        p, local = self.stage_and_local(entry, layer)
        key = entry.mg_name(local)
        shards = []
        for t in range(self.tp):
            mark = (t, p, key)
            if mark in self._consumed:
                raise ConversionError(f"internal: {key} of rank ({t}, {p}) read twice")
            self._consumed.add(mark)
            where = f"{self.iter_dir.name}/{rank_dir_name(t, p, self.pp)}: {key}"
            shards.append(self._readers[(t, p)].source(self._models[(t, p)][key], where))
        return shards, f"{self.iter_dir.name}/{rank_dir_name(0, p, self.pp)}..: {key}"

    def assert_all_consumed(self) -> None:
        left = [(t, p, k) for (t, p) in self.layout.ranks() for k in self.layout.stage_keys(p)
                if not k.endswith(EXTRA_STATE_SUFFIX) and (t, p, k) not in self._consumed]
        if left:
            raise ConversionError(f"internal: tensors never converted: {left[:4]}")

    def meta(self, materialize_extra: bool = False) -> MegatronMeta:
        extra = {k: v for k, v in self._top0.items() if k not in RESERVED_KEYS}
        if materialize_extra:
            extra = self._readers[(0, 0)].materialize(extra)
        return MegatronMeta(arch=self.arch, padded_vocab_size=self.padded_vocab, tp=self.tp, pp=self.pp,
                            num_layer_list=self.layout.num_layer_list, iteration=self.iteration,
                            dtype=dtype_name(self.dtype), args=self.args, extra=extra)

    def close(self) -> None:
        for r in self._readers.values():
            r.close()


def top_level(args: argparse.Namespace, iteration: int, model: "OrderedDict[str, Any]",
              extra: dict[str, Any] | None = None) -> "OrderedDict[str, Any]":
    """A rank file's dict in Megatron's key order; ``extra`` adds (or sets the two defaultable) keys."""
    extra = dict(extra or {})
    clash = [k for k in extra if k in RESERVED_KEYS]
    if clash:
        raise ConversionError(f"extra may not set {clash}: the writer sets {list(RESERVED_KEYS)} itself")
    out: OrderedDict[str, Any] = OrderedDict(
        args=args, checkpoint_version=CHECKPOINT_VERSION, iteration=iteration, model=model)
    rerun = extra.pop("rerun_state_machine", DEFAULT_RERUN_STATE)
    flops = extra.pop("num_floating_point_operations_so_far", 0)
    out.update(extra)
    out["rerun_state_machine"] = rerun
    out["num_floating_point_operations_so_far"] = flops
    return out


def latest_complete_iteration(mg_dir: str | Path) -> int | None:
    """The newest iteration, not newer than the tracker's, whose rank files are all present and loadable.

    None when there is no tracker (Megatron would not load the directory either) or no complete
    iteration. Loadable means what ``MegatronCheckpoint`` validates (no tensor data is read).
    """
    root = Path(mg_dir)
    if not root.is_dir():
        return None
    try:
        tracker = read_tracker(root)
    except ConversionError:
        return None
    if tracker is None:
        return None
    for it in sorted((i for i in iterations_on_disk(root) if i <= tracker), reverse=True):
        try:
            MegatronCheckpoint(root, it).close()
            return it
        except ConversionError:
            continue
    return None
