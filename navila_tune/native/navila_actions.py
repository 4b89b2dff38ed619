"""NaVILA's action parser (``evaluation/vlnce_baselines/navila_trainer.py``), and answer-line helpers.

NaVILA decodes the generation with ``skip_special_tokens``, strips it, and tests these patterns in order,
case-insensitively, over the WHOLE text: ``\\bstop\\b``, ``\\bis move forward\\b``, ``\\bis turn left\\b``,
``\\bis turn right\\b``; the first that matches is the action, none is ``None`` (which NaVILA then steps
as a stop). Magnitudes come from the case-sensitive ``move forward (\\d+) cm`` / ``turn left|right (\\d+)
degree`` (defaults 25 cm / 15 degrees when absent); a value that is not a multiple of 25 (15) is snapped
to the nearest of {25, 50, 75} ({15, 30, 45}); the command runs as ``value // 25`` (``// 15``) primitive
steps. Because "stop" is tested first anywhere, reasoning that mentions stopping is read as STOP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("stop", re.compile(r"\bstop\b", re.IGNORECASE)),
    ("forward", re.compile(r"\bis move forward\b", re.IGNORECASE)),
    ("left", re.compile(r"\bis turn left\b", re.IGNORECASE)),
    ("right", re.compile(r"\bis turn right\b", re.IGNORECASE)),
)
_FORWARD = re.compile(r"move forward (\d+) cm")
_TURN = {"left": re.compile(r"turn left (\d+) degree"), "right": re.compile(r"turn right (\d+) degree")}
_STOP_WORD = ACTION_PATTERNS[0][1]


@dataclass(frozen=True)
class NavAction:
    kind: str  # stop | forward | left | right
    amount: int | None  # cm for forward, degrees for turns, None for stop
    steps: int  # primitive simulator steps NaVILA executes


def parse_navila_action(text: str) -> NavAction | None:
    """What NaVILA's evaluator would execute for this generation (None: nothing parsed)."""
    for kind, pattern in ACTION_PATTERNS:
        if pattern.search(text):
            break
    else:
        return None
    if kind == "stop":
        return NavAction("stop", None, 1)
    if kind == "forward":
        match = _FORWARD.search(text)
        value = int(match.group(1)) if match else 25
        if value % 25:
            value = min((25, 50, 75), key=lambda x: abs(x - value))
        return NavAction("forward", value, value // 25)
    match = _TURN[kind].search(text)
    value = int(match.group(1)) if match else 15
    if value % 15:
        value = min((15, 30, 45), key=lambda x: abs(x - value))
    return NavAction(kind, value, value // 15)


def final_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def answer_text(text: str, marker: str) -> str | None:
    """What follows the last ``marker`` (case-insensitive) up to the end of its line; None without marker."""
    if not marker:
        return final_line(text)
    idx = text.lower().rfind(marker.lower())
    if idx < 0:
        return None
    rest = text[idx + len(marker):]
    return rest.splitlines()[0] if rest.splitlines() else ""


def answer_line(text: str, marker: str) -> str:
    """The whole line holding the last ``marker`` (the final line when there is none)."""
    idx = text.lower().rfind(marker.lower()) if marker else -1
    if idx < 0:
        return final_line(text)
    start = text.rfind("\n", 0, idx) + 1
    end = text.find("\n", idx)
    return text[start:end if end >= 0 else len(text)].strip()


def normalise_answer(answer: str | None) -> str | None:
    if answer is None:
        return None
    return " ".join(answer.strip().strip(" .!;:,\"'").lower().split())


def stop_before_final_line(text: str) -> bool:
    """The word "stop" occurs in the lines before the final line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return any(_STOP_WORD.search(line) for line in lines[:-1])


# NaVILA's evaluator generates at most this many new tokens (navila_trainer.py, ``max_new_tokens=32``).
NAVILA_MAX_NEW_TOKENS = 32
# How NaVILA's evaluator reads a generation, compared with the final action the generation itself states.
READINGS = ("read_correctly", "misread_stop", "misread_truncated", "misread_other", "no_final_action")


def navila_reading(text: str, seen: str, marker: str) -> tuple[str, NavAction | None, NavAction | None]:
    """(reading, the stated final action, what NaVILA executes) for one generation.

    ``text`` is the whole generation, ``seen`` what NaVILA would see of it: its first
    ``NAVILA_MAX_NEW_TOKENS`` new tokens, decoded. The stated action is the parse of the answer line
    (the line holding the last ``marker``, else the final line). Readings, in this order:
    ``no_final_action`` (the answer line states none), ``read_correctly`` (NaVILA executes it),
    ``misread_stop`` (NaVILA executes STOP: "stop" occurs elsewhere, and it is tested first over the
    whole text), ``misread_truncated`` (the answer line lies beyond the first 32 new tokens),
    ``misread_other`` (e.g. an earlier "is move forward" or magnitude in the reasoning wins).
    """
    stated = parse_navila_action(answer_line(text, marker))
    executed = parse_navila_action(seen)
    if stated is None:
        return "no_final_action", None, executed
    if executed == stated:
        return "read_correctly", stated, executed
    if executed is not None and executed.kind == "stop":
        return "misread_stop", stated, executed
    if answer_line(text, marker) not in seen:
        return "misread_truncated", stated, executed
    return "misread_other", stated, executed
