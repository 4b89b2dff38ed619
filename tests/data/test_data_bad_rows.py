"""Bad rows are counted by reason and shown with row numbers; settings errors come before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_testkit import expected, nav_rows, read_indexed, write_jsonl, write_parquet
from navila_tune.data import DataError, report_path

GOOD = {"instruction": "Ride.", "input": "", "output": "Go.\nThe next action is go.", "history": None}
MAP = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}


def _rows():
    """Rows 0..19 good, then one of every bad kind at known row numbers (JSON keeps the mixed types)."""
    rows = [dict(GOOD, instruction=f"Ride {i}.") for i in range(20)]
    rows[3] = dict(GOOD, output="")  # empty response
    rows[4] = dict(GOOD, output="   \n")  # whitespace only: empty too
    rows[7] = {"instruction": "Ride.", "input": ""}  # output key absent: missing
    rows[8] = dict(GOOD, output=None)  # null: missing
    rows[11] = dict(GOOD, output=5)  # non-string
    rows[12] = dict(GOOD, input=["a", "b"])  # non-string query
    rows[15] = dict(GOOD, instruction="", input="")  # empty prompt
    rows[16] = dict(GOOD, history=[["only one"]])  # malformed history
    rows[17] = dict(GOOD, output="left " * 300)  # over-long
    return rows


def test_every_bad_row_kind_is_counted_with_row_numbers(run, tmp_path):
    path = write_jsonl(tmp_path / "in" / "rows.jsonl", _rows())
    report, prefix = run(path, map_keys=MAP, max_bad_row_fraction=0.5, seq_length=64)
    assert report.dropped == {"missing_column": 2, "non_string": 2, "empty_response": 2, "empty_prompt": 1,
                              "malformed_history": 1, "overlong": 1}
    assert report.bad_rows == 8 and report.bad_row_fraction == pytest.approx(8 / 20)
    assert report.rows_read == 20 and report.rows_written == 11
    rows_of = {reason: [e["row"] for e in shown] for reason, shown in report.examples.items()}
    assert rows_of["empty_response"] == [3, 4] and rows_of["missing_column"] == [7, 8]
    assert rows_of["non_string"] == [11, 12] and rows_of["empty_prompt"] == [15]
    assert rows_of["malformed_history"] == [16] and rows_of["overlong"] == [17]
    assert "holds int 5" in report.examples["non_string"][0]["detail"]
    on_disk = json.loads(Path(report_path(prefix)).read_text())
    assert on_disk["dropped"] == report.dropped and on_disk["status"] == "ok"
    assert len(read_indexed(prefix)["input_ids"]) == 11


def test_bad_rows_over_the_threshold_fail_the_run(run, tmp_path):
    path = write_jsonl(tmp_path / "in" / "rows.jsonl", _rows())
    with pytest.raises(DataError, match=r"8 of 20 rows are bad \(40.00% > data.max_bad_row_fraction=0.3\)"):
        run(path, map_keys=MAP, max_bad_row_fraction=0.3, seq_length=64)
    report = json.loads(Path(report_path(str(tmp_path / "out" / "ds"))).read_text())
    assert report["status"] == "failed" and report["bad_rows"] == 8


def test_bad_rows_are_reported_on_the_console(run, tmp_path, capsys):
    path = write_jsonl(tmp_path / "in" / "rows.jsonl", _rows())
    run(path, map_keys=MAP, max_bad_row_fraction=0.5, seq_length=64)
    err = capsys.readouterr().err
    assert "empty_response: row 3: column 'output' is empty" in err
    assert "missing_column 2" in err and "overlong 1" in err and "bad rows 8 = 40.00%" in err


def test_misspelled_handler_is_an_error_naming_the_known_handlers(run):
    with pytest.raises(DataError) as err:
        run(nav_rows(3), handler="AlpacaStyleInstructonHandler")
    msg = str(err.value)
    assert "'AlpacaStyleInstructonHandler' is not a known handler" in msg
    assert "Did you mean 'AlpacaStyleInstructionHandler'" in msg and "GeneralPretrainHandler" in msg
    with pytest.raises(DataError, match=r"'SharegptStyleInstructionHandler' is a MindSpeed-LLM handler"):
        run(nav_rows(3), handler="SharegptStyleInstructionHandler")


def test_missing_mapped_column_names_it_and_the_existing_columns(run, tmp_path, monkeypatch):
    import navila_tune.data.encode as encode

    monkeypatch.setattr(encode.ChunkEncoder, "encode_batch", lambda *a: pytest.fail("work started"))
    with pytest.raises(DataError) as err:
        run(nav_rows(3), map_keys={"prompt": "question", "query": "input", "response": "output"})
    msg = str(err.value)
    assert "has no column(s) 'question' (map_keys.prompt='question')" in msg
    assert "the columns are: 'instruction', 'input', 'output'" in msg
    assert not (tmp_path / "out").exists()


def test_several_setting_problems_are_reported_at_once(run):
    with pytest.raises(DataError) as err:
        run(nav_rows(3), seq_length=2, overlong="drop", neat_pack=True, workers=0, prompt_type="llama2")
    msg = str(err.value)
    for part in ("5 problems", "data.seq_length=2", "data.overlong='drop'", "neat_pack=true needs data.pack",
                 "data.workers=0", "prompt_type='llama2' is a MindSpeed-LLM template"):
        assert part in msg


def test_missing_input_is_an_error_naming_it(run, tmp_path):
    missing = tmp_path / "nowhere" / "train.parquet"
    with pytest.raises(DataError, match=rf"data.input='{missing}' does not exist .*never downloads"):
        run(missing)


def test_overlong_mindspeed_drops_truncate_keeps_fail_raises(tok, run):
    rows = [{"instruction": "Ride.", "input": "", "output": "Keep left on the lane. " * 30
             + "\nThe next action is turn left."}, dict(GOOD)]
    report, _ = run(rows, seq_length=64)
    assert report.dropped["overlong"] == 1 and report.rows_written == 1 and report.truncated == 0
    report, prefix = run(rows, seq_length=64, overlong="truncate")
    assert report.dropped["overlong"] == 0 and report.rows_written == 2 and report.truncated == 1
    assert report.answer == {"marker": "The next action is", "rows_with_marker": 2, "cut": 1, "lost": 1,
                             "cut_share": 0.5}
    got = read_indexed(prefix)
    assert len(got["input_ids"][0]) == 63  # truncated to seq_length - 1
    assert got["input_ids"][1] == expected(tok, [("Ride.", GOOD["output"])])[0]
    with pytest.raises(DataError, match=r"row 0: \d+ tokens >= data.seq_length=64 and data.overlong=fail"):
        run(rows, seq_length=64, overlong="fail")


def test_overlong_fail_from_a_worker_process_names_the_row(run, tmp_path, monkeypatch):
    import navila_tune.data.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 2)
    rows = [dict(GOOD) for _ in range(5)] + [dict(GOOD, output="left " * 100)]
    with pytest.raises(DataError, match=r"row 5: \d+ tokens >= data.seq_length=64"):
        run(rows, seq_length=64, overlong="fail", workers=2)
    assert list((tmp_path / "out").iterdir()) == []  # no files, no temporary folder left


def test_mindspeed_rounding_quirk_is_reproduced(tok, run):
    """A sample exactly seq_length long: MindSpeed's float rounding in infer_max_len can cut one reply
    token (the <|eot_id|>) and then keep the sample; mindspeed mode must write exactly that."""
    for words in range(1, 60):
        reply = " ".join(["left"] * words) + "."
        ids, labels = expected(tok, [("Ride.", reply)])
        t = sum(1 for lab in labels if lab != -100)
        s = len(ids) - t
        if int(len(ids) * (t / (s + t))) < t:
            break
    else:
        pytest.skip("no reply length hits the rounding case with this tokenizer")
    report, prefix = run([{"instruction": "Ride.", "input": "", "output": reply}], seq_length=len(ids))
    assert report.rows_written == 1 and report.truncated == 1
    got = read_indexed(prefix)
    assert got["input_ids"] == [ids[:-1]] and got["labels"] == [labels[:-1]]


def test_all_masked_labels_are_counted(run, monkeypatch):
    """No policy normally leaves a sample without trained tokens; the counter must still see one."""
    import navila_tune.data.encode as encode

    real_fit = encode.fit

    def fit_dropping_targets(messages, *args):
        fitted = real_fit(messages, *args)
        fitted.pairs = [(s, []) for s, _ in fitted.pairs]  # keep only the prompt
        return fitted

    monkeypatch.setattr(encode, "fit", fit_dropping_targets)
    rows = [{"instruction": "Ride.", "input": "", "output": "Go left then right. " * 20},  # over-long: fitted
            {"instruction": "Ride.", "input": "", "output": "Go."}]  # fits: untouched
    report, prefix = run(rows, seq_length=40, overlong="truncate")
    assert report.all_labels_masked == 1 and report.examples["all_labels_masked"][0]["row"] == 0
    assert set(read_indexed(prefix)["labels"][0]) == {-100}


def test_parquet_with_nulls_and_csv_with_empty_cells(run, tmp_path):
    rows = nav_rows(10)
    rows[2]["output"] = None
    rows[5]["instruction"] = None
    report, _ = run(write_parquet(tmp_path / "in" / "p.parquet", rows), max_bad_row_fraction=1.0)
    assert report.dropped["missing_column"] == 2 and report.rows_written == 8
