"""``preprocess``: input rows -> MindSpeed-compatible indexed dataset + data report.

Order: every setting and path is checked, the tokenizer and the input are loaded and the mapped columns
checked, all before any row is encoded. Rows are encoded in chunks by ``workers`` processes (forked, so
they share the loaded tokenizer and memory-mapped input); the parent writes the chunks in row order
through megatron-core's IndexedDatasetBuilder (imported while the workers run) and builds the report.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .chat_check import check_chat_template
from .encode import ChunkEncoder, ChunkResult, EncodeSettings
from .errors import DataError
from .params import PreprocessParams
from .report import DataReport, length_stats
from .rows import BAD_ROW_REASONS, DROP_REASONS, convert_rows
from .source import check_columns, load_rows, resolve_input
from .packing import packed_sequences
from .template import Conversation, template_class
from .writer import IndexedWriter, report_path

CHUNK_ROWS = 1000
CHAT_CHECK_ROWS = 4

_ENCODER: ChunkEncoder | None = None


def _init_worker(encoder: ChunkEncoder) -> None:
    global _ENCODER
    _ENCODER = encoder


def _encode_span(span: tuple[int, int]) -> ChunkResult:
    assert _ENCODER is not None
    return _ENCODER(span)


def load_tokenizer(tokenizer_dir: str) -> Any:
    """The HF fast tokenizer of ``tokenizer_dir``, never fetched from the hub.

    When tokenizer_config.json names PreTrainedTokenizerFast (Llama-3 does), that class is what
    AutoTokenizer would build; importing it directly skips about a second of AutoTokenizer imports.
    """
    try:
        with open(os.path.join(tokenizer_dir, "tokenizer_config.json")) as f:
            named = json.load(f).get("tokenizer_class")
    except (OSError, ValueError):
        named = None
    try:
        if named == "PreTrainedTokenizerFast" and os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")):
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(tokenizer_dir, local_files_only=True)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True, local_files_only=True)
    except Exception as exc:
        raise DataError(f"could not load a tokenizer from {tokenizer_dir!r}: {type(exc).__name__}: {exc}") from exc


def _spans(n_rows: int, workers: int) -> list[tuple[int, int]]:
    size = max(1, min(CHUNK_ROWS, math.ceil(n_rows / max(1, workers * 4))))
    return [(a, min(n_rows, a + size)) for a in range(0, n_rows, size)]


@contextmanager
def _serial_tokenizers() -> Iterator[None]:
    """Workers tokenize serially (no Rust thread pool per process, no fork warning); parent unchanged."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _results(encoder: ChunkEncoder, spans: list[tuple[int, int]], workers: int) -> Iterator[Any]:
    """Yields None once the workers run (a hook for the parent's own start-up work), then each ChunkResult."""
    if workers <= 1 or len(spans) <= 1:
        yield None
        for span in spans:
            yield encoder(span)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    with _serial_tokenizers():
        pool = ctx.Pool(processes=min(workers, len(spans)), initializer=_init_worker, initargs=(encoder,))
    try:
        results = pool.imap(_encode_span, spans)
        yield None
        yield from results
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _chat_samples(dataset: Any, columns: dict[str, str | None]) -> list[tuple[str, Conversation]]:
    n = min(len(dataset), 64)
    items = convert_rows(dataset[0:n], columns, n) if n else []
    convs = [(f"row {i}", c) for i, c in enumerate(items) if isinstance(c, Conversation)]
    return convs[:CHAT_CHECK_ROWS]


def _check(params: PreprocessParams) -> type:
    """Every settings problem at once; returns the template class."""
    problems = params.problems()
    cls = None
    try:
        cls = template_class(params.prompt_type, params.enable_thinking)
    except DataError as exc:
        problems.append(str(exc))
    if problems:
        raise DataError.collect(problems)
    return cls


def preprocess(params: PreprocessParams) -> DataReport:
    """Write ``PREFIX_packed_{input_ids,attention_mask,labels}_document.{bin,idx}`` and the data report.

    Raises DataError for bad settings, a missing input or column, ``overlong='fail'`` on an over-long
    row, or more bad rows than ``max_bad_row_fraction`` allows (the report is still written then).
    """
    t0 = time.perf_counter()
    cls = _check(params)
    columns = params.resolved_map_keys()
    source = resolve_input(params.input)
    template = cls(load_tokenizer(params.tokenizer_dir))
    dataset = load_rows(source, params.cache_dir, params.progress)
    check_columns(list(dataset.column_names), columns, params.input)
    dataset = dataset.select_columns(sorted({c for c in columns.values() if c}))
    if len(dataset) == 0:
        raise DataError(f"data.input={params.input!r} has no rows")
    t_loaded = time.perf_counter()

    report = DataReport(status="ok", output_prefix=params.output_prefix,
                        input={"path": params.input, "format": source.builder, "files": source.files,
                               "ignored_files": source.ignored},
                        settings=_settings(params, template), rows_read=len(dataset))
    settings = EncodeSettings(params.seq_length, params.overlong, params.neat_pack, params.append_eod,
                              params.answer_marker or None, columns)
    encoder = ChunkEncoder(template, dataset, settings)
    writer: IndexedWriter | None = None
    results = _results(encoder, _spans(len(dataset), params.workers), params.workers)
    try:
        chunks: list[ChunkResult] = []
        bar = None
        tokens, t_bar = 0, time.perf_counter()
        for result in results:
            if result is None:  # the workers are running: the parent's own start-up overlaps them
                writer = IndexedWriter(params.output_prefix)  # imports megatron-core
                report.chat_template = check_chat_template(template, _chat_samples(dataset, columns))
                bar = _progress_bar(len(dataset), params.progress)
                t_bar = time.perf_counter()
                continue
            if not params.pack:
                writer.add_many(result.input_ids, result.labels, result.lengths)
                result.input_ids = result.labels = None  # written; keep only the statistics
            chunks.append(result)
            if bar is not None:
                tokens += int(result.prompt_tokens.sum() + result.response_tokens.sum())
                bar.set_postfix_str(f"{tokens / max(1e-9, time.perf_counter() - t_bar):,.0f} tokens/s",
                                    refresh=False)
                bar.update(result.stop - result.start)
        if bar is not None:
            bar.close()
        t_encoded = time.perf_counter()
        _fill_report(report, chunks, params)
        failure = _failure(report, params)
        if failure:
            report.status, report.failure = "failed", failure
        else:
            if params.pack:
                _write_packed(writer, chunks, params, template.pad_id, report)
            report.sequences_written = writer.count
            report.files = writer.commit()
            writer = None
        t_done = time.perf_counter()
        report.timing = {"load_s": round(t_loaded - t0, 3), "encode_s": round(t_encoded - t_loaded, 3),
                         "write_s": round(t_done - t_encoded, 3), "total_s": round(t_done - t0, 3)}
        path = report_path(params.output_prefix)
        report.write(path)
        print(report.summary(path), file=sys.stderr)
        if failure:
            raise DataError(failure)
        return report
    finally:
        results.close()
        if writer is not None:
            writer.abort()


