"""The written files: names, .idx header byte by byte, contents read back with megatron-core, atomicity."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from data_testkit import KEYS, expected, parse_idx, read_indexed, write_parquet
from navila_tune.data import DataError, output_files, report_path

ROWS = [  # single-turn, with input, with system, multi-turn (history)
    {"instruction": "Ride to the park.", "input": "", "output": "Go straight.\nThe next action is go straight.",
     "system": None, "history": None},
    {"instruction": "Ride to the shop.", "input": "Observation: a red light.", "output": "Stop.",
     "system": None, "history": None},
    {"instruction": "Ride home.", "input": "", "output": "Turn left.", "system": "You are a cycling assistant.",
     "history": None},
    {"instruction": "Which way now?", "input": "", "output": "Turn right.", "system": "Sys.",
     "history": [["Where is the lane?", "On the right."], ["And then?", "Keep left."]]},
]
MAP = {"prompt": "instruction", "query": "input", "response": "output", "system": "system", "history": "history"}


def _expected(tok):
    return [
        expected(tok, [("Ride to the park.", "Go straight.\nThe next action is go straight.")]),
        expected(tok, [("Ride to the shop.\nObservation: a red light.", "Stop.")]),
        expected(tok, [("Ride home.", "Turn left.")], system="You are a cycling assistant."),
        expected(tok, [("Where is the lane?", "On the right."), ("And then?", "Keep left."),
                       ("Which way now?", "Turn right.")], system="Sys."),
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_samples_read_back_with_megatron_indexed_dataset(tok, run, workers):
    report, prefix = run(ROWS, map_keys=MAP, workers=workers)
    want = _expected(tok)
    got = read_indexed(prefix)
    assert got["input_ids"] == [ids for ids, _ in want]
    assert got["labels"] == [labels for _, labels in want]
    assert got["attention_mask"] == [[1] * len(ids) for ids, _ in want]
    assert report.status == "ok" and report.rows_read == 4 and report.rows_written == 4
    assert report.files == output_files(prefix) and all(os.path.exists(f) for f in report.files)


def test_idx_header_and_bin_byte_by_byte(tok, run):
    _, prefix = run(ROWS, map_keys=MAP)
    want = _expected(tok)
    lengths = [len(ids) for ids, _ in want]
    for key in KEYS:
        base = f"{prefix}_packed_{key}_document"
        idx = parse_idx(base + ".idx")
        assert idx["magic"] == b"MMIDIDX\x00\x00"
        assert idx["version"] == 1
        assert idx["dtype_code"] == 4  # int32
        assert idx["sequence_count"] == 4
        assert idx["document_count"] == 5  # one document per sample, plus the leading 0
        assert idx["lengths"] == lengths
        assert idx["pointers"] == [4 * sum(lengths[:i]) for i in range(4)]
        assert idx["document_indices"] == [0, 1, 2, 3, 4]
        assert idx["trailing_bytes"] == 0  # no sequence modes (not multimodal)
        raw = np.fromfile(base + ".bin", dtype="<i4")
        column = {"input_ids": 0, "labels": 1}.get(key)
        flat = [x for sample in want for x in (sample[column] if column is not None else [1] * len(sample[0]))]
        assert raw.tolist() == flat


def test_output_parent_is_created_and_nothing_temporary_is_left(run, tmp_path):
    report, prefix = run(ROWS, map_keys=MAP, output_prefix=str(tmp_path / "new" / "deeper" / "ds"))
    folder = Path(prefix).parent
    assert sorted(os.listdir(folder)) == sorted(
        [os.path.basename(f) for f in output_files(prefix)] + [os.path.basename(report_path(prefix))])


def test_failed_run_leaves_no_complete_looking_prefix(run, tmp_path):
    prefix = str(tmp_path / "out" / "ds")
    run(ROWS, map_keys=MAP)  # a previous complete output at the same prefix
    bad = [{"instruction": "x", "input": "", "output": None, "system": None, "history": None}] * 10 + ROWS
    with pytest.raises(DataError, match=r"10 of 14 rows are bad"):
        run(bad, map_keys=MAP)
    assert not any(os.path.exists(f) for f in output_files(prefix))  # the old set is not mixed with new
    assert not [e for e in os.listdir(tmp_path / "out") if e.startswith(".")]
    assert "failed" in Path(report_path(prefix)).read_text()


def test_crash_while_writing_leaves_no_complete_looking_prefix(run, tmp_path, monkeypatch):
    prefix = str(tmp_path / "out" / "ds")
    run(ROWS, map_keys=MAP)
    import navila_tune.data.writer as writer

    def crash_during_rename(src, dst):
        if dst.endswith("_labels_document.idx"):
            raise OSError("disk full")
        os.rename(src, dst)

    monkeypatch.setattr(writer.os, "replace", crash_during_rename)
    with pytest.raises(OSError, match="disk full"):
        run(ROWS[:2], map_keys=MAP)
    present = [f for f in output_files(prefix) if os.path.exists(f)]
    assert 0 < len(present) < 6 and f"{prefix}_packed_input_ids_document.idx" not in present
    assert not [e for e in os.listdir(tmp_path / "out") if e.startswith(".")]


def test_input_folder_files_are_not_modified(run, tmp_path):
    path = write_parquet(tmp_path / "in" / "train.parquet", ROWS)
    stat = path.stat()
    run(path, map_keys=MAP)
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and sorted(os.listdir(path.parent)) == ["train.parquet"]


def test_append_eod_and_enable_thinking(tok, run, tmp_path):
    report, prefix = run(ROWS, map_keys=MAP, append_eod=True)
    got = read_indexed(prefix)
    want = [expected(tok, turns, system, eod=True) for turns, system in (
        ([("Ride to the park.", "Go straight.\nThe next action is go straight.")], None),
        ([("Ride to the shop.\nObservation: a red light.", "Stop.")], None),
        ([("Ride home.", "Turn left.")], "You are a cycling assistant."),
        ([("Where is the lane?", "On the right."), ("And then?", "Keep left."), ("Which way now?", "Turn right.")],
         "Sys."))]
    assert got["input_ids"] == [w[0] for w in want] and got["labels"] == [w[1] for w in want]
    # enable_thinking is accepted and changes nothing for llama3 (as in MindSpeed): byte-identical files
    _, plain = run(ROWS, map_keys=MAP, output_prefix=str(tmp_path / "plain" / "ds"))
    for flag in (True, False):
        _, thinking = run(ROWS, map_keys=MAP, enable_thinking=flag, output_prefix=str(tmp_path / f"t{flag}" / "ds"))
        for a, b in zip(output_files(plain), output_files(thinking)):
            assert Path(a).read_bytes() == Path(b).read_bytes()
