"""Input formats and MindSpeed's --input folder rule; the chat-template check; the label view and CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from data_testkit import TOKENIZER_DIR, expected, nav_rows, read_indexed, write_jsonl, write_parquet
from navila_tune.data import DataError, report_path, user_content
from navila_tune.data.cli import main
from navila_tune.data.source import resolve_input

ROWS = nav_rows(6, seed=2)


def _want(tok, rows):
    return [expected(tok, [(user_content(r["instruction"], r["input"]), r["output"])])[0] for r in rows]


def _write(fmt: str, path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return write_parquet(path, rows)
    if fmt == "jsonl":
        return write_jsonl(path, rows)
    if fmt == "json":
        path.write_text(json.dumps(rows))
        return path
    if fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return path
    if fmt == "arrow":
        import datasets

        datasets.Dataset.from_list(rows).to_pandas()  # noqa: B018 (sanity)
        import pyarrow as pa

        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return path
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "json", "csv", "arrow"])
def test_every_format_gives_the_same_samples(tok, run, tmp_path, fmt):
    path = _write(fmt, tmp_path / "in" / f"train.{fmt}", ROWS)
    report, prefix = run(path)
    assert report.input["format"] == {"jsonl": "json"}.get(fmt, fmt)
    assert read_indexed(prefix)["input_ids"] == _want(tok, ROWS)


def test_folder_loads_every_file_of_the_most_common_extension(tok, run, tmp_path):
    folder = tmp_path / "in"
    write_parquet(folder / "a.parquet", ROWS[:3])
    write_parquet(folder / "b.parquet", ROWS[3:])
    write_jsonl(folder / "notes.jsonl", [{"instruction": "x", "input": "", "output": "y"}])
    (folder / "README.md").write_text("not data")
    report, prefix = run(folder)
    assert report.input["files"] == [str(folder / "a.parquet"), str(folder / "b.parquet")]
    assert report.input["ignored_files"] == [str(folder / "README.md"), str(folder / "notes.jsonl")]
    assert read_indexed(prefix)["input_ids"] == _want(tok, ROWS)


def test_folder_problems(tmp_path):
    folder = tmp_path / "tie"
    write_parquet(folder / "a.parquet", ROWS)
    write_jsonl(folder / "b.jsonl", ROWS)
    with pytest.raises(DataError, match=r"as many \*.jsonl as \*.parquet files"):
        resolve_input(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"is a folder without data files"):
        resolve_input(str(tmp_path / "empty"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match=r"unsupported extension 'txt'"):
        resolve_input(str(tmp_path / "x.txt"))


def test_output_inside_the_input_folder_is_refused(run, tmp_path):
    folder = tmp_path / "in"
    write_parquet(folder / "a.parquet", ROWS)
    with pytest.raises(DataError, match=r"lies inside the input folder"):
        run(folder, output_prefix=str(folder / "ds"))


def test_chat_template_check_reports_match_and_first_mismatch(tok, run):
    report, _ = run(ROWS)
    assert report.chat_template == {"status": "match", "checked": 5}  # 4 data rows + the probe
    rows = [dict(r, output=r["output"] + "\n") for r in ROWS]  # the llama3 chat template trims content
    report, _ = run(rows)
    ct = report.chat_template
    assert ct["status"] == "mismatch" and ct["first_mismatch"]["source"] == "row 0"
    assert ct["first_mismatch"]["what"] == "conversation"
    m = ct["first_mismatch"]
    ours, _ = expected(tok, [(user_content(rows[0]["instruction"], rows[0]["input"]), rows[0]["output"])])
    theirs, _ = expected(tok, [(user_content(ROWS[0]["instruction"], ROWS[0]["input"]), ROWS[0]["output"])])
    first = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    assert (m["position"], m["ours"], m["theirs"]) == (first, ours[first], theirs[first])
    assert "\n" in tok.decode([m["ours"]]) and "\n" not in tok.decode([m["theirs"]])


def test_chat_template_check_without_a_template(run, tmp_path):
    import shutil

    tok_dir = tmp_path / "tok"
    shutil.copytree(TOKENIZER_DIR, tok_dir)
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    cfg.pop("chat_template")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    report, _ = run(ROWS, tokenizer_dir=str(tok_dir))
    assert report.chat_template["status"] == "no_chat_template"


def test_cli_preprocess_then_show_marks_trained_tokens(tok, tmp_path, capsys):
    path = write_parquet(tmp_path / "in" / "train.parquet", ROWS)
    prefix = str(tmp_path / "out" / "ds")
    rc = main(["preprocess", "--input", str(path), "--tokenizer", str(TOKENIZER_DIR), "--output-prefix", prefix,
               "--seq-length", "128", "--workers", "2", "--no-progress", "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0 and json.loads(Path(report_path(prefix)).read_text())["rows_written"] == 6
    capsys.readouterr()
    assert main(["show", prefix, "--index", "1", "--color", "never"]) == 0
    out = capsys.readouterr().out
    reply = ROWS[1]["output"]
    assert f"[[{reply}<|eot_id|>]]" in out  # the trained part, decoded, in brackets
    assert "<|start_header_id|>assistant<|end_header_id|>\n\n[[" in out  # the prompt is outside them
    text = out.split("<|begin_of_text|>", 1)[1]
    assert "[[" not in text.split("<|start_header_id|>assistant")[0] and text.count("[[") == 1
    assert main(["show", prefix, "--index", "0", "--color", "always"]) == 0
    assert "\033[1;32m" in capsys.readouterr().out
    assert main(["show", prefix, "--index", "6"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    rc = main(["preprocess", "--input", str(tmp_path / "nope.parquet"), "--tokenizer", str(TOKENIZER_DIR),
               "--output-prefix", str(tmp_path / "o" / "ds"), "--seq-length", "64", "--handler", "Alpaca"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: 2 problems") and "nope.parquet" in err and "'Alpaca'" in err


def test_progress_bar_shows_rows_per_second(run, capsys):
    run(nav_rows(50), progress=True)
    err = capsys.readouterr().err
    assert "preprocess: 100%" in err and "50/50" in err and "rows/s" in err


def test_workers_also_run_under_spawn(tok, run, monkeypatch):
    """Where fork is unavailable (macOS, Windows) the workers are spawned and get the state pickled."""
    import multiprocessing

    import navila_tune.data.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CHUNK_ROWS", 4)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    rows = nav_rows(12, seed=5)
    report, prefix = run(rows, workers=2)
    assert report.rows_written == 12 and read_indexed(prefix)["input_ids"] == _want(tok, rows)
