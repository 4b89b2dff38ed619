"""HF <-> Megatron-mcore conversion, resharding, and Megatron state I/O for the native trainer.

Every file-to-file path streams: each tensor is copied block by block (16 MiB) from the source
file(s) into the record reserved for it in the output file, so peak memory is a few blocks, not a
tensor, a file or the model (resharding merges one tensor in memory at a time; load_megatron_state
returns the whole model by design). Outputs appear under their final name only when complete.
"""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from navila_tune.arch import LlamaArch, padded_vocab_size as _padded_vocab_size
from navila_tune.convert import hf_files, weights
from navila_tune.convert.errors import ConversionError
from navila_tune.convert.copying import Scratch, build_hf, stream_hf, stream_shards
from navila_tune.convert.hf_files import HFCheckpoint, PlannedTensor
from navila_tune.convert.megatron_files import (RANK_FILE, TRACKER, MegatronCheckpoint, MegatronMeta,
                                                build_args, dtype_name, iteration_dir_name, parse_dtype,
                                                picklable_args, top_level)
from navila_tune.convert.parallel import ParallelLayout, parse_num_layer_list, rank_dir_name
from navila_tune.convert.progress import Progress
from navila_tune.convert.sources import MemorySource, TensorSource, nbytes
from navila_tune.convert.staging import check_fresh_output, staged_dir, write_text_atomic
from navila_tune.convert.torch_zip import TorchFileWriter
from navila_tune.convert.weights import Entry, ShardContext

ReadEntry = Callable[[Entry, "int | None"], list[TensorSource]]
# Fields that determine tensor shapes: a Megatron checkpoint and the HF config it is exported with
# must agree on these (the others, e.g. rope_theta, are taken from the HF config).
SHAPE_FIELDS = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
                "tie_word_embeddings")


# ------------------------------------------------------------------------------------------ public API


