"""HF Llama <-> Megatron-mcore weight names: one declarative table, used in both directions.

Each entry names its HF tensor(s), its Megatron tensor, where it lives (every layer, the first or
the last pipeline stage), its HF shape in architecture dimensions, and how it is laid out across
tensor-parallel ranks, as the list of blocks (``Piece``) copied between the HF tensors and each
rank's tensor. The pieces are the one description of the layout: splitting (HF -> ranks) and
merging (ranks -> HF) both just copy them, in memory or straight from a file. The entry types carry
the layout facts of MindSpeed-LLM 2.3.0 (reference section 3a):

- ``Replicated``: the same tensor on every TP rank (RMSNorm weights).
- ``RowParallel``: split along dim 1 (``linear_proj``, ``linear_fc2``).
- ``VocabParallel``: rows padded to the padded vocab size by replicating the last row, then split
  along dim 0 (embedding, output layer); trimmed back to the HF vocab on the way back.
- ``FusedQKV``: HF q/k/v grouped per query group ``[q heads of group g | k_g | v_g]`` and split by
  group, so TP rank r holds groups ``[r*ng/TP, (r+1)*ng/TP)``.
- ``FusedGateUp``: gate and up split separately, each rank stores ``[gate_r ; up_r]``.

``{i}`` in a name is the layer index: global on the HF side, stage-local on the Megatron side. The
table is in megatron-core's state-dict order (which is the order MindSpeed writes), and rank files
list their keys in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from navila_tune.arch import LlamaArch
from navila_tune.convert.errors import ConversionError
from navila_tune.convert.sources import MemorySource, TensorSource

LAYER, FIRST, LAST = "layer", "first", "last"  # where an entry lives
EXTRA_STATE_SUFFIX = "._extra_state"
# HF tensors that are buffers, not weights (older exports carry them): accepted and ignored.
IGNORED_HF_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclass(frozen=True)
class ShardContext:
    """What the layout of one entry depends on."""

    arch: LlamaArch
    tp: int
    padded_vocab: int  # embedding/output rows on the Megatron side (all TP ranks together)
    hf_vocab: int  # embedding/output rows on the HF side (<= padded_vocab)

    def dim(self, name: str) -> int:
        a = self.arch
        return {
            "H": a.hidden_size,
            "Q": a.num_attention_heads * a.kv_channels,
            "KV": a.num_query_groups * a.kv_channels,
            "F": a.ffn_hidden_size,
            "V": self.hf_vocab,
        }[name]

    def shape(self, dims: Sequence[str]) -> tuple[int, ...]:
        return tuple(self.dim(d) for d in dims)


@dataclass(frozen=True)
class Piece:
    """A block of ``length`` rows (dim 0) or columns (dim 1) shared by an HF tensor and a rank's tensor.

    ``broadcast``: the HF block is the single row ``hf_start``, repeated ``length`` times on the
    Megatron side (vocab padding); such pieces are written when splitting and skipped when merging.
    """

    hf: int  # index into the entry's HF tensors
    rank: int
    dim: int
    hf_start: int
    mg_start: int
    length: int
    broadcast: bool = False


@dataclass(frozen=True)
class Entry:
    """One Megatron tensor and the HF tensor(s) it is made of."""

    scope: str
    mg: str
    extra_state: ClassVar[bool] = False
    replicated: ClassVar[bool] = False

    @property
    def hf(self) -> tuple[str, ...]:
        raise NotImplementedError

    def hf_dims(self) -> tuple[tuple[str, ...], ...]:
        raise NotImplementedError

    def pieces(self, ctx: ShardContext) -> list[Piece]:
        raise NotImplementedError

    def hf_names(self, layer: int | None) -> list[str]:
        return [name.format(i=layer) for name in self.hf]

    def mg_name(self, local_layer: int | None) -> str:
        return self.mg.format(i=local_layer)

    def extra_state_name(self, local_layer: int | None) -> str | None:
        """The ``_extra_state`` key MindSpeed writes (value None) after this tensor, if any."""
        if not self.extra_state:
            return None
        return self.mg_name(local_layer).rsplit(".", 1)[0] + EXTRA_STATE_SUFFIX

    def hf_shapes(self, ctx: ShardContext) -> list[tuple[int, ...]]:
        return [ctx.shape(d) for d in self.hf_dims()]

    def shard_shapes(self, ctx: ShardContext) -> list[tuple[int, ...]]:
        """Per-TP-rank Megatron shapes: the extent of each rank's pieces, the HF size on the other dim."""
        hf_shapes = self.hf_shapes(ctx)
        shapes = []
        for rank in range(ctx.tp):
            mine = [p for p in self.pieces(ctx) if p.rank == rank]
            dim = mine[0].dim
            shape = list(hf_shapes[mine[0].hf])
            shape[dim] = max(p.mg_start + p.length for p in mine)
            shapes.append(tuple(shape))
        return shapes

    # --- assembling tensors from sources ------------------------------------------------------------
    def check_hf(self, sources: Sequence[TensorSource], ctx: ShardContext) -> None:
        for src, shape in zip(sources, self.hf_shapes(ctx)):
            if src.shape != shape:
                raise ConversionError(
                    f"{src.name} has shape {list(src.shape)}; the architecture ({_describe(ctx)}) implies "
                    f"{list(shape)}: config.json does not describe these weights")

    # in-memory conveniences (tests, and anything holding whole tensors)
    def split(self, tensors: Sequence[torch.Tensor], ctx: ShardContext,
              names: Sequence[str] | None = None) -> list[torch.Tensor]:
        from navila_tune.convert.copying import build_shards

        names = list(names or self.hf)
        return build_shards(self, [MemorySource(t, n) for t, n in zip(tensors, names)], ctx)

    def merge(self, shards: Sequence[torch.Tensor], ctx: ShardContext, where: str = "") -> list[torch.Tensor]:
        from navila_tune.convert.copying import build_hf

        return build_hf(self, [MemorySource(s, f"{where} rank {r}") for r, s in enumerate(shards)], ctx,
                        where or self.mg)


