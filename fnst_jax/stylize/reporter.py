"""What a stylize run tells its user: progress, one line per problem, the summary.

`Reporter` draws tqdm progress bars on a terminal and prints plain lines otherwise; errors
are always printed. It counts what was done, failed and skipped (with the reasons) for the
summary line. Planning the jobs (`inputs`) and running them (`run`) report through it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO


class Reporter:
    """Progress and messages: tqdm on a TTY, plain lines otherwise, errors always."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = not quiet and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.failed, self.skipped = 0, 0, 0
        self.skip_reasons: dict[str, int] = {}
        self._bars: list[Any] = []

    def _print(self, message: str) -> None:
        if self._bars:
            from tqdm import tqdm

            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if not self.quiet and not self.interactive:
            self._print(message)

    def error(self, path: str | os.PathLike, reason: str) -> None:
        self.failed += 1
        reason = reason.removeprefix(f"{path}: ")
        self._print(f"error: {path}: {reason}")

    def skip(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.skipped += 1
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
        if not self.quiet:
            self._print(f"skipped: {path}: {reason}{detail}")

    def success(self, source: Path, destination: Path, seconds: float | None = None) -> None:
        self.done += 1
        timing = f" ({seconds:.2f} s)" if seconds is not None else ""
        self.info(f"{source} -> {destination}{timing}")

    def bar(self, total: int | None, unit: str, description: str) -> Any:
        """A tqdm progress bar (disabled unless the stream is a terminal)."""
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit=unit,
            desc=description,
            disable=not self.interactive,
            file=self.stream,
            leave=False,
            dynamic_ncols=True,
        )
        self._bars.append(bar)
        return bar

    def close_bar(self, bar: Any) -> None:
        bar.close()
        if bar in self._bars:
            self._bars.remove(bar)

    def summary(self, total: int, seconds: float) -> str:
        parts = []
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            reasons = ", ".join(f"{k}" for k in self.skip_reasons)
            parts.append(f"{self.skipped} skipped: {reasons}")
        details = f" ({', '.join(parts)})" if parts else ""
        return f"stylized {self.done} of {total} inputs{details} in {seconds:.1f} s"