def hf_to_megatron(hf_dir, out_dir, *, tp: int, pp: int, num_layer_list: list[int] | None = None,
                   dtype: str = "bf16", make_vocab_size_divisible_by: int = 1,
                   expected_arch: LlamaArch | None = None, progress: bool = True) -> None:
    """Convert an HF Llama directory into a MindSpeed-LLM 2.3.0 Megatron checkpoint at TP/PP.

    Writes ``out_dir/latest_checkpointed_iteration.txt`` ("1") and ``out_dir/iter_0000001/
    mp_rank_TT[_PPP]/model_optim_rng.pt``. The vocab is padded to a multiple of
    ``make_vocab_size_divisible_by * tp`` by replicating the last row.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    src = HFCheckpoint(hf_dir)
    _check_expected(src.arch, expected_arch, f"{hf_dir}/config.json")
    layout = ParallelLayout(src.arch, tp, pp, parse_num_layer_list(num_layer_list))
    torch_dtype = parse_dtype(dtype)
    _check_hf_names(src)
    if make_vocab_size_divisible_by < 1:
        raise ConversionError(f"make_vocab_size_divisible_by must be >= 1 (got {make_vocab_size_divisible_by})")
    padded = _padded_vocab_size(src.arch.vocab_size, make_vocab_size_divisible_by, tp)
    ctx = ShardContext(src.arch, tp, padded, src.arch.vocab_size)
    args = build_args(src.arch, layout, padded, torch_dtype,
                      make_vocab_size_divisible_by=make_vocab_size_divisible_by, iteration=1)
    check_fresh_output(out_dir, hf_dir)
    ledger = _Ledger(weights.expected_hf_names(src.arch.num_layers), f"{hf_dir}")

    def read_entry(entry: Entry, layer: int | None) -> list[TensorSource]:
        names = entry.hf_names(layer)
        ledger.take(names)
        return [src.source(n) for n in names]

    try:
        with staged_dir(out_dir) as tmp:
            _write_iteration(tmp / iteration_dir_name(1), layout, ctx, torch_dtype, read_entry,
                             lambda model: top_level(args, 1, model), progress=progress, desc="hf2mg")
            ledger.assert_done()
            (tmp / TRACKER).write_text("1")
    finally:
        src.close()


def megatron_to_hf(mg_dir, out_dir, *, source_hf_dir, dtype: str | None = None, iteration: int | None = None,
                   expected_arch: LlamaArch | None = None, progress: bool = True,
                   max_shard_bytes: int = hf_files.DEFAULT_MAX_SHARD_BYTES) -> None:
    """Export a Megatron checkpoint (any TP/PP, any iteration) to an HF directory.

    The vocab is trimmed to the source config's ``vocab_size``; weights go to safetensors shards
    (``model.safetensors``, or ``model-0000k-of-0000N.safetensors`` + index above
    ``max_shard_bytes``); config.json is the source's with ``torch_dtype`` set; tokenizer files and
    generation_config.json are copied byte for byte from ``source_hf_dir`` (whose weights are not read).
    """
    mg_dir, out_dir, source_hf_dir = Path(mg_dir), Path(out_dir), Path(source_hf_dir)
    config = hf_files.read_config(source_hf_dir)
    hf_arch = hf_files.arch_from_config(config, source_hf_dir)
    ckpt = MegatronCheckpoint(mg_dir, iteration)
    try:
        _check_same_shapes(ckpt, hf_arch, source_hf_dir)
        _check_expected(hf_arch, expected_arch, f"{source_hf_dir}/config.json")
        out_dtype = parse_dtype(dtype) if dtype else ckpt.dtype
        ctx = ShardContext(ckpt.arch, ckpt.tp, ckpt.padded_vocab, hf_arch.vocab_size)
        check_fresh_output(out_dir, mg_dir, source_hf_dir)
        with staged_dir(out_dir) as tmp:
            _write_hf_weights(tmp, ckpt, ctx, out_dtype, max_shard_bytes, progress)
            ckpt.assert_all_consumed()
            hf_files.write_config(tmp, config, out_dtype)
            hf_files.copy_tokenizer_files(source_hf_dir, tmp)
    finally:
        ckpt.close()


def reshard(mg_dir, out_dir, *, tp: int, pp: int, num_layer_list: list[int] | None = None,
            iteration: int | None = None, progress: bool = True) -> None:
    """Rewrite a Megatron checkpoint at another TP/PP, keeping its iteration and args.

    Model weights only: optimizer, scheduler and RNG state are laid out per rank and are not
    carried over (load the result with --finetune or --no-load-optim --no-load-rng).
    """
    mg_dir, out_dir = Path(mg_dir), Path(out_dir)
    ckpt = MegatronCheckpoint(mg_dir, iteration)
    try:
        layout = ParallelLayout(ckpt.arch, tp, pp, parse_num_layer_list(num_layer_list))
        # the true vocab, when the args record it; otherwise the source's padded rows are all kept
        vocab = ckpt.arch.vocab_size if ckpt.true_vocab_known else ckpt.padded_vocab
        divisor = int(getattr(ckpt.args, "make_vocab_size_divisible_by", 1) or 1)
        padded = _padded_vocab_size(vocab, divisor, tp)
        src_ctx = ShardContext(ckpt.arch, ckpt.tp, ckpt.padded_vocab, vocab)
        dst_ctx = ShardContext(ckpt.arch, tp, padded, vocab)
        args, dropped = picklable_args(ckpt.args)
        if dropped:
            print(f"reshard: dropped args not importable here: {dropped}", file=sys.stderr)
        vars(args).update(build_args(ckpt.arch, layout, padded, ckpt.dtype, make_vocab_size_divisible_by=divisor,
                                     iteration=ckpt.iteration).__dict__ | _kept_training_args(ckpt.args))
        flops = ckpt.meta().extra.get("num_floating_point_operations_so_far", 0)
        check_fresh_output(out_dir, mg_dir)

        def read_entry(entry: Entry, layer: int | None) -> list[TensorSource]:
            shards, where = ckpt.shard_sources(entry, layer)
            merged = build_hf(entry, shards, src_ctx, where)
            return [MemorySource(t, n) for t, n in zip(merged, entry.hf_names(layer))]

        with staged_dir(out_dir) as tmp:
            _write_iteration(tmp / iteration_dir_name(ckpt.iteration), layout, dst_ctx, ckpt.dtype, read_entry,
                             lambda model: top_level(args, ckpt.iteration, model,
                                                     {"num_floating_point_operations_so_far": flops}),
                             progress=progress, desc="mg2mg")
            ckpt.assert_all_consumed()
            (tmp / TRACKER).write_text(str(ckpt.iteration))
    finally:
        ckpt.close()


def load_megatron_state(mg_dir, iteration: int | None = None) -> tuple[MegatronMeta, dict[str, torch.Tensor]]:
    """Merge every TP/PP rank file into one state dict with HF ``LlamaForCausalLM`` names.

    The embedding and ``lm_head`` keep the padded vocab rows (``meta.padded_vocab_size``), as
    Megatron trains them. ``meta.extra`` holds rank 0's other top-level keys (optimizer state and
    the like, with tensors loaded); ``iteration`` None means the tracker's.
    """
    ckpt = MegatronCheckpoint(mg_dir, iteration)
    try:
        ctx = ShardContext(ckpt.arch, ckpt.tp, ckpt.padded_vocab, ckpt.padded_vocab)
        state = _merged_hf_tensors(ckpt, ctx)
        ckpt.assert_all_consumed()
        return ckpt.meta(materialize_extra=True), state
    finally:
        ckpt.close()


def save_megatron_state(state: dict[str, torch.Tensor], out_dir, *, arch: LlamaArch, tp: int, pp: int,
                        num_layer_list: list[int] | None, iteration: int, padded_vocab_size: int,
                        args_overrides: dict | None = None, extra: dict | None = None) -> None:
    """Write an HF-named state dict (padded vocab rows) as ``out_dir/iter_{iteration:07d}`` at TP/PP.

    Adds the iteration to ``out_dir`` (creating it if needed; an existing directory of the same
    iteration is replaced), then points the tracker at it, atomically and last, so a crash never
    leaves the tracker naming an incomplete iteration. ``args_overrides`` are set on the ``args``
    Namespace after the architecture/parallel values. ``extra`` maps additional top-level keys to
    objects stored in EVERY rank file (e.g. ``optimizer``, ``opt_param_scheduler``, ``rng_state``;
    tensors inside are saved as torch.save would); it may also set ``rerun_state_machine`` and
    ``num_floating_point_operations_so_far``, but not ``args``, ``checkpoint_version``,
    ``iteration`` or ``model``.
    """
    out_dir = Path(out_dir)
    layout = ParallelLayout(arch, tp, pp, parse_num_layer_list(num_layer_list))
    if iteration < 0:
        raise ConversionError(f"iteration must be >= 0 (got {iteration})")
    if padded_vocab_size < arch.vocab_size or padded_vocab_size % tp:
        raise ConversionError(f"padded_vocab_size={padded_vocab_size} must be >= vocab_size={arch.vocab_size} "
                              f"and a multiple of TP={tp}")
    expected = weights.expected_hf_names(arch.num_layers)
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in set(expected) and not weights.is_ignored_hf(n)]
    if missing or unexpected:
        raise ConversionError(f"state dict does not match the Llama weight table for {arch.num_layers} layers: "
                              f"missing {missing[:4]}, unexpected {unexpected[:4]}")
    dtypes = {state[n].dtype for n in expected}
    if len(dtypes) != 1:
        raise ConversionError(f"state dict mixes dtypes {sorted(map(str, dtypes))}; cast it to one dtype first")
    dtype = dtypes.pop()
    dtype_name(dtype)  # bf16/fp16/fp32 only
    overrides = dict(args_overrides or {})
    divisor = int(overrides.pop("make_vocab_size_divisible_by", 1))
    args = build_args(arch, layout, padded_vocab_size, dtype, make_vocab_size_divisible_by=divisor,
                      iteration=iteration, overrides=overrides)
    top_level(args, iteration, OrderedDict(), extra)  # reject bad extra keys before writing anything
    rows = {state[n].shape[0] for n in ("model.embed_tokens.weight", "lm_head.weight")}
    if len(rows) != 1 or not arch.vocab_size <= min(rows) <= padded_vocab_size:
        raise ConversionError(f"embed_tokens/lm_head have {sorted(rows)} rows; expected the same number, between "
                              f"vocab_size={arch.vocab_size} and padded_vocab_size={padded_vocab_size}")
    ctx = ShardContext(arch, tp, padded_vocab_size, rows.pop())
    ledger = _Ledger(expected, "state dict")

    def read_entry(entry: Entry, layer: int | None) -> list[TensorSource]:
        names = entry.hf_names(layer)
        ledger.take(names)
        return [MemorySource(state[n].detach().cpu(), n) for n in names]

    out_dir.mkdir(parents=True, exist_ok=True)
    with staged_dir(out_dir / iteration_dir_name(iteration)) as tmp:
        _write_iteration(tmp, layout, ctx, dtype, read_entry, lambda model: top_level(args, iteration, model, extra),
                         progress=False, desc="save")
        ledger.assert_done()
    write_text_atomic(out_dir / TRACKER, str(iteration))


def megatron_shard_shapes(arch: LlamaArch, *, tp: int, pp: int, num_layer_list: list[int] | None = None,
                          make_vocab_size_divisible_by: int = 1) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per rank directory, every ``model`` tensor's shape, as the weight table lays it out (no data)."""
    layout = ParallelLayout(arch, tp, pp, parse_num_layer_list(num_layer_list))
    padded = _padded_vocab_size(arch.vocab_size, make_vocab_size_divisible_by, tp)
    ctx = ShardContext(arch, tp, padded, arch.vocab_size)
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for p in range(pp):
        plan = [(e.mg_name(local), e.shard_shapes(ctx)) for e, _, local in layout.stage_plan(p)]
        for t in range(tp):
            out[rank_dir_name(t, p, pp)] = {key: shapes[t] for key, shapes in plan}
    return out


