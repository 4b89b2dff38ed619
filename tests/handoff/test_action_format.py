"""Evaluate's action-format report: how NaVILA's parser (32 new tokens, "stop" first) reads CoT answers."""

from __future__ import annotations

import pytest

from navila_tune.native.evaluate import score_generations
from navila_tune.native.navila_actions import NAVILA_MAX_NEW_TOKENS, READINGS, NavAction, navila_reading

MARK = "The next action is"
FWD = "The gate is 75 cm ahead.\nThe next action is move forward 75 cm."


@pytest.mark.parametrize("text,seen,reading", [
    (FWD, FWD, "read_correctly"),
    ("I must not stop here.\nThe next action is move forward 75 cm.", None, "misread_stop"),
    (FWD, "The gate is 75 cm ahead.\nThe next action", "misread_truncated"),  # the answer is past token 32
    ("If it is move forward 25 cm it hits the kerb.\nThe next action is turn left 30 degrees.", None,
     "misread_other"),  # NaVILA tests "is move forward" before "is turn left", anywhere
    ("Maybe later I stop.\nI am not sure.", None, "no_final_action"),
    ("Arrived, so stop.\nThe next action is stop.", None, "read_correctly"),
])
def test_navila_reading(text, seen, reading):
    assert navila_reading(text, text if seen is None else seen, MARK)[0] == reading


def test_the_reading_names_what_was_stated_and_what_navila_executes():
    reading, stated, executed = navila_reading("Do not stop.\nThe next action is turn right 45 degrees.",
                                               "Do not stop.\nThe next action is turn right 45 degrees.", MARK)
    assert reading == "misread_stop" and stated == NavAction("right", 45, 3) and executed == NavAction("stop", None, 1)


def test_scores_report_shares_for_generations_and_for_the_references_format():
    refs = [FWD, "Left of me.\nThe next action is turn left 30 degrees.", "Here.\nThe next action is stop."]
    gens = [FWD, "I will not stop.\nThe next action is turn left 30 degrees.", "Hmm."]
    seen = [FWD[:30], gens[1], gens[2]]  # the first generation's answer lies beyond 32 tokens
    rows, s = score_generations(gens, refs, MARK, navigation=None, seen=seen, seen_references=refs)
    assert [r["navila_reading"] for r in rows] == ["misread_truncated", "misread_stop", "no_final_action"]
    assert s["navila_read_correctly_rate"] == 0 and s["navila_misread_rate"] == pytest.approx(2 / 3)
    assert s["navila_misread_stop_rate"] == s["navila_misread_truncated_rate"] == s["navila_no_final_action_rate"] \
        == pytest.approx(1 / 3)
    assert s["reference_navila_read_correctly_rate"] == 1.0 and s["reference_navila_misread_rate"] == 0
    assert s["navila_max_new_tokens"] == NAVILA_MAX_NEW_TOKENS == 32
    assert {f"navila_{r}_rate" for r in READINGS} <= set(s)
    _, without = score_generations(gens, refs, MARK, navigation=None)  # no truncation information: whole texts
    assert without["navila_misread_truncated_rate"] == 0


def test_evaluate_reports_the_format_of_the_shipped_cot_data(clean, tmp_path):
    """The tiny nav CoT data ends each answer with its action, often past NaVILA's 32 new tokens."""
    import pyarrow.parquet as pq

    from navila_tune.native.evaluate import EvaluateParams, evaluate

    import handoff_kit as kit

    rows = tmp_path / "heldout.parquet"
    pq.write_table(pq.read_table(kit.NAV_DATA / "heldout.parquet").slice(0, 12), rows)
    result = evaluate(EvaluateParams(load_dir=str(clean.megatron), tokenizer_dir=str(clean.source),
                                     eval_input=str(rows), output_json=str(tmp_path / "m.json"), max_new_tokens=4,
                                     navigation=True))
    total = sum(result[f"reference_navila_{r}_rate"] for r in READINGS)
    assert total == pytest.approx(1.0)
    assert result["reference_navila_misread_truncated_rate"] > 0.3  # what the user must see before NaVILA SFT
    assert result["navila_no_final_action_rate"] + result["navila_read_correctly_rate"] \
        + result["navila_misread_rate"] == pytest.approx(1.0)
