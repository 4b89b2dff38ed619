"""Writing the three indexed datasets with megatron-core's own ``IndexedDatasetBuilder``, atomically.

Files are built in a hidden temporary folder next to the prefix and renamed into place only when all
six are complete. Old files at the prefix are removed when writing starts, so a run that fails or
crashes leaves no complete-looking (or mixed old/new) prefix. megatron-core is imported here only
(it costs seconds).

Layout as MindSpeed-LLM 2.3.0 writes it for instruction handlers: int32, one sequence and one document
per sample (packed row). One deliberate difference: MindSpeed leaves an empty document (a repeated
document index) for each sample it drops as over-long; dropped samples leave no trace here, so the
document count is always sequences + 1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import numpy as np

KEYS = ("input_ids", "attention_mask", "labels")  # MindSpeed's json_keys for instruction handlers


def dataset_prefix(output_prefix: str, key: str) -> str:
    """``PREFIX_packed_{key}_document``: the handler appends ``_packed``, the level is ``document``."""
    return f"{output_prefix}_packed_{key}_document"


def output_files(output_prefix: str) -> list[str]:
    """The six files a preprocess run writes (.bin then .idx per key)."""
    return [dataset_prefix(output_prefix, key) + ext for key in KEYS for ext in (".bin", ".idx")]


def report_path(output_prefix: str) -> str:
    return f"{output_prefix}_data_report.json"


def remove_outputs(output_prefix: str) -> None:
    """Remove the files of an earlier run at this prefix (indexes first: the old set turns incomplete)."""
    for path in sorted(output_files(output_prefix), key=lambda p: not p.endswith(".idx")):
        if os.path.lexists(path):
            os.remove(path)


def import_indexed_dataset() -> Any:
    """megatron.core.datasets.indexed_dataset (imported on first use; it pulls in torch)."""
    from megatron.core.datasets import indexed_dataset

    return indexed_dataset


class IndexedWriter:
    """Three IndexedDatasetBuilders (int32) writing one sequence and one document per ``add``."""

    def __init__(self, output_prefix: str) -> None:
        self.output_prefix = output_prefix
        parent = os.path.dirname(os.path.abspath(output_prefix))
        os.makedirs(parent, exist_ok=True)
        name = os.path.basename(output_prefix)
        self.tmp_dir = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
        self.tmp_prefix = os.path.join(self.tmp_dir, name)
        remove_outputs(output_prefix)
        indexed_dataset = import_indexed_dataset()
        self.builders = {key: indexed_dataset.IndexedDatasetBuilder(dataset_prefix(self.tmp_prefix, key) + ".bin",
                                                                    dtype=np.int32) for key in KEYS}
        self.count = 0
        self._ones = np.ones(0, dtype=np.int32)

    def add(self, input_ids: np.ndarray, labels: np.ndarray, attention_mask: np.ndarray | None = None) -> None:
        n = len(input_ids)
        if attention_mask is None:
            if len(self._ones) < n:
                self._ones = np.ones(max(n, 2 * len(self._ones)), dtype=np.int32)
            attention_mask = self._ones[:n]
        for key, values in (("input_ids", input_ids), ("attention_mask", attention_mask), ("labels", labels)):
            self.builders[key].add_document(values, [n])
        self.count += 1

    def add_many(self, input_ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> None:
        """Consecutive samples from flat arrays, one document each."""
        at = 0
        for n in lengths.tolist():
            self.add(input_ids[at:at + n], labels[at:at + n])
            at += n

    def commit(self) -> list[str]:
        """Finalize the indexes, then move all six files into place (old ones removed first)."""
        for key, builder in self.builders.items():
            builder.finalize(dataset_prefix(self.tmp_prefix, key) + ".idx")
        final = output_files(self.output_prefix)
        staged = output_files(self.tmp_prefix)
        remove_outputs(self.output_prefix)
        # .bin files first, the input_ids index last: a partial move never looks complete.
        order = sorted(range(len(final)), key=lambda i: (final[i].endswith(".idx"), "input_ids" in final[i]))
        for i in order:
            os.replace(staged[i], final[i])
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        return final

    def abort(self) -> None:
        self.builders.clear()  # drops the open .bin handles
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