# ------------------------------------------------------------------------------------------ internals


class _Ledger:
    """Every source tensor consumed exactly once, or an error naming it."""

    def __init__(self, expected: Iterable[str], where: str):
        self.left = set(expected)
        self.taken: set[str] = set()
        self.where = where

    def take(self, names: Iterable[str]) -> None:
        for n in names:
            if n in self.taken:
                raise ConversionError(f"{self.where}: {n} would be consumed twice (weight table error)")
            if n not in self.left:
                raise ConversionError(f"{self.where}: {n} is not a tensor of this model")
            self.left.remove(n)
            self.taken.add(n)

    def assert_done(self) -> None:
        if self.left:
            raise ConversionError(f"{self.where}: tensors never converted: {sorted(self.left)[:4]}")


def _check_expected(arch: LlamaArch, expected: LlamaArch | None, where: str) -> None:
    if expected is None:
        return
    diffs = arch.mismatches(expected)
    if diffs:
        raise ConversionError(f"{where} does not match the expected architecture (model group): " + "; ".join(
            f"{name}: model has {got!r}, expected {want!r}" for name, got, want in diffs)
            + "; point model.hf_dir at the right model or fix model.arch")


def _check_hf_names(src: HFCheckpoint) -> None:
    expected = weights.expected_hf_names(src.arch.num_layers)
    present = {n for n in src.tensors if not weights.is_ignored_hf(n)}
    missing = [n for n in expected if n not in present]
    unexpected = sorted(present - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"{src.dir}: tensors do not match a Llama with {src.arch.num_layers} layers (config.json): "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}")


