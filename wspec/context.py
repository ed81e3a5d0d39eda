"""One object per book build: what every cross-model chapter starts from.

The chapters used to repeat a preamble (load the runs, pick the resample count, drop the
untrained controls, load the outputs, pick the control) and to recompute Table 1's deltas
each on its own. `context()` does that once: the same runs, the same resample count, the same
control and the *same* delta table on every page, so a number shown on two pages is one
number. The delta table is cached (`wspec.cache.DELTAS`), keyed by the hash of
``runs.json`` and the code of `wspec.stats`, so the second chapter of a build reads it
instead of bootstrapping again.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wspec import cache as wcache
from wspec import crossmodel as xm
from wspec import stats
from wspec.book import MANIFEST_NAME, RUNS_DIR, find_root, load_runs, resample_count
from wspec.specs import trained_models
from wspec.stimuli import load_manifest

TABLE1_K = 10  # Table 1 reports N_eff and the other metrics over the top ten eigenvalues


@dataclass(frozen=True)
class BookContext:
    """The build's runs and the choices every chapter shares (see the module docstring)."""

    runs: dict
    runs_hash: str  # sha256 of runs.json: what the cached tables are keyed on

    @property
    def reduced(self) -> bool:
        return bool(self.runs["reduced"])

    @property
    def set_name(self) -> str:
        return str(self.runs["stimulus_set"])

    @property
    def n_resamples(self) -> int:
        """Bootstrap and permutation draws per cell, the same on every page."""
        return resample_count(self.reduced)

    @property
    def models(self) -> list[str]:
        return xm.run_models(self.runs)

    @property
    def trained(self) -> list[str]:
        """The trained models; untrained runs are controls (`wspec.specs`)."""
        return trained_models(self.models)

    @property
    def control(self) -> str:
        """The control of every broad clean-vs-stressed comparison (`crossmodel.BROAD_CONTROL`)."""
        return xm.BROAD_CONTROL

    @functools.cached_property
    def results(self) -> pd.DataFrame:
        return xm.run_outputs(self.runs, "spectra")

    @functools.cached_property
    def labels(self) -> pd.DataFrame:
        return xm.run_outputs(self.runs, "labels")

    @functools.cached_property
    def decodes(self) -> pd.DataFrame:
        return xm.run_outputs(self.runs, "decodes")

    @functools.cached_property
    def stimuli(self) -> pd.DataFrame:
        return load_manifest(self.set_name)

    @functools.cached_property
    def deltas(self) -> pd.DataFrame:
        """Table 1's broad delta table of the trained models (Holm across its cells), cached."""
        key = wcache.DELTAS.key(
            runs=self.runs_hash, control=self.control, n_resamples=self.n_resamples
        )
        return wcache.fetch_frame(
            wcache.DELTAS.dir() / f"{key}.parquet",
            lambda: stats.delta_table(
                self.results[self.results["model"].isin(self.trained)],
                components=stats.TABLE1_COMPONENTS,
                metrics=stats.TABLE1_METRICS,
                K=TABLE1_K,
                control=self.control,
                n_boot=self.n_resamples,
                n_perm=self.n_resamples,
            ),
        )


@functools.cache
def _context(root: Path) -> BookContext:
    runs = load_runs(root)
    runs_hash = hashlib.sha256((root / RUNS_DIR / MANIFEST_NAME).read_bytes()).hexdigest()
    return BookContext(runs, runs_hash)


def context(root: Path | None = None) -> BookContext:
    """The build's context (one per book root and kernel; fails like `load_runs` without runs)."""
    return _context((root or find_root()).resolve())
