"""The data report: what happened to every row, written next to the output and summarised on the console."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .rows import BAD_ROW_REASONS, DROP_REASONS

REPORT_VERSION = 1


def length_stats(values: np.ndarray) -> dict[str, float | int]:
    if len(values) == 0:
        return {"count": 0}
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    return {"count": int(len(values)), "mean": round(float(values.mean()), 2), "p50": float(p50),
            "p90": float(p90), "p95": float(p95), "p99": float(p99), "min": int(values.min()),
            "max": int(values.max())}


@dataclass
class DataReport:
    status: str  # "ok" | "failed"
    output_prefix: str
    input: dict[str, Any]
    settings: dict[str, Any]
    rows_read: int = 0
    rows_written: int = 0  # samples written (packed rows hold several); on failure: samples kept, none written
    sequences_written: int = 0  # sequences in each indexed file (= rows_written without packing)
    dropped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})
    bad_rows: int = 0  # rows dropped for a BAD_ROW_REASONS reason (over-long rows are not "bad")
    bad_row_fraction: float = 0.0
    truncated: int = 0  # written samples that lost tokens to truncation
    all_labels_masked: int = 0  # written samples with no trained token
    tokens: dict[str, Any] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=dict)
    chat_template: dict[str, Any] = field(default_factory=dict)
    packing: dict[str, Any] | None = None
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    version: int = REPORT_VERSION

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dropped_total"] = self.dropped_total
        return out

    def write(self, path: str) -> None:
        """Atomic write (temp file + rename)."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".json", dir=folder)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)

    def summary(self, report_file: str | None = None) -> str:
        lines = []
        secs = self.timing.get("total_s", 0.0)
        speed = ""
        if secs:
            speed = (f" in {secs:.1f} s ({self.rows_read / secs:,.0f} rows/s, "
                     f"{self.tokens.get('tokenized', 0) / secs:,.0f} tokens/s)")
        if self.status == "ok":
            lines.append(f"preprocess ok: {self.rows_read} rows read -> {self.rows_written} samples written "
                         f"({self.sequences_written} sequences in each indexed file){speed}")
        else:
            lines.append(f"preprocess FAILED: {self.rows_read} rows read, {self.rows_written} samples passed the "
                         f"filters, nothing was written{speed}")
        drops = ", ".join(f"{r} {n}" for r, n in self.dropped.items() if n) or "none"
        lines.append(f"  dropped {self.dropped_total}: {drops}; bad rows {self.bad_rows} = "
                     f"{self.bad_row_fraction:.2%} (limit {self.settings.get('max_bad_row_fraction', 0):.2%})")
        ans = self.answer
        lines.append(f"  truncated {self.truncated}; all labels -100: {self.all_labels_masked}; answer (final line) "
                     f"cut by truncation: {ans.get('cut', 0)} ({ans.get('cut_share', 0.0):.2%} of written)")
        tok = self.tokens
        parts = []
        for name in ("prompt", "response", "total"):
            st = tok.get(name) or {}
            if st.get("count"):
                parts.append(f"{name} p50/p95/max {st['p50']:.0f}/{st['p95']:.0f}/{st['max']}")
        if parts:
            lines.append("  tokens " + " | ".join(parts) + f" (seq_length {self.settings.get('seq_length')})")
        if self.packing:
            lines.append(f"  packed {self.packing['samples']} samples into {self.packing['rows']} rows, "
                         f"fill {self.packing['fill']:.1%}")
        ct = self.chat_template
        if ct:
            line = f"  chat template check: {ct.get('status')}"
            if ct.get("status") == "mismatch":
                m = ct["first_mismatch"]
                line += (f" ({m['what']} of {m['source']}, first difference at token {m['position']}: ours "
                         f"{m['ours_text']!r} vs tokenizer's {m['theirs_text']!r})")
            elif ct.get("checked"):
                line += f" ({ct['checked']} conversations)"
            if ct.get("detail"):
                line += f": {ct['detail']}"
            lines.append(line)
        for reason in BAD_ROW_REASONS + ("overlong",):
            for ex in self.examples.get(reason, [])[:3]:
                lines.append(f"  {reason}: row {ex['row']}: {ex['detail']}")
        if self.failure:
            lines.append(f"  failure: {self.failure}")
        if report_file:
            lines.append(f"  report: {report_file}")
        return "\n".join(lines)
