"""NaVILA's action rules, answer extraction, and the evaluation scores built on them."""

from __future__ import annotations

import math

import pytest
import torch

from navila_tune.native.evaluate import score_generations, teacher_forced_loss
from navila_tune.native.navila_actions import (NavAction, answer_text, normalise_answer, parse_navila_action,
                                               stop_before_final_line)

MARK = "The next action is"


@pytest.mark.parametrize("text,expected", [
    ("The next action is move forward 50 cm.", NavAction("forward", 50, 2)),
    ("The next action is move forward 60 cm.", NavAction("forward", 50, 2)),  # snapped to 25/50/75
    ("The next action is move forward 100 cm.", NavAction("forward", 100, 4)),  # multiples of 25 are kept
    ("The next action is move forward.", NavAction("forward", 25, 1)),  # default 25 cm
    ("the NEXT action IS TURN LEFT 30 degrees", NavAction("left", 15, 1)),  # magnitude regex is case-sensitive
    ("The next action is turn left 40 degrees.", NavAction("left", 45, 3)),
    ("The next action is turn right 15 degrees.", NavAction("right", 15, 1)),
    ("The next action is stop.", NavAction("stop", None, 1)),
    ("I should not stop yet.\nThe next action is move forward 75 cm.", NavAction("stop", None, 1)),  # stop first
    ("The bus stopsign.\nThe next action is turn right 30 degrees.", NavAction("right", 30, 2)),  # \bstop\b
    ("I will go forward 50 cm.", None),  # needs "is move forward"
    ("", None),
])
def test_navila_parser_follows_navila_trainer(text, expected):
    assert parse_navila_action(text) == expected


def test_answer_is_what_follows_the_last_marker_on_its_line():
    text = "The next action is wrong.\nReasoning...\nThe next action is Turn Left 30 degrees.  \n"
    assert answer_text(text, MARK) == " Turn Left 30 degrees.  "
    assert normalise_answer(answer_text(text, MARK)) == "turn left 30 degrees"
    assert answer_text("no marker here", MARK) is None
    assert answer_text("a\nlast line\n", "") == "last line"
    assert stop_before_final_line("Do not stop here.\nThe next action is move forward 25 cm.")
    assert not stop_before_final_line("Keep going.\nThe next action is stop.")


def test_scores_count_exact_answers_parses_and_stop_hazards():
    refs = ["Ahead.\nThe next action is move forward 50 cm.", "Left.\nThe next action is turn left 30 degrees.",
            "Here.\nThe next action is stop.", "Right.\nThe next action is turn right 45 degrees."]
    gens = ["Ahead.\nThe next action is move forward 50 cm",  # exact (punctuation ignored)
            "I will not stop.\nThe next action is turn left 30 degrees.",  # exact, but NaVILA reads STOP
            "Here, stop.\nThe next action is stop.",  # stop everywhere: no hazard
            "Going right somewhere."]  # no marker, no parse
    rows, scores = score_generations(gens, refs, MARK, navigation=None)
    assert scores["navigation"] is True
    assert scores["answer_accuracy"] == 0.75 and scores["answer_found_rate"] == 0.75
    assert scores["navila_parse_rate"] == 0.75
    assert scores["navila_action_accuracy"] == 0.5  # row 1 parses as stop, not turn left
    assert scores["stop_hazard_count"] == 1 and rows[1]["stop_hazard"]
    _, plain = score_generations(["x\nfinal"], ["y\nfinal"], MARK, navigation=None)
    assert plain["navigation"] is False and plain["answer_accuracy"] == 1.0 and "navila_parse_rate" not in plain


def test_teacher_forced_loss_is_the_token_mean_over_responses(tiny):
    from navila_tune.native.generate import load_for_inference

    model, _ = load_for_inference(str(tiny.base), None, torch.device("cpu"))
    prompts, targets = [[1, 2, 3], [4, 5, 6, 7, 8]], [[9, 10], [11, 12, 13]]
    samples = [(p + t, [-100] * len(p) + t) for p, t in zip(prompts, targets)]
    loss, count, overlong = teacher_forced_loss(model, samples, seq_length=64, batch_size=2,
                                                device=torch.device("cpu"))
    total = 0.0
    with torch.no_grad():
        for p, t in zip(prompts, targets):
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + t])).logits[0], -1)
            total -= sum(float(logp[len(p) - 1 + k, tok]) for k, tok in enumerate(t))
    assert count == 5 and overlong == 0
    assert loss == pytest.approx(total / 5, rel=1e-5)
    _, count, overlong = teacher_forced_loss(model, samples, seq_length=6, batch_size=2,
                                             device=torch.device("cpu"))
    assert (count, overlong) == (2, 1)
    assert math.isfinite(loss)
