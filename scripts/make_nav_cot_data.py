"""Write the synthetic bicycle-navigation chain-of-thought dataset ``nav_cot_tiny`` (Alpaca-style parquet).

Each row is one decision of a bicycle agent following a NaVILA-style route instruction:

- ``instruction``: a route of a ride leg and/or a turn leg, in either order, usually ending with a stop
  clause ("Pedal forward 2 m, then veer left by 90 degrees and halt at the gate.");
- ``input``: the situation: what the rider has done so far, sometimes with something it sees;
- ``output``: a short step-by-step reasoning that ends with one final line in NaVILA's action format
  ("The next action is move forward 75 cm." / "... turn left 45 degrees." / "... stop.").

A NaVILA command moves at most 75 cm or turns at most 45 degrees (3 simulator primitives of 25 cm / 15
degrees), so a 2 m ride is three commands (75 + 75 + 50 cm) and a 90 degree turn is two (45 + 45); the
reasoning works out what remains of the current leg.

The reasoning never contains "stop" (in any case, as a substring) unless the answer is stop, because NaVILA's
parser maps any output containing "stop" to STOP.

The held-out split tests composition: each held-out row's answer depends on a combination of parts (ride verb
with distance, turn verb with angle, stop phrasing with landmark, route shape with amount) that never occurs
in the training split; every part itself does occur in training.

Usage: ``python scripts/make_nav_cot_data.py [--out-dir DIR] [--seed N]``. Deterministic: the same seed writes
byte-identical files.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "navila_tune" / "assets" / "nav_cot_tiny"
DEFAULT_SEED = 20240611
NUM_TRAIN = 4000
NUM_HELDOUT = 300
ANSWER_MARKER = "The next action is"
COLUMNS = ("instruction", "input", "output")

MAX_MOVE_CM = 75  # NaVILA: forward 25/50/75 cm
MAX_TURN_DEG = 45  # NaVILA: turn 15/30/45 degrees
RIDE_CM = (50, 75, 100, 150, 200, 250, 300)
TURN_DEG = (15, 30, 45, 60, 90)

FORWARD_VERBS = (
    "ride forward", "pedal forward", "go straight", "roll ahead", "cycle ahead", "keep going straight",
    "head forward",
)
TURN_VERBS = ("turn", "veer", "bear", "swing", "steer", "rotate")
ANGLE_PHRASES = ("{n} degrees", "by {n} degrees")
RIDE_SUFFIXES = ("past the {lm}", "towards the {lm}")
TURN_SUFFIXES = ("at the {lm}", "after the {lm}")
STOP_PHRASES = (
    "stop at the {lm}", "stop next to the {lm}", "come to a stop by the {lm}", "halt at the {lm}",
    "wait at the {lm}", "park beside the {lm}", "finish at the {lm}",
)
LANDMARKS = (
    "gate", "bench", "fountain", "bridge", "kiosk", "statue", "fence", "bakery", "garden", "tunnel",
    "playground", "mailbox", "corner", "crosswalk", "church", "library",
)
STOP_WEIGHT = 0.6  # how often the rider is at the end of the route, relative to being on a leg
HELDOUT_PER_ACTION = 45  # at most this many held-out rows per answer, so that no answer dominates
ORDERS = ("FT", "FT", "TF", "TF", "F", "T")  # F ride leg, T turn leg (weights by repetition)
CONNECTORS = (", then ", ", ", " and then ")
LAST_CONNECTORS = (" and ", ", then ", " and then ")
NOTHING_DONE = ("Nothing is done yet.", "I am at the start.", "I have not moved yet.")
SCENES = (
    "The path is clear.", "A car is parked nearby.", "People are walking by.", "It is raining.",
    "A dog runs past.", "The {lm} is ahead.",
)

# Held-out combinations: they never occur in training (anywhere in a route); each held-out row's answer
# depends on one of them.
HELDOUT_RIDES = {  # (forward verb, ride cm)
    ("ride forward", 150), ("pedal forward", 300), ("go straight", 100), ("roll ahead", 250),
    ("cycle ahead", 200), ("keep going straight", 75), ("head forward", 50),
}
HELDOUT_TURNS = {  # (turn verb, degrees), in either direction
    ("turn", 45), ("veer", 15), ("bear", 90), ("swing", 60), ("steer", 30), ("rotate", 90),
}
HELDOUT_STOPS = {  # (stop phrase, landmark)
    ("stop at the {lm}", "bridge"), ("stop next to the {lm}", "kiosk"), ("come to a stop by the {lm}", "gate"),
    ("halt at the {lm}", "fountain"), ("wait at the {lm}", "statue"), ("park beside the {lm}", "bench"),
    ("finish at the {lm}", "library"),
}
HELDOUT_SHAPES = {  # (leg order, leg kind, amount): this amount never appears with this route shape
    ("F", "F", 150), ("T", "T", 60), ("TF", "T", 90),
}

STOP_PATTERN = re.compile("stop", re.IGNORECASE)
ACTION_LINE = re.compile(
    r"^The next action is (move forward (25|50|75) cm|turn (left|right) (15|30|45) degrees|stop)\.$"
)
NAVILA_KINDS = (("move forward", re.compile("is move forward", re.IGNORECASE)),
                ("turn left", re.compile("is turn left", re.IGNORECASE)),
                ("turn right", re.compile("is turn right", re.IGNORECASE)))
NAVILA_AMOUNT = re.compile(r"(?:move forward|turn left|turn right)\s+(\d+)", re.IGNORECASE)


def navila_action(text: str) -> str | None:
    """What NaVILA's parser reads from a whole output: "stop" anywhere wins, then the first action phrase,
    with the first magnitude in the text (None when nothing matches)."""
    if STOP_PATTERN.search(text):
        return "stop"
    for kind, pattern in NAVILA_KINDS:
        if pattern.search(text):
            amount = NAVILA_AMOUNT.search(text)
            unit = " cm" if kind == "move forward" else " degrees"
            return f"{kind} {amount.group(1)}{unit}" if amount else kind
    return None


def action_line(action: str) -> str:
    """The final line of every response, e.g. "The next action is turn left 30 degrees."."""
    return f"{ANSWER_MARKER} {action}."


def distance_text(cm: int, rng: random.Random | None = None) -> str:
    """"50 cm", "1.5 m"; with ``rng`` also the long unit names ("centimetres", "metres")."""
    if cm < 100:
        unit = rng.choice(("cm", "centimetres")) if rng else "cm"
        return f"{cm} {unit}"
    metres = f"{cm / 100:g}"
    unit = rng.choice(("m", "metres" if cm != 100 else "metre")) if rng else "m"
    return f"{metres} {unit}"


def split_into_commands(total: int, largest: int) -> list[int]:
    """A leg as NaVILA commands: as many of the largest as fit, then the rest (2 m -> 75, 75, 50)."""
    out = []
    while total > 0:
        out.append(min(largest, total))
        total -= out[-1]
    return out


@dataclass(frozen=True)
class Route:
    order: str  # "FT", "TF", "F" or "T"
    ride_verb: str
    ride_cm: int
    turn_verb: str
    direction: str
    turn_deg: int
    stop_phrase: str | None  # None: the route has no explicit stop clause
    landmark: str

    def heldout_parts(self) -> dict[str, bool]:
        """For each leg kind in the route, whether it uses a held-out combination."""
        parts = {}
        if "F" in self.order:
            parts["F"] = ((self.ride_verb, self.ride_cm) in HELDOUT_RIDES
                          or (self.order, "F", self.ride_cm) in HELDOUT_SHAPES)
        if "T" in self.order:
            parts["T"] = ((self.turn_verb, self.turn_deg) in HELDOUT_TURNS
                          or (self.order, "T", self.turn_deg) in HELDOUT_SHAPES)
        parts["S"] = self.stop_phrase is not None and (self.stop_phrase, self.landmark) in HELDOUT_STOPS
        return parts


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str
    action: str  # the intended action, e.g. "turn left 45 degrees"
    uses_heldout_part: bool  # a held-out combination occurs anywhere in the route
    answer_needs_heldout_part: bool  # the answer depends on a held-out combination


def sample_route(rng: random.Random) -> Route:
    return Route(
        order=rng.choice(ORDERS),
        ride_verb=rng.choice(FORWARD_VERBS),
        ride_cm=rng.choice(RIDE_CM),
        turn_verb=rng.choice(TURN_VERBS),
        direction=rng.choice(("left", "right")),
        turn_deg=rng.choice(TURN_DEG),
        stop_phrase=rng.choice(STOP_PHRASES) if rng.random() < 0.75 else None,
        landmark=rng.choice(LANDMARKS),
    )


def instruction_text(rng: random.Random, route: Route) -> str:
    clauses = []
    for leg in route.order:
        if leg == "F":
            clause = f"{route.ride_verb} {distance_text(route.ride_cm, rng)}"
            if rng.random() < 0.25:
                clause += " " + rng.choice(RIDE_SUFFIXES).format(lm=rng.choice(LANDMARKS))
        else:
            angle = rng.choice(ANGLE_PHRASES).format(n=route.turn_deg)
            clause = f"{route.turn_verb} {route.direction} {angle}"
            if rng.random() < 0.25:
                clause += " " + rng.choice(TURN_SUFFIXES).format(lm=rng.choice(LANDMARKS))
        clauses.append(clause)
    if route.stop_phrase is not None:
        clauses.append(route.stop_phrase.format(lm=route.landmark))
    text = clauses[0]
    for i, clause in enumerate(clauses[1:], start=1):
        text += rng.choice(LAST_CONNECTORS if i == len(clauses) - 1 else CONNECTORS) + clause
    return text[0].upper() + text[1:] + "."


def situation_text(rng: random.Random, route: Route, rode_cm: int, turned_deg: int) -> str:
    done = []
    for leg in route.order:
        if leg == "F" and rode_cm:
            done.append(f"rode {distance_text(rode_cm)}")
        if leg == "T" and turned_deg:
            done.append(f"turned {route.direction} {turned_deg} degrees")
    sentences = ["So far I " + " and ".join(done) + "." if done else rng.choice(NOTHING_DONE)]
    if rng.random() < 0.3:
        sentences.append(rng.choice(SCENES).format(lm=rng.choice(LANDMARKS)))
        rng.shuffle(sentences)
    return " ".join(sentences)


def reasoning(route: Route, leg: str, rode_cm: int, turned_deg: int) -> tuple[str, str]:
    """(chain of thought, next action) when the rider is at ``leg`` with this much done.

    The thought goes through the legs in order, one line each ("Ride: 2 m of 2 m done, 0 cm to go."), up to
    the first unfinished one ("Left turn: 45 of 90 degrees done, 45 degrees to go."), then says how much of
    that one command covers. It never contains "move forward N" or "turn left/right N" (NaVILA reads the first
    such magnitude in the output), nor "stop" unless the answer is stop.
    """
    lines = []
    for kind in route.order:
        if kind == "F":
            to_go = route.ride_cm - rode_cm
            lines.append(f"Ride: {distance_text(rode_cm)} of {distance_text(route.ride_cm)} done, "
                         f"{distance_text(to_go)} to go.")
            largest, largest_text, command = MAX_MOVE_CM, distance_text(MAX_MOVE_CM), "move"
        else:
            to_go = route.turn_deg - turned_deg
            lines.append(f"{route.direction.capitalize()} turn: {turned_deg} of {route.turn_deg} degrees done, "
                         f"{to_go} degrees to go.")
            largest, largest_text, command = MAX_TURN_DEG, f"{MAX_TURN_DEG} degrees", "turn"
        if to_go == 0:
            continue
        lines.append(f"One {command} covers " + ("all of it." if to_go <= largest else f"at most {largest_text}."))
        step = min(to_go, largest)
        action = f"move forward {step} cm" if kind == "F" else f"turn {route.direction} {step} degrees"
        return " ".join(lines), action
    end = f"The route ends at the {route.landmark}" if route.stop_phrase else "Nothing else remains"
    lines.append(f"Every leg is done. {end}, so I stop.")
    return " ".join(lines), "stop"


def sample_example(rng: random.Random) -> Example:
    route = sample_route(rng)
    legs = route.order + "S"  # the leg the rider is on: ride, turn or the final stop (less often)
    leg = rng.choices(legs, weights=[STOP_WEIGHT if k == "S" else 1.0 for k in legs])[0]
    finished_legs = route.order if leg == "S" else route.order[:route.order.index(leg)]
    rode_cm = route.ride_cm if "F" in finished_legs else 0
    turned_deg = route.turn_deg if "T" in finished_legs else 0
    if leg == "F":
        moves = split_into_commands(route.ride_cm, MAX_MOVE_CM)
        rode_cm = sum(moves[:rng.randrange(len(moves))])
    elif leg == "T":
        turns = split_into_commands(route.turn_deg, MAX_TURN_DEG)
        turned_deg = sum(turns[:rng.randrange(len(turns))])
    thought, action = reasoning(route, leg, rode_cm, turned_deg)
    heldout = route.heldout_parts()
    return Example(
        instruction=instruction_text(rng, route),
        input=situation_text(rng, route, rode_cm, turned_deg),
        output=f"{thought}\n{action_line(action)}",
        action=action,
        uses_heldout_part=any(heldout.values()),
        answer_needs_heldout_part=heldout[leg],
    )


def build_splits(seed: int = DEFAULT_SEED, num_train: int = NUM_TRAIN,
                 num_heldout: int = NUM_HELDOUT) -> tuple[list[Example], list[Example]]:
    """Sample (train, heldout). Train rows use no held-out part; every held-out row's answer needs one."""
    rng = random.Random(seed)
    train: list[Example] = []
    heldout: list[Example] = []
    seen: set[tuple[str, str]] = set()
    heldout_per_action: dict[str, int] = {}
    while len(train) < num_train or len(heldout) < num_heldout:
        example = sample_example(rng)
        key = (example.instruction, example.input)
        if key in seen:
            continue
        if not example.uses_heldout_part and len(train) < num_train:
            train.append(example)
            seen.add(key)
        elif (example.answer_needs_heldout_part and len(heldout) < num_heldout
              and heldout_per_action.get(example.action, 0) < HELDOUT_PER_ACTION):
            heldout.append(example)
            heldout_per_action[example.action] = heldout_per_action.get(example.action, 0) + 1
            seen.add(key)
    check_splits(train, heldout)
    return train, heldout


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_splits(train: list[Example], heldout: list[Example]) -> None:
    """The rules the dataset promises; raises ValueError naming the first row that breaks one."""
    for part in LANDMARKS + SCENES + FORWARD_VERBS + TURN_VERBS + RIDE_SUFFIXES + TURN_SUFFIXES + NOTHING_DONE:
        require(not STOP_PATTERN.search(part), f"part {part!r} contains 'stop'")
    for split, rows in (("train", train), ("heldout", heldout)):
        for i, e in enumerate(rows):
            lines = e.output.split("\n")
            match = ACTION_LINE.match(lines[-1])
            require(len(lines) == 2 and bool(match), f"{split}[{i}]: last line is not one NaVILA action: {e.output!r}")
            require(match.group(1) == e.action, f"{split}[{i}]: final line {lines[-1]!r} != action {e.action!r}")
            require(bool(STOP_PATTERN.search(e.output)) == (e.action == "stop"),
                    f"{split}[{i}]: 'stop' in the reasoning of a non-stop answer, or missing: {e.output!r}")
            require(navila_action(e.output) == e.action,
                    f"{split}[{i}]: NaVILA would read {navila_action(e.output)!r}, not {e.action!r}")
    train_instructions = {e.instruction for e in train}
    leaked = [e.instruction for e in heldout if e.instruction in train_instructions]
    require(not leaked, f"held-out instructions also in train: {leaked[:3]}")


def write_parquet(rows: list[Example], path: Path) -> None:
    """Write rows with columns instruction/input/output, atomically (temp name, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: pa.array([getattr(r, c) for r in rows], type=pa.string()) for c in COLUMNS})
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    train, heldout = build_splits(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(train, args.out_dir / "train.parquet")
    write_parquet(heldout, args.out_dir / "heldout.parquet")
    print(f"wrote {len(train)} train and {len(heldout)} held-out rows to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
