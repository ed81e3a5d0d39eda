"""Progress a person can follow, on a terminal and in a log.

On a terminal `track` draws a tqdm bar. Anywhere else (CI logs, a notebook kernel run by
papermill) a bar's escape codes are noise, so it prints plain lines instead, on stderr:

    [wspec] spectra tiny.en: 12/42 clips (29 %), 1m02s elapsed, ETA 2m35s

one when the work starts, then at most one every `every_s` seconds, and one at the end.
`wspec.book` forwards exactly these lines (`is_progress_line`) from the per-model notebooks
to the terminal and strips them from the pages, so the book does not show them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

PREFIX = "[wspec] "
#: Seconds between two plain progress lines: often enough to see a run is alive.
EVERY_S = 20.0


def is_progress_line(line: str) -> bool:
    """True for a line that `track` printed."""
    return line.startswith(PREFIX)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(desc: str, done: int, total: int, elapsed: float, unit: str) -> str:
    """One plain progress line; the ETA assumes the remaining items take as long as the done."""
    share = f" ({100 * done / total:.0f} %)" if total else ""
    line = f"{PREFIX}{desc}: {done}/{total} {unit}{share}, {_clock(elapsed)} elapsed"
    if 0 < done < total:
        line += f", ETA {_clock(elapsed / done * (total - done))}"
    return line


def _bars_wanted(stream: TextIO) -> bool:
    return stream.isatty() and os.environ.get("TQDM_DISABLE", "") in ("", "0")


def track(
    items: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "items",
    enabled: bool = True,
    stream: TextIO | None = None,
    every_s: float = EVERY_S,
) -> Iterator[T]:
    """Yield `items`, showing progress as a bar (terminal) or as plain lines (elsewhere)."""
    stream = stream or sys.stderr
    items = list(items) if total is None else items
    total = len(items) if total is None else total
    if not enabled:
        yield from items
        return
    if _bars_wanted(stream):
        yield from tqdm(items, desc=desc, total=total, unit=unit, file=stream)
        return
    start = last = time.monotonic()
    print(progress_line(desc, 0, total, 0.0, unit), file=stream, flush=True)
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s and done < total:
            print(progress_line(desc, done, total, now - start, unit), file=stream, flush=True)
            last = now
    print(progress_line(desc, done, total, time.monotonic() - start, unit), file=stream, flush=True)
