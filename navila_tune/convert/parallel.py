"""Tensor/pipeline-parallel layout of a Megatron checkpoint: which rank file holds what."""

from __future__ import annotations

from dataclasses import dataclass, field

from navila_tune.arch import LlamaArch, layer_counts, layer_offsets
from navila_tune.convert import weights
from navila_tune.convert.errors import ConversionError
from navila_tune.convert.weights import Entry


def rank_dir_name(tp_rank: int, pp_rank: int, pp: int) -> str:
    """``mp_rank_TT`` when PP == 1, else ``mp_rank_TT_PPP`` (Megatron's get_checkpoint_name)."""
    return f"mp_rank_{tp_rank:02d}" if pp == 1 else f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"


def parse_num_layer_list(value: str | list[int] | tuple[int, ...] | None) -> list[int] | None:
    """``"8,8,7,9"`` (Megatron args / MindSpeed flag) or a list -> list of ints; None stays None."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            return [int(x) for x in value.split(",")]
        except ValueError:
            raise ConversionError(f"num_layer_list {value!r} is not comma-separated integers") from None
    return [int(x) for x in value]


@dataclass(frozen=True)
class ParallelLayout:
    """A validated TP/PP split of an architecture."""

    arch: LlamaArch
    tp: int
    pp: int
    num_layer_list: list[int] | None = None
    counts: list[int] = field(init=False)
    offsets: list[int] = field(init=False)

    def __post_init__(self) -> None:
        a = self.arch
        if a.tie_word_embeddings:
            raise ConversionError("tie_word_embeddings=true is not supported: Llama-3 (8B) has a separate lm_head; "
                                  "untie the model before converting")
        if a.num_attention_heads % a.num_query_groups:
            raise ConversionError(f"num_attention_heads={a.num_attention_heads} is not a multiple of "
                                  f"num_query_groups={a.num_query_groups} (num_key_value_heads)")
        if self.tp < 1 or self.pp < 1:
            raise ConversionError(f"TP and PP must be >= 1 (got TP={self.tp}, PP={self.pp})")
        if a.num_query_groups % self.tp:
            ok = [d for d in range(1, a.num_query_groups + 1) if a.num_query_groups % d == 0]
            raise ConversionError(
                f"TP={self.tp} does not divide num_query_groups={a.num_query_groups} (num_key_value_heads): "
                f"Megatron splits linear_qkv by query group; use TP in {ok}")
        if a.ffn_hidden_size % self.tp:
            raise ConversionError(f"TP={self.tp} does not divide ffn_hidden_size={a.ffn_hidden_size}")
        counts = self._counts()
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "offsets", layer_offsets(counts))

    def _counts(self) -> list[int]:
        n = self.arch.num_layers
        if self.num_layer_list:
            nll = list(self.num_layer_list)
            if len(nll) != self.pp or sum(nll) != n or min(nll) < 1:
                raise ConversionError(
                    f"num_layer_list {nll} must have PP={self.pp} entries, each >= 1, summing to "
                    f"num_layers={n}")
            return layer_counts(n, self.pp, nll)
        if n % self.pp:
            raise ConversionError(f"PP={self.pp} does not divide num_layers={n}; pass num_layer_list "
                                  f"(e.g. {_uneven_example(n, self.pp)})")
        return layer_counts(n, self.pp, None)

    @property
    def num_layer_list_arg(self) -> str | None:
        """The value Megatron args and MindSpeed's ``--num-layer-list`` carry (a comma string)."""
        return ",".join(str(c) for c in self.num_layer_list) if self.num_layer_list else None

    def stage_of(self, layer: int) -> tuple[int, int]:
        """(pipeline stage, stage-local index) of a global layer."""
        for p, (off, cnt) in enumerate(zip(self.offsets, self.counts)):
            if off <= layer < off + cnt:
                return p, layer - off
        raise IndexError(layer)

    def stage_plan(self, p: int) -> list[tuple[Entry, int | None, int | None]]:
        """(entry, global layer, local layer) for every tensor of stage ``p``, in rank-file order."""
        plan: list[tuple[Entry, int | None, int | None]] = []
        if p == 0:
            plan += [(e, None, None) for e in weights.entries(weights.FIRST)]
        for local in range(self.counts[p]):
            plan += [(e, self.offsets[p] + local, local) for e in weights.entries(weights.LAYER)]
        if p == self.pp - 1:
            plan += [(e, None, None) for e in weights.entries(weights.LAST)]
        return plan

    def stage_keys(self, p: int) -> list[str]:
        """Every key of stage ``p``'s ``model`` dict (tensors and ``_extra_state``), in order."""
        keys = []
        for e, _, local in self.stage_plan(p):
            keys.append(e.mg_name(local))
            extra = e.extra_state_name(local)
            if extra:
                keys.append(extra)
        return keys

    def ranks(self) -> list[tuple[int, int]]:
        return [(t, p) for p in range(self.pp) for t in range(self.tp)]


def _uneven_example(n: int, pp: int) -> str:
    base, rest = divmod(n, pp)
    return ",".join(str(base + (1 if i >= pp - rest else 0)) for i in range(pp))
