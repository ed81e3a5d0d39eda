"""Sequence-length control: make spectra of matrices with different row counts comparable.

Every spectral metric of an N×d activation matrix is capped by its row count: centred,
N rows have at most N − 1 nonzero eigenvalues.  tiny.en on silence decodes " you" —
a 2-row decoder matrix whose effective rank is 1 *by construction*, whatever the model
does.  Comparing it with a 20-token clean decode would report "rank collapse" that is only
arithmetic.  Two controls remove the row count from the comparison:

* **matched_T** — matched subsampling.  Draw `n_subsets` seeded random subsets of exactly
  T₀ rows (the same index sets for every site of a stimulus, so components stay paired),
  compute the metric on each T₀×d sub-matrix and average.  Every stimulus is then measured
  at the same shape; stimuli with fewer than T₀ rows get NaN ("too short"), because no
  control can invent the rows a short decode never produced.
* **null_ratio / null_diff** — normalisation against Gaussian matrices of the same shape.
  E₀[m](N, d) is the mean metric over `draws` seeded iid N(0, 1) N×d matrices; rank-like
  metrics (n_eff, participation ratio, stable rank) are reported as m / E₀[m] ("null_ratio",
  1 = as spread as noise of that shape), the others (log10 K_f, α, top share) as
  m − E₀[m] ("null_diff", since their null is near 0 and a ratio would divide by noise).

For iid Gaussian activations both controls are flat in N by construction, while the raw
metric grows with N; tests/test_seqlen.py checks exactly that.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import torch

from wspec import cache as wcache
from wspec.paths import atomic_write_text
from wspec.spectra import (
    GRAPH_METRICS,
    MAX_GRAPH_NODES,
    METRICS,
    attention_eigenvalues,
    gram_eigenvalues,
    graph_laplacian_eigenvalues,
    metric_values,
)

RATIO_METRICS: frozenset[str] = frozenset({"n_eff", "participation_ratio", "stable_rank"})
"""Metrics normalised by division (size-like); all others are normalised by subtraction."""


def null_control(metric: str) -> str:
    """Name of the null-normalised control for `metric`: 'null_ratio' or 'null_diff'."""
    return "null_ratio" if metric in RATIO_METRICS else "null_diff"


def apply_null(metric: str, value: np.ndarray | float, null: float) -> np.ndarray | float:
    """Normalise `value` (scalar or array) by the Gaussian-null expectation `null`."""
    if metric in RATIO_METRICS:
        return value / null if null > 0 else value * float("nan")
    return value - null


def subset_indices(n_rows: int, t0: int, n_subsets: int, seed: int) -> np.ndarray | None:
    """(n_subsets, t0) sorted row indices drawn without replacement; None if n_rows < t0.

    Seeded by (seed, n_rows, t0), so a rerun — and every site of one stimulus — uses the
    same subsets.  With n_rows == t0 the single subset is all rows.
    """
    if n_rows < t0:
        return None
    if n_rows == t0:
        return np.arange(t0)[None, :]
    rng = np.random.default_rng([seed, n_rows, t0])
    return np.sort(
        np.stack([rng.choice(n_rows, size=t0, replace=False) for _ in range(n_subsets)]), axis=1
    )


def prefix_indices(n_rows: int, t0: int) -> np.ndarray | None:
    """The first t0 rows as one row set (1, t0); None if n_rows < t0 (never padded)."""
    return None if n_rows < t0 else np.arange(t0)[None, :]


def window_indices(n_rows: int, t0: int, max_windows: int = 32) -> np.ndarray | None:
    """(W, t0) consecutive row windows covering all n_rows rows; None if n_rows < t0.

    Windows start every ⌈(n_rows − t0)/(max_windows − 1)⌉ rows and the last one ends at the
    last row, so a long decode contributes at most `max_windows` windows spread over its
    whole length (bounded cost, every row used).
    """
    if n_rows < t0:
        return None
    span = n_rows - t0
    step = max(1, -(-span // max(max_windows - 1, 1)))
    starts = sorted(set(range(0, span + 1, step)) | {span})
    return np.stack([np.arange(s, s + t0) for s in starts])


def matched_gram_eigenvalues(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Covariance spectra of row subsets: x (..., N, d), idx (R, t0) → (..., R, min(t0, d))."""
    rows = torch.as_tensor(idx, device=x.device)
    sub = x[..., rows, :]  # (..., R, t0, d)
    return gram_eigenvalues(sub)