def _check_same_shapes(ckpt: MegatronCheckpoint, hf_arch: LlamaArch, source_hf_dir: Path) -> None:
    diffs = [(f, getattr(ckpt.arch, f), getattr(hf_arch, f)) for f in SHAPE_FIELDS
             if getattr(ckpt.arch, f) != getattr(hf_arch, f)]
    if ckpt.true_vocab_known and ckpt.arch.vocab_size != hf_arch.vocab_size:
        diffs.append(("vocab_size", ckpt.arch.vocab_size, hf_arch.vocab_size))
    if hf_arch.vocab_size > ckpt.padded_vocab:
        diffs.append(("vocab_size", f"<= padded {ckpt.padded_vocab}", hf_arch.vocab_size))
    if diffs:
        raise ConversionError(
            f"{ckpt.root} ({ckpt.iter_dir.name}) and {source_hf_dir}/config.json describe different models: "
            + "; ".join(f"{f}: checkpoint {a!r}, config.json {b!r}" for f, a, b in diffs)
            + "; pass the HF directory the checkpoint was converted from")
    others = [(name, a, b) for name, a, b in ckpt.arch.mismatches(hf_arch) if name not in SHAPE_FIELDS
              and name != "vocab_size"]
    if others:
        warnings.warn(
            f"{ckpt.root} args differ from {source_hf_dir}/config.json in "
            + ", ".join(f"{name} ({a!r} vs {b!r})" for name, a, b in others)
            + "; the exported config.json keeps the source's values (MindSpeed's converter does not record "
              "rope_theta in args: check that training used the source's values)", stacklevel=3)


def _kept_training_args(args: Any) -> dict[str, Any]:
    """Values of the source args that describe the run, not the layout (kept when resharding)."""
    keep = {}
    for k in ("tokenizer_type", "seq_length", "consumed_train_samples", "consumed_valid_samples"):
        if getattr(args, k, None) is not None:
            keep[k] = getattr(args, k)
    return keep


