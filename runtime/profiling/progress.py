"""A text progress bar on stderr for long profiling runs (tqdm is not a runtime dependency).

On a terminal the bar redraws in place; when stderr is a file or pipe (CI logs) it writes one line when
the phase ends, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, *, enabled: bool = True, stream: TextIO | None = None):
        self.label, self.total, self.done = label, max(total, 1), 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.start = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        if self.live:
            filled = int(30 * self.done / self.total)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            prefix = "\r" if self.live else ""
            self.stream.write(f"{prefix}{self.label}: {self.done}/{self.total} in "
                              f"{time.perf_counter() - self.start:.1f} s{' ' * 20}\n")
            self.stream.flush()
