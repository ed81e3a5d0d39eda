"""Where wspec keeps its caches, and how it writes files without leaving partial ones."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import platformdirs


def safe_name(name: str) -> str:
    """`name` with every run of characters outside [A-Za-z0-9._-] replaced by "_": the one
    rule for putting a model spec or a stimulus id into a file name (a hub id's "/" or a
    control's ":" must not make folders or drive letters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def cache_dir(*parts: str) -> Path:
    """Root of wspec's cache (override with WSPEC_CACHE), created on demand.

    Conversions, stimuli and run tables are expensive; keeping them per user
    (not per checkout) lets the book and the tests share them.
    """
    root = os.environ.get("WSPEC_CACHE") or platformdirs.user_cache_dir("wspec")
    path = Path(root).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only on success.

    A crash or Ctrl-C mid-write therefore never leaves a truncated cache file that a
    later run would trust.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))