def matched_attention_eigenvalues(a: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    """Attention-graph spectra of query-row subsets: a (..., T, S) → (..., R, min(t0, S))."""
    rows = torch.as_tensor(idx, device=a.device)
    return attention_eigenvalues(a[..., rows, :])


def average_metric(eigs: np.ndarray, metric: str, k: int, n_max: int) -> np.ndarray:
    """Metric averaged over the subset axis (second to last of `eigs`, (..., R, m)).

    Subsets whose metric is undefined are skipped; all undefined gives NaN.
    """
    values = np.asarray(metric_values(eigs, metric, k, n_max), dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def gaussian_null(
    n_rows: int, d: int, ks: tuple[int, ...], draws: int = 8, seed: int = 0
) -> dict[tuple[str, int], float]:
    """E₀[metric] for iid Gaussian n_rows×d matrices, per (metric, K); cached on disk.

    Computed the same way as the activations (centred covariance spectrum), from
    `draws` seeded matrices.  The spread of these metrics over draws is small next to
    their mean for the shapes used here, so a handful of draws suffices; the values
    are stored in the cache (`wspec.cache.NULLS`) because they only depend on the shape.
    """
    return dict(_gaussian_null(int(n_rows), int(d), tuple(int(k) for k in ks), draws, seed))


@functools.lru_cache(maxsize=4096)
def _gaussian_null(
    n_rows: int, d: int, ks: tuple[int, ...], draws: int, seed: int
) -> tuple[tuple[tuple[str, int], float], ...]:
    key = wcache.NULLS.key(n_rows=n_rows, d=d, draws=draws, seed=seed)
    path = wcache.NULLS.dir() / f"{key}.json"
    stored: dict[str, float] = {}
    if path.exists():
        stored = json.loads(path.read_text())
    wanted = [(m, k) for m in METRICS for k in ks]
    if not all(f"{m}@{k}" in stored for m, k in wanted):
        state = np.random.SeedSequence([seed, n_rows, d]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(state))
        x = torch.randn(draws, n_rows, d, generator=gen, dtype=torch.float64)
        eigs = gram_eigenvalues(x).numpy()
        graph = np.full((draws, n_rows), np.nan)
        if n_rows <= MAX_GRAPH_NODES:
            graph = graph_laplacian_eigenvalues(x).numpy()
        n_max = max(n_rows, d)
        for m, k in wanted:
            spectrum = graph if m in GRAPH_METRICS else eigs
            values = np.asarray(metric_values(spectrum, m, k, n_max), dtype=np.float64)
            stored[f"{m}@{k}"] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        atomic_write_text(path, json.dumps(stored, sort_keys=True))
    return tuple(
        ((m, k), float("nan") if stored[f"{m}@{k}"] is None else stored[f"{m}@{k}"])
        for m, k in wanted
    )


def length_curve(
    x: torch.Tensor,
    lengths: list[int],
    metric: str = "n_eff",
    k: int = 0,
    t0: int = 12,
    n_subsets: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """A metric of the first T rows of `x` (N×d) for each T, raw and under both controls.

    Shows how a raw metric follows the row count and whether a control removes that:
    columns T, raw, matched_T, null (null_ratio or null_diff, see `null_control`).
    """
    d = x.shape[1]
    rows = []
    for t in lengths:
        head = x[:t]
        raw = float(metric_values(gram_eigenvalues(head).numpy(), metric, k, max(t, d)))
        idx = subset_indices(t, t0, n_subsets, seed)
        matched = float("nan")
        if idx is not None:
            sub = matched_gram_eigenvalues(head, idx).numpy()
            matched = float(average_metric(sub, metric, k, max(t0, d)))
        null = apply_null(metric, raw, gaussian_null(t, d, (k,), seed=seed)[(metric, k)])
        rows.append({"T": t, "raw": raw, "matched_T": matched, "null": null})
    return pd.DataFrame(rows)
