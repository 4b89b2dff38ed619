"""Progress display for long conversions: bytes written, rate, ETA and the file being written."""

from __future__ import annotations

from tqdm.auto import tqdm


class Progress:
    """One bar over all bytes a conversion writes; the postfix names the current file (k/N)."""

    def __init__(self, desc: str, total_bytes: int, n_files: int, enabled: bool = True):
        self.n_files = n_files
        self.done_files = 0
        self._current: str | None = None
        self._bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                         disable=not enabled, mininterval=0.5, dynamic_ncols=True)

    def start_files(self, names: list[str]) -> None:
        """Name the file(s) now being written (the TP ranks of a stage are written together)."""
        first = self.done_files + 1
        span = f"{first}" if len(names) == 1 else f"{first}-{first + len(names) - 1}"
        label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        self._bar.set_postfix_str(f"file {span}/{self.n_files} {label}", refresh=False)

    def end_file(self) -> None:
        self.done_files += 1

    def next_file(self, name: str) -> None:
        """For files written one after another: count the current one (if any) done, show ``name``."""
        if self._current:
            self.end_file()
        self._current = name
        self.start_files([name])

    def advance(self, nbytes: int) -> None:
        self._bar.update(nbytes)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
