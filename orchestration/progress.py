"""Progress people can read: elapsed time and an estimate of what is left, on the job's per-sample log line and on a
sweep's `k/N jobs done` line; a tqdm bar only when stderr is a terminal, so that Slurm and submitit logs stay one
line per event."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counts `done` of `total` since it was made; `status()` says elapsed and, once something is done, about how
    long the rest takes at the pace so far."""

    def __init__(self, total: int, clock=time.monotonic):
        self.total, self.done, self._clock = total, 0, clock
        self._start = clock()

    def advance(self) -> None:
        self.done += 1

    def status(self) -> str:
        elapsed = self._clock() - self._start
        text = f"{duration(elapsed)} elapsed"
        left = self.total - self.done
        if self.done and left > 0:
            text += f", about {duration(elapsed / self.done * left)} left"
        return text


@contextlib.contextmanager
def terminal_bar(total: int, description: str) -> Iterator[Any]:
    """A tqdm bar on an interactive terminal (log lines printed above it), else None: a file or a pipe gets only the
    log lines."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(), tqdm(total=total, desc=description, unit="sample", leave=False) as bar:
        yield bar
