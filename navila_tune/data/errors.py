"""The one exception the data package raises for bad input or bad settings."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data settings or bad input data. The message names the key/file, the value and the fix."""

    @classmethod
    def collect(cls, problems: list[str]) -> "DataError":
        """One error listing every problem, one per line."""
        if len(problems) == 1:
            return cls(problems[0])
        return cls(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
