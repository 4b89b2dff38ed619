"""The indexed instruction dataset, MindSpeed's sample order, and micro-batches with dynamic padding.

What MindSpeed-LLM 2.3.0 does, and this module repeats:
- ``DecoderPackedMTFDataset`` reads ``PREFIX_packed_{input_ids,attention_mask,labels}_document`` and
  orders samples with ``numpy.random.RandomState(seed)``: one shuffled permutation of all samples per
  epoch, epochs appended until ``train_iters * global_batch_size`` samples exist (``_build_index_mappings``
  with ``--split 100,0,0``; no ``--full-shuffle-instruction-dataset``, no ``--padded-samples``).
- ``MegatronPretrainingSampler`` walks that order: every micro-step takes the next ``MBS * DP`` samples and
  data-parallel rank ``r`` gets the slice ``[r * MBS, (r + 1) * MBS)``. One iteration is ``GA`` such
  micro-steps, ``GA = GBS / (MBS * DP)``, so every iteration consumes exactly ``GBS`` samples whatever DP is.
- ``DataCollatorForSeq2Seq(pad_to_multiple_of=...)`` under ``--no-pad-to-seq-lengths`` pads each micro-batch
  on the right to its longest sample rounded up to ``pad_to_multiple_of``; labels are padded with -100.
Labels are stored unshifted; the loss compares ``logits[:, :-1]`` with ``labels[:, 1:]``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

IGNORE_INDEX = -100
KEYS = ("input_ids", "attention_mask", "labels")
_SUFFIX = "_packed_{key}_document"


class DataError(ValueError):
    """A dataset does not fit the run; the message names the file, the value and the fix."""


def dataset_prefixes(prefix: str) -> dict[str, str]:
    """The three indexed-dataset prefixes (without ``.bin``/``.idx``) behind a MindSpeed data prefix."""
    return {key: prefix + _SUFFIX.format(key=key) for key in KEYS}


def check_prefix(prefix: str, what: str = "data_prefix") -> None:
    """Fail with one message listing every missing file of the prefix."""
    missing = [p + ext for p in dataset_prefixes(prefix).values() for ext in (".bin", ".idx")
               if not os.path.isfile(p + ext)]
    if not missing:
        return
    hint = ""
    for key in KEYS:
        tail = _SUFFIX.format(key=key)
        if prefix.endswith(tail) or prefix.endswith(tail + ".bin") or prefix.endswith(tail + ".idx"):
            hint = f" The prefix must not include the suffix: use {prefix[: prefix.rindex(tail)]!r}."
    raise DataError(
        f"{what}={prefix!r} is not a complete MindSpeed instruction dataset: missing {missing}. "
        f"Fix: run the preprocess stage for it, or point {what} at the prefix given to preprocess_data.py "
        f"--output-prefix (without '_packed_<key>_document').{hint}")


class InstructionDataset:
    """One sample per sequence: ``input_ids``, ``attention_mask`` and unshifted ``labels``."""

    def __init__(self, prefix: str, seq_length: int, what: str = "data_prefix") -> None:
        check_prefix(prefix, what)
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.prefix = prefix
        self.seq_length = seq_length
        self.parts = {key: IndexedDataset(p) for key, p in dataset_prefixes(prefix).items()}
        lengths = {key: np.asarray(ds.sequence_lengths) for key, ds in self.parts.items()}
        base = lengths["input_ids"]
        for key in ("attention_mask", "labels"):
            if len(lengths[key]) != len(base) or not np.array_equal(lengths[key], base):
                raise DataError(
                    f"{what}={prefix!r}: {key} has {len(lengths[key])} sequences and input_ids has {len(base)}"
                    f" (or their lengths differ); the files come from different preprocess runs. "
                    f"Fix: re-run preprocess into an empty prefix.")
        self.lengths = base.astype(np.int64)
        if len(base) == 0:
            raise DataError(f"{what}={prefix!r} holds no samples. Fix: check the preprocess input and its "
                            f"seq_length (samples with >= seq_length tokens are dropped).")
        too_long = np.nonzero(self.lengths > seq_length)[0]
        if len(too_long):
            i = int(too_long[0])
            raise DataError(
                f"{what}={prefix!r}: sample {i} has {int(self.lengths[i])} tokens, more than seq_length="
                f"{seq_length} ({len(too_long)} samples are longer; longest {int(self.lengths.max())}). "
                f"Fix: train with seq_length >= {int(self.lengths.max())}, or re-run preprocess with "
                f"seq_length={seq_length} so it drops them.")

    def __len__(self) -> int:
        return len(self.lengths)

    def sample(self, index: int) -> dict[str, np.ndarray]:
        return {key: np.asarray(ds[int(index)], dtype=np.int64) for key, ds in self.parts.items()}


def mindspeed_sample_order(num_samples: int, needed: int, seed: int, shuffle: bool = True) -> np.ndarray:
    """``_build_index_mappings``: shuffled epochs of ``range(num_samples)`` until ``needed`` entries."""
    rng = np.random.RandomState(seed=seed)
    epochs = []
    total = 0
    while total < needed:
        order = np.arange(num_samples, dtype=np.int64)
        if shuffle:
            rng.shuffle(order)
        epochs.append(order)
        total += num_samples
    return np.concatenate(epochs) if epochs else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class BatchPlan:
    """Global batch = micro batch x gradient accumulation x data-parallel size."""

    global_batch_size: int
    micro_batch_size: int
    data_parallel_size: int

    def __post_init__(self) -> None:
        per_step = self.micro_batch_size * self.data_parallel_size
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise DataError(f"global_batch_size={self.global_batch_size} and micro_batch_size="
                            f"{self.micro_batch_size} must be positive")
        if self.global_batch_size % per_step:
            raise DataError(
                f"global_batch_size={self.global_batch_size} is not a multiple of micro_batch_size="
                f"{self.micro_batch_size} x data-parallel size={self.data_parallel_size} = {per_step}. "
                f"Fix: set global_batch_size to a multiple of {per_step} (e.g. "
                f"{max(per_step, self.global_batch_size // per_step * per_step)}).")

    @property
    def grad_accum(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.data_parallel_size)

    def check_fits(self, num_samples: int, what: str) -> None:
        if num_samples < self.global_batch_size:
            raise DataError(
                f"{what} holds {num_samples} samples, fewer than one global batch "
                f"(global_batch_size={self.global_batch_size}). Fix: lower global_batch_size to at most "
                f"{num_samples}, or add data.")

    def global_batch(self, order: np.ndarray, iteration: int) -> np.ndarray:
        """Sample indices of ``iteration`` (1-based), all ranks together."""
        start = (iteration - 1) * self.global_batch_size
        batch = order[start:start + self.global_batch_size]
        if len(batch) != self.global_batch_size:
            raise DataError(f"sample order has {len(order)} entries; iteration {iteration} needs "
                            f"{start + self.global_batch_size}")
        return batch

    def rank_micro_batches(self, order: np.ndarray, iteration: int, rank: int) -> list[np.ndarray]:
        """The ``grad_accum`` micro-batches rank ``rank`` runs in ``iteration`` (MegatronPretrainingSampler)."""
        batch = self.global_batch(order, iteration)
        step = self.micro_batch_size * self.data_parallel_size
        lo, hi = rank * self.micro_batch_size, (rank + 1) * self.micro_batch_size
        return [batch[m * step:(m + 1) * step][lo:hi] for m in range(self.grad_accum)]


@dataclass
class Batch:
    """One padded micro-batch, ready for ``LlamaForCausalLM``."""

    input_ids: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L], unshifted, -100 ignored
    position_ids: torch.Tensor | None  # None: plain causal attention (exact for right padding)
    num_tokens: int  # real (unpadded) tokens

    def to(self, device: torch.device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.input_ids), move(self.labels), move(self.position_ids), self.num_tokens)

    @property
    def num_label_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())


def padded_length(longest: int, multiple: int) -> int:
    return int(math.ceil(longest / multiple) * multiple) if multiple > 1 else longest


def collate(samples: Sequence[dict[str, np.ndarray]], pad_to_multiple_of: int, pad_id: int = 0) -> Batch:
    """Right-pad to the longest sample rounded up to ``pad_to_multiple_of``.

    With right padding, causal attention alone keeps real tokens from seeing pads, so no mask is built
    (identical results for every non-pad position, and the fast causal attention path). Neat-packed rows
    (``attention_mask`` holding sample numbers 1, 2, ...) get positions restarting at each sample, which
    transformers turns into a block-diagonal causal mask, as MindSpeed's neat pack intends.
    """
    length = padded_length(max(len(s["input_ids"]) for s in samples), pad_to_multiple_of)
    n = len(samples)
    ids = np.full((n, length), pad_id, dtype=np.int64)
    labels = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
    segments = np.zeros((n, length), dtype=np.int64)
    for i, s in enumerate(samples):
        k = len(s["input_ids"])
        ids[i, :k] = s["input_ids"]
        labels[i, :k] = s["labels"]
        segments[i, :k] = s["attention_mask"]
    num_tokens = int(sum(len(s["input_ids"]) for s in samples))
    positions = _segment_positions(torch.from_numpy(segments)) if segments.max() > 1 else None
    return Batch(torch.from_numpy(ids), torch.from_numpy(labels), positions, num_tokens)


def _segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """Positions restarting at 0 in every sample of a neat-packed row (pads: 0).

    transformers turns restarting ``position_ids`` with ``attention_mask=None`` into a block-diagonal
    causal mask (``find_packed_sequence_indices``), so samples of one row do not attend to each other.
    """
    positions = torch.zeros_like(segments)
    for i in range(segments.shape[0]):
        for seg in segments[i].unique().tolist():
            if seg == 0:
                continue
            where = (segments[i] == seg).nonzero().flatten()
            positions[i, where] = torch.arange(len(where))
    return positions
