"""The line a failed stage's message quotes from its log as the first error."""

from __future__ import annotations

from navila_tune.executor import first_error


def _log(tmp_path, text: str) -> str:
    path = tmp_path / "stage.log"
    path.write_text(text)
    return str(path)


def test_a_traceback_is_quoted_by_its_exception_line(tmp_path):
    log = _log(tmp_path, "$ python -m x\nloading\nTraceback (most recent call last):\n"
                         '  File "x.py", line 3, in <module>\n    main()\n'
                         "ValueError: seq_length=0 must be >= 1\nmore\n")
    assert first_error(log) == "ValueError: seq_length=0 must be >= 1"


def test_a_native_abort_before_the_launcher_traceback_is_the_first_error(tmp_path):
    log = _log(tmp_path, "train: 100%\nterminate called without an active exception\n"
                         "Traceback (most recent call last):\n  File \"run.py\", line 1\n"
                         "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n")
    assert first_error(log) == "terminate called without an active exception"


def test_plain_error_lines_and_none(tmp_path):
    assert first_error(_log(tmp_path, "ok\nerror: --top_p is not a flag\n")) == "error: --top_p is not a flag"
    assert first_error(_log(tmp_path, "all fine\n")) is None
    assert first_error(str(tmp_path / "missing.log")) is None


def test_an_indented_traceback_ends_at_its_own_level(tmp_path):
    log = _log(tmp_path, "  Traceback (most recent call last):\n    File \"a.py\", line 1\n      f()\n  KeyError: 'x'\n")
    assert first_error(log) == "KeyError: 'x'"
