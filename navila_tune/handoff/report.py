"""The hand-off report: one item per check, each passed, failed, warned or skipped, with its fix."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
REPORT_JSON = "handoff_report.json"
REPORT_TEXT = "handoff_report.txt"


@dataclass
class Item:
    """One check's outcome. ``message`` says what was found; ``fix`` what to do (failures and warnings).

    ``seconds``: the time of the check that produced it, shared equally by the items one check yields
    (the three loss items, for example, come from one pass).
    """

    name: str
    status: str
    message: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def passed(name: str, message: str, **details: Any) -> Item:
    return Item(name, PASS, message, details=details)


def failed(name: str, message: str, fix: str, **details: Any) -> Item:
    return Item(name, FAIL, message, fix, details=details)


def warned(name: str, message: str, fix: str, **details: Any) -> Item:
    return Item(name, WARN, message, fix, details=details)


def skipped(name: str, message: str, fix: str = "", **details: Any) -> Item:
    return Item(name, SKIP, message, fix, details=details)


@dataclass
class Report:
    """Every item of one hand-off check of ``target``."""

    target: str
    items: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Item]:
        return [i for i in self.items if i.status == FAIL]

    def item(self, name: str) -> Item:
        for i in self.items:
            if i.name == name:
                return i
        raise KeyError(f"no check named {name!r}; checks: {[i.name for i in self.items]}")

    def relocate(self, old: str, new: str) -> None:
        """Rewrite paths under ``old`` as under ``new`` (a stage folder that is renamed once complete)."""
        self.target = self.target.replace(old, new)
        for i in self.items:
            i.message, i.fix = i.message.replace(old, new), i.fix.replace(old, new)

    def to_dict(self) -> dict[str, Any]:
        counts = {s: sum(i.status == s for i in self.items) for s in (PASS, FAIL, WARN, SKIP)}
        return {"target": self.target, "status": PASS if self.ok else FAIL, "counts": counts,
                "failed": [i.name for i in self.failures], "items": [asdict(i) for i in self.items]}

    def text(self) -> str:
        d = self.to_dict()
        c = d["counts"]
        lines = [f"NaVILA hand-off check of {self.target}: {d['status'].upper()} "
                 f"({c[PASS]} passed, {c[FAIL]} failed, {c[WARN]} warnings, {c[SKIP]} skipped)"]
        for i in self.items:
            lines.append(f"  [{i.status.upper():4}] {i.name}: {i.message}")
            if i.fix and i.status != PASS:
                lines.append(f"         fix: {i.fix}")
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """``handoff_report.json`` and ``handoff_report.txt`` in ``out_dir`` (each written, then renamed)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = out / REPORT_JSON, out / REPORT_TEXT
        for path, body in zip(paths, (json.dumps(self.to_dict(), indent=1, default=str), self.text())):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(body + "\n", encoding="utf-8")
            os.replace(tmp, path)
        return paths