def _describe(ctx: ShardContext) -> str:
    a = ctx.arch
    return (f"hidden {a.hidden_size}, ffn {a.ffn_hidden_size}, heads {a.num_attention_heads}, "
            f"query groups {a.num_query_groups}, vocab {ctx.hf_vocab}")


@dataclass(frozen=True)
class Replicated(Entry):
    """Same tensor on every TP rank (RMSNorm weight)."""

    hf_name: str = ""
    dims: tuple[str, ...] = ("H",)
    replicated: ClassVar[bool] = True

    @property
    def hf(self) -> tuple[str, ...]:
        return (self.hf_name,)

    def hf_dims(self):
        return (self.dims,)

    def pieces(self, ctx):
        rows = ctx.shape(self.dims)[0]
        return [Piece(0, rank, 0, 0, 0, rows) for rank in range(ctx.tp)]


@dataclass(frozen=True)
class RowParallel(Entry):
    """RowParallelLinear weight: split along dim 1."""

    hf_name: str = ""
    dims: tuple[str, ...] = ()
    extra_state: ClassVar[bool] = True

    @property
    def hf(self):
        return (self.hf_name,)

    def hf_dims(self):
        return (self.dims,)

    def pieces(self, ctx):
        cols = ctx.shape(self.dims)[1] // ctx.tp
        return [Piece(0, rank, 1, rank * cols, 0, cols) for rank in range(ctx.tp)]


@dataclass(frozen=True)
class VocabParallel(Entry):
    """Vocab-parallel rows (embedding, output layer): padded by replicating the last row, split on dim 0."""

    hf_name: str = ""

    @property
    def hf(self):
        return (self.hf_name,)

    def hf_dims(self):
        return (("V", "H"),)

    def pieces(self, ctx):
        per_rank, vocab = ctx.padded_vocab // ctx.tp, ctx.hf_vocab
        if not 0 < vocab <= ctx.padded_vocab:
            raise ConversionError(f"{self.mg}: {vocab} vocab rows do not fit the padded vocab {ctx.padded_vocab}")
        out = []
        for rank in range(ctx.tp):
            first, end = rank * per_rank, (rank + 1) * per_rank
            real = max(0, min(end, vocab) - first)
            if real:
                out.append(Piece(0, rank, 0, first, 0, real))
            if real < per_rank:
                out.append(Piece(0, rank, 0, vocab - 1, real, per_rank - real, broadcast=True))
        return out


