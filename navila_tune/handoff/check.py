"""Run every hand-off check on an exported LLM directory and collect one report.

Order: the files (path, config.json, generation_config.json, tokenizer), the tensors (index, names,
shapes, vocab rows, dtype, NaN/Inf, untied head), the numerical equivalence with the trained checkpoint
per dtype, then the optional pinned-stack load and the VILA splice checks. A check that crashes becomes a
failed item naming the exception, so the report is always complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from navila_tune.arch import LlamaArch
from navila_tune.handoff.report import Item, Report, failed

DEFAULT_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(kw_only=True)
class CheckOptions:
    hf_dir: str
    arch: LlamaArch | None = None  # the model group's architecture (default: config.json's)
    dtype: str | None = None  # bf16 | fp16 | fp32: what the weights were exported in (model.params_dtype)
    source_tokenizer_dir: str | None = None  # the tokenizer files must be byte-identical to these
    megatron_dir: str | None = None  # the trained checkpoint: reference for the loss check
    data_prefix: str | None = None  # preprocessed training data (PREFIX_packed_*_document)
    samples: int = 4
    max_tokens: int = 512
    dtypes: Sequence[str] = DEFAULT_DTYPES
    device: str = "cpu"
    navila_python: str | None = None  # python of a NaVILA-pinned env: also load it there
    vila_dir: str | None = None  # a spliced VILA checkpoint holding this export as llm/
    vila_source: str | None = None  # the VILA checkpoint it was spliced from
    vila_final_dir: str | None = None  # where the spliced checkpoint will live (default vila_dir)


def run_checks(o: CheckOptions) -> Report:
    from navila_tune.handoff import static_checks as sc

    report = Report(target=str(Path(o.hf_dir)))
    d = sc.ExportDir(Path(o.hf_dir), arch=o.arch, dtype=o.dtype,
                     source_tokenizer_dir=Path(o.source_tokenizer_dir) if o.source_tokenizer_dir else None)
    for name, check in (*sc.FILE_CHECKS, *sc.TENSOR_CHECKS):
        report.items += _timed(name, lambda: [check(d)])
    report.items += _timed("finite_and_untied", lambda: sc.check_finite_and_untied(d))

    from navila_tune.handoff.numerics import loss_items

    report.items += _timed("numerics", lambda: loss_items(
        o.hf_dir, megatron_dir=o.megatron_dir, data_prefix=o.data_prefix, arch=o.arch, samples=o.samples,
        max_tokens=o.max_tokens, dtypes=list(o.dtypes), device=o.device))
    if o.navila_python:
        from navila_tune.handoff.pinned_stack import pinned_stack_item

        report.items += _timed("pinned_stack", lambda: [pinned_stack_item(o.navila_python, o.hf_dir)])
    if o.vila_dir:
        from navila_tune.handoff.vila import vila_items

        if not o.vila_source:
            raise ValueError("vila_dir needs vila_source (the VILA checkpoint it was spliced from)")
        report.items += _timed("vila", lambda: vila_items(o.vila_dir, o.vila_source, o.hf_dir, o.vila_final_dir))
    return report


def _timed(name: str, run: Callable[[], list[Item]]) -> list[Item]:
    from navila_tune.handoff.static_checks import Unreadable

    started = time.perf_counter()
    try:
        items = run()
    except Unreadable as e:
        items = [failed(name, str(e), "ship the file (copy it from the source model)")]
    except Exception as e:  # noqa: BLE001 - a crashing check is a failed item, the others still run
        items = [failed(name, f"the check itself failed: {type(e).__name__}: {e}",
                        "fix what the message names, or report a navila_tune bug")]
    seconds = round((time.perf_counter() - started) / max(len(items), 1), 3)
    for item in items:
        item.seconds = seconds
    return items