def _write_iteration(iter_dir: Path, layout: ParallelLayout, ctx: ShardContext, dtype: torch.dtype,
                     read_entry: ReadEntry, make_top_level: Callable[["OrderedDict[str, Any]"], dict],
                     *, progress: bool, desc: str) -> None:
    """Write every rank file of one iteration, stage by stage; the TP ranks of a stage together.

    Each source entry is read once, block by block, and each block goes straight into the record
    reserved for it in its rank's file; the pickled dict (args, key order) ends each file.
    """
    total = sum(nbytes(dtype, shape) for p in range(layout.pp) for e, _, _ in layout.stage_plan(p)
                for shape in e.shard_shapes(ctx))
    iter_dir.mkdir(parents=True, exist_ok=True)
    scratch = Scratch()
    with Progress(desc, total, layout.tp * layout.pp, progress) as bar:
        for p in range(layout.pp):
            names = [rank_dir_name(t, p, layout.pp) for t in range(layout.tp)]
            writers: list[TorchFileWriter] = []
            try:
                for name in names:
                    (iter_dir / name).mkdir()
                    writers.append(TorchFileWriter(iter_dir / name / RANK_FILE, on_bytes=bar.advance))
                bar.start_files(names)
                models: list[OrderedDict[str, Any]] = [OrderedDict() for _ in names]
                for entry, layer, local in layout.stage_plan(p):
                    key, extra_key = entry.mg_name(local), entry.extra_state_name(local)
                    sinks = {}

                    def open_sink(rank: int, shape: tuple[int, ...]):
                        if key in models[rank] or rank in sinks:
                            raise ConversionError(f"internal: {names[rank]}/{key} produced twice")
                        sinks[rank] = writers[rank].open_tensor(dtype, shape)
                        return sinks[rank]

                    stream_shards(entry, read_entry(entry, layer), ctx, dtype, open_sink, scratch)
                    for t in range(layout.tp):
                        models[t][key] = sinks[t].written
                        if extra_key:
                            models[t][extra_key] = None
                for writer, model in zip(writers, models):
                    writer.close(make_top_level(model))
                    bar.end_file()
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise


def _hf_groups(num_layers: int) -> list[tuple[Entry, int | None]]:
    """Each (entry, layer) once, in the order of transformers' state dict (an entry's tensors are adjacent)."""
    groups: list[tuple[Entry, int | None]] = []
    for _, entry, layer in weights.hf_order(num_layers):
        if not groups or groups[-1] != (entry, layer):
            groups.append((entry, layer))
    return groups


def _merged_hf_tensors(ckpt: MegatronCheckpoint, ctx: ShardContext) -> dict[str, torch.Tensor]:
    """Every HF tensor, merged in memory from the TP shards."""
    state: dict[str, torch.Tensor] = {}
    scratch = Scratch()
    for entry, layer in _hf_groups(ckpt.arch.num_layers):
        shards, where = ckpt.shard_sources(entry, layer)
        state.update(zip(entry.hf_names(layer), build_hf(entry, shards, ctx, where, scratch=scratch)))
    return state


def _write_hf_weights(out_dir: Path, ckpt: MegatronCheckpoint, ctx: ShardContext, dtype: torch.dtype,
                      max_shard_bytes: int, progress: bool) -> None:
    """Merge every entry's TP shards straight into safetensors shards, block by block."""
    groups = _hf_groups(ckpt.arch.num_layers)
    planned = [PlannedTensor(name, dtype, shape) for entry, layer in groups
               for name, shape in zip(entry.hf_names(layer), entry.hf_shapes(ctx))]
    writer = hf_files.HFWeightsWriter(out_dir, planned, max_shard_bytes)
    scratch = Scratch()
    with Progress("mg2hf", sum(t.nbytes for t in planned), len(writer.files), progress) as bar:
        writer.on_bytes, writer.on_file = bar.advance, bar.next_file
        try:
            for entry, layer in groups:
                shards, where = ckpt.shard_sources(entry, layer)
                names = entry.hf_names(layer)
                stream_hf(entry, shards, ctx, where, dtype,
                          lambda i, shape: writer.open_tensor(names[i], dtype, shape), scratch)
            writer.close()
        except BaseException:
            writer.abort()
            raise