@dataclass(frozen=True)
class FusedQKV(Entry):
    """HF q/k/v -> Megatron ``linear_qkv`` grouped per query group, split by group across TP."""

    q: str = ""
    k: str = ""
    v: str = ""
    extra_state: ClassVar[bool] = True

    @property
    def hf(self):
        return (self.q, self.k, self.v)

    def hf_dims(self):
        return (("Q", "H"), ("KV", "H"), ("KV", "H"))

    def pieces(self, ctx):
        a = ctx.arch
        ng, d = a.num_query_groups, a.kv_channels
        q_rows = a.num_attention_heads // ng * d  # q rows of one group
        per_rank = ng // ctx.tp
        out = []
        for rank in range(ctx.tp):
            for j, g in enumerate(range(rank * per_rank, (rank + 1) * per_rank)):
                base = j * (q_rows + 2 * d)
                out += [Piece(0, rank, 0, g * q_rows, base, q_rows),
                        Piece(1, rank, 0, g * d, base + q_rows, d),
                        Piece(2, rank, 0, g * d, base + q_rows + d, d)]
        return out


@dataclass(frozen=True)
class FusedGateUp(Entry):
    """HF gate/up -> Megatron ``linear_fc1``: each TP rank holds ``[gate_r ; up_r]``."""

    gate: str = ""
    up: str = ""
    extra_state: ClassVar[bool] = True

    @property
    def hf(self):
        return (self.gate, self.up)

    def hf_dims(self):
        return (("F", "H"), ("F", "H"))

    def pieces(self, ctx):
        rows = ctx.arch.ffn_hidden_size // ctx.tp
        return [piece for rank in range(ctx.tp)
                for piece in (Piece(0, rank, 0, rank * rows, 0, rows), Piece(1, rank, 0, rank * rows, rows, rows))]


_L = "model.layers.{i}."
_D = "decoder.layers.{i}."
TABLE: tuple[Entry, ...] = (
    VocabParallel(FIRST, "embedding.word_embeddings.weight", hf_name="model.embed_tokens.weight"),
    Replicated(LAYER, _D + "input_layernorm.weight", hf_name=_L + "input_layernorm.weight"),
    RowParallel(LAYER, _D + "self_attention.linear_proj.weight", hf_name=_L + "self_attn.o_proj.weight",
                dims=("H", "Q")),
    FusedQKV(LAYER, _D + "self_attention.linear_qkv.weight",
             q=_L + "self_attn.q_proj.weight", k=_L + "self_attn.k_proj.weight", v=_L + "self_attn.v_proj.weight"),
    Replicated(LAYER, _D + "pre_mlp_layernorm.weight", hf_name=_L + "post_attention_layernorm.weight"),
    FusedGateUp(LAYER, _D + "mlp.linear_fc1.weight", gate=_L + "mlp.gate_proj.weight", up=_L + "mlp.up_proj.weight"),
    RowParallel(LAYER, _D + "mlp.linear_fc2.weight", hf_name=_L + "mlp.down_proj.weight", dims=("H", "F")),
    Replicated(LAST, "decoder.final_layernorm.weight", hf_name="model.norm.weight"),
    VocabParallel(LAST, "output_layer.weight", hf_name="lm_head.weight"),
)

# transformers' LlamaForCausalLM state-dict order of one layer (the order save_pretrained shards in)
HF_LAYER_ORDER = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                  "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                  "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight")


def _check_table(table: Sequence[Entry]) -> None:
    hf = [n for e in table for n in e.hf]
    mg = [e.mg for e in table]
    for names, side in ((hf, "HF"), (mg, "Megatron")):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise AssertionError(f"weight table names {side} tensors twice: {duplicated}")
    layer_hf = sorted(n[len(_L):] for e in table if e.scope == LAYER for n in e.hf)
    if layer_hf != sorted(HF_LAYER_ORDER):
        raise AssertionError("HF_LAYER_ORDER does not list the table's layer tensors")


_check_table(TABLE)


def entries(scope: str) -> list[Entry]:
    return [e for e in TABLE if e.scope == scope]


def hf_order(num_layers: int) -> list[tuple[str, Entry, int | None]]:
    """Every HF tensor as (name, its entry, its layer) in transformers' state-dict order."""
    out: list[tuple[str, Entry, int | None]] = []
    for e in entries(FIRST):
        out += [(n, e, None) for n in e.hf_names(None)]
    layer_entries = {t: e for e in entries(LAYER) for t in e.hf}
    for i in range(num_layers):
        for suffix in HF_LAYER_ORDER:
            out.append((_L.format(i=i) + suffix, layer_entries[_L + suffix], i))
    for e in entries(LAST):
        out += [(n, e, None) for n in e.hf_names(None)]
    return out


def expected_hf_names(num_layers: int) -> list[str]:
    return [name for name, _, _ in hf_order(num_layers)]


def is_ignored_hf(name: str) -> bool:
    return name.endswith(IGNORED_HF_SUFFIXES)