def _settings(params: PreprocessParams, template: Any) -> dict[str, Any]:
    return {"tokenizer_dir": os.path.abspath(params.tokenizer_dir), "prompt_type": params.prompt_type,
            "handler": params.handler, "map_keys": params.resolved_map_keys(),
            "seq_length": params.seq_length, "pack": params.pack, "neat_pack": params.neat_pack,
            "append_eod": params.append_eod, "enable_thinking": params.enable_thinking,
            "overlong": params.overlong, "workers": params.workers,
            "max_bad_row_fraction": params.max_bad_row_fraction, "answer_marker": params.answer_marker,
            "bos_id": template.bos_id, "eos_id": template.eos_id, "pad_id": template.pad_id}


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rows", desc="preprocess", dynamic_ncols=True, file=sys.stderr)


def _fill_report(report: DataReport, chunks: list[ChunkResult], params: PreprocessParams) -> None:
    dropped: Counter = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    for c in chunks:
        dropped.update(c.dropped)
        for reason, shown in c.examples.items():
            keep = examples.setdefault(reason, [])
            keep += [{"row": row, "detail": detail} for row, detail in shown][:max(0, 5 - len(keep))]
    report.dropped = {r: int(dropped.get(r, 0)) for r in DROP_REASONS}
    report.examples = examples
    report.bad_rows = sum(report.dropped[r] for r in BAD_ROW_REASONS)
    report.bad_row_fraction = report.bad_rows / report.rows_read if report.rows_read else 0.0
    report.rows_written = int(sum(len(c.lengths) for c in chunks))
    report.truncated = sum(c.truncated for c in chunks)
    report.all_labels_masked = sum(c.all_masked for c in chunks)
    prompt = np.concatenate([c.prompt_tokens for c in chunks]) if chunks else np.zeros(0, np.int32)
    response = np.concatenate([c.response_tokens for c in chunks]) if chunks else np.zeros(0, np.int32)
    written = np.concatenate([c.lengths for c in chunks]) if chunks else np.zeros(0, np.int32)
    report.tokens = {"prompt": length_stats(prompt), "response": length_stats(response),
                     "total": length_stats(prompt + response), "written": length_stats(written),
                     "tokenized": int(prompt.sum() + response.sum()), "written_total": int(written.sum())}
    cut = sum(c.answer_cut for c in chunks)
    report.answer = {"marker": params.answer_marker, "rows_with_marker": sum(c.answer_marker_rows for c in chunks),
                     "cut": cut, "lost": sum(c.answer_lost for c in chunks),
                     "cut_share": cut / report.rows_written if report.rows_written else 0.0}


def _write_packed(writer: IndexedWriter, chunks: list[ChunkResult], params: PreprocessParams, pad_id: int,
                  report: DataReport) -> None:
    input_ids = np.concatenate([c.input_ids for c in chunks])
    labels = np.concatenate([c.labels for c in chunks])
    lengths = np.concatenate([c.lengths for c in chunks])
    for ids, mask, lab in packed_sequences(input_ids, labels, lengths, params.seq_length, pad_id,
                                           params.neat_pack):
        writer.add(ids, lab, mask)
    rows = writer.count
    report.packing = {"rows": rows, "samples": int(len(lengths)), "pad_id": pad_id, "neat": params.neat_pack,
                      "fill": float(lengths.sum()) / (rows * params.seq_length) if rows else 0.0}


def _failure(report: DataReport, params: PreprocessParams) -> str | None:
    if report.bad_row_fraction > params.max_bad_row_fraction:
        counts = ", ".join(f"{r} {report.dropped[r]}" for r in BAD_ROW_REASONS if report.dropped[r])
        rows = "; ".join(f"row {ex['row']} {reason}: {ex['detail']}" for reason in BAD_ROW_REASONS
                         for ex in report.examples.get(reason, [])[:2])
        return (f"{report.bad_rows} of {report.rows_read} rows are bad ({report.bad_row_fraction:.2%} > "
                f"data.max_bad_row_fraction={params.max_bad_row_fraction}): {counts}. First: {rows}. Fix the "
                f"data or data.map_keys, or raise data.max_bad_row_fraction")
    if report.rows_written == 0:
        return (f"no sample was written from {report.rows_read} rows (dropped: "
                f"{', '.join(f'{r} {n}' for r, n in report.dropped.items() if n)}); check data.map_keys and "
                f"data.seq_length={params.seq_length}")
    return None
