"""What produced this copy of the book, and how a reader reproduces each figure and table.

Three readers' questions, one place to answer them:

* *Which build is this?* `build_identity` (commit + UTC build time). `setup` makes this module
  a Sphinx extension (listed in `_config.yml`) that puts it on the PDF title page (Sphinx's
  ``release`` line) and in the ``{{ build_identity }}`` substitution the landing page uses.
  It is computed by Sphinx at build time, not in a chapter kernel, so the execution cache can
  never show an older commit.
* *How do I get this figure or table myself?* `reproduce` writes the note under it: the
  command, the chapter, and the cached data it was computed from.
* *What did each model run use?* `run_table` for the status page.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pandas as pd

#: Substitution name of the build identity in the book's Markdown (``{{ build_identity }}``).
SUBSTITUTION = "build_identity"


def git_commit(root: Path | None = None) -> str:
    """Short commit of the checkout at `root`, marked if the tree has uncommitted changes."""
    cwd = root or Path.cwd()
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=cwd
    )
    if done.returncode != 0:
        return "no git commit"
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=cwd
    )
    return done.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def build_time() -> dt.datetime:
    """Now in UTC, or SOURCE_DATE_EPOCH (the reproducible-builds convention) when set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc)


def build_identity(root: Path | None = None) -> str:
    """ "commit 1a2b3c4d5e6f, built 2026-12-01 13:05 UTC": which build a reader holds."""
    return f"commit {git_commit(root)}, built {build_time():%Y-%m-%d %H:%M} UTC"


def run_data(runs: dict, models: list[str] | None = None) -> str:
    """The cached model runs a result was computed from, as Markdown (for `reproduce`)."""
    chosen = [r for r in runs["runs"] if models is None or r["model"] in models]
    named = ", ".join(f"`{r['model']}` (cache {r['cache_key'][:12]})" for r in chosen)
    return (
        f"model run{'s' if len(chosen) != 1 else ''} {named} on stimulus set "
        f"`{runs['stimulus_set']}` (`book/runs/runs.json`)"
    )


def reproduce(chapter: str, *, command: str | None = None, data: str | None = None):
    """The note under a figure or table: command, chapter and data that produced it.

    `chapter` is the source file (e.g. "book/results.md"); `command` a shell command that
    prints the same numbers, if there is one; `data` what the cell read (see `run_data`).
    Returns IPython Markdown, shown in HTML and, as text, in the PDF.
    """
    from IPython.display import Markdown

    parts = [f"`{command}`"] if command else []
    parts.append(f"chapter `{chapter}`")
    if data:
        parts.append(f"data: {data}")
    return Markdown(f"*Reproduce:* {' · '.join(parts)}.")


def run_table(runs: dict) -> pd.DataFrame:
    """One row per model run: parameters, stimulus-set hash, code hash and wall time.

    The code hash is the hash of every `wspec` source file and pyproject.toml the runs were
    keyed to; the cache key adds the chapter and the parameters. A runs.json written before
    the stimulus-set hash was recorded says so rather than guessing.
    """
    rows = []
    for r in runs["runs"]:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items() if k != "out_dir")
        rows.append(
            {
                "model": r["model"],
                "parameters": params,
                "stimulus-set hash": (r.get("stimulus_hash") or "not recorded")[:16],
                "code hash": runs["source_hash"][:16],
                "cache key": r["cache_key"],
                "wall time (s)": r["seconds"],
            }
        )
    return pd.DataFrame(rows).set_index("model")


def _on_config(app, config) -> None:
    identity = build_identity(Path(app.srcdir))
    config.release = config.version = identity
    config.latex_elements = {**(config.latex_elements or {}), "releasename": "Build:"}
    config.myst_substitutions = {**(config.myst_substitutions or {}), SUBSTITUTION: identity}


def setup(app) -> dict:
    """Sphinx extension: the build identity on the PDF title page and the landing page."""
    app.connect("config-inited", _on_config)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
