"""From a captured activation to an eigen-spectrum, and from a spectrum to a number.

Two kinds of matrices are turned into spectra, and every spectrum here is the list of
eigenvalues of a symmetric positive semi-definite matrix, in float64, sorted descending,
with negative round-off clamped to 0:

* **Activations** X (N rows = tokens or frames, d features): the spectrum of the
  *covariance of centred X*, λ = eig(X_cᵀ X_c / (N − 1)).  It is computed from whichever
  of the N×N Gram matrix X_c X_cᵀ/(N − 1) or the d×d covariance is smaller; their nonzero
  eigenvalues agree.  Centring removes the shared mean direction, so N rows give at most
  N − 1 nonzero eigenvalues.
* **Attention maps** A (T query rows × S key columns, non-negative, head-averaged): the
  map is read as a bipartite graph between queries and keys and degree-normalised,
  M = D_r^{-1/2} A D_c^{-1/2} (D_r, D_c = row and column sums).  Its spectrum is
  λ = σ(M)² = eig(M Mᵀ), so λ₁ = 1 always and the rest says how many distinct
  "where to listen" patterns the rows use.

A third spectrum belongs to the *activation graph* of the same rows, for the paper's
Kirchhoff index K_f:

* **Activation graph** of X (N rows): one node per row (decoding position), edge weight
  w_ij = |cos(x_i − x̄, x_j − x̄)| between centred rows (i ≠ j), Laplacian L = D − W,
  spectrum μ = eig(L) (descending).  The Kirchhoff index is Kf = N · Σ 1/μ_i over the
  nonzero μ_i, the sum of resistance distances over all node pairs.  Why this graph:
  absolute cosine of centred rows is the correlation structure the covariance spectrum
  summarises, it needs no bandwidth (a Gaussian kernel would), it is invariant to the
  scale of each row, and its two ends read naturally — rows that all share one direction
  (a rank-one collapse) form a complete graph with Kf = N − 1, its minimum, while rows
  that point in unrelated directions give weak edges and a large Kf.

All metrics are scale-invariant functions of their spectrum (the normalisation constant
never matters).  They accept eigenvalues on the last axis of an array (any order) and return
one value per spectrum; NaN (never a sentinel) when the value is undefined, and
`nan_reason` says why.  `k` selects the dominant modes λ₁..λ_k (k = 0: the whole
spectrum, up to the numerical rank where a positive tail is needed).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import entr

METRICS: tuple[str, ...] = (
    "n_eff",
    "log10_kf",
    "alpha",
    "participation_ratio",
    "stable_rank",
    "top_share",
    "log10_cond",
)
"""Metric names as they appear in the results table, in table order."""

GRAPH_METRICS: frozenset[str] = frozenset({"log10_kf"})
"""Metrics read from the activation graph's Laplacian spectrum (`graph_laplacian_eigenvalues`);
every other metric reads the covariance (or attention) spectrum."""

MAX_GRAPH_NODES = 256
"""Largest row count whose activation graph is solved: a decode has at most 225 decision rows,
while a 30 s encoder matrix has 1500 frames (a 1500-node eigen-solve per site and clip would
cost more than the whole decode)."""

_EPS64 = float(np.finfo(np.float64).eps)


def gram_eigenvalues(x: torch.Tensor | np.ndarray, *, center: bool = True) -> torch.Tensor:
    """Eigenvalues of the covariance of (centred) activations X with shape (..., N, d).

    Batched over leading axes, float64, on X's device, descending, clamped at 0.  The
    result has min(N, d) entries: eig(X_c X_cᵀ/(N−1)) when N ≤ d, else eig(X_cᵀ X_c/(N−1)).
    """
    x = torch.as_tensor(x).to(torch.float64)
    n = x.shape[-2]
    if center:
        x = x - x.mean(dim=-2, keepdim=True)
    scale = 1.0 / max(n - 1, 1)
    xt = x.transpose(-1, -2)
    gram = (x @ xt) if n <= x.shape[-1] else (xt @ x)
    return _eigvalsh_desc(gram * scale)


def attention_eigenvalues(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Spectrum of a (..., T, S) attention map read as a degree-normalised bipartite graph.

    λ = eig(M Mᵀ) with M = D_r^{-1/2} A D_c^{-1/2}; keys nobody attends to (column sum 0)
    and empty rows contribute nothing.  Float64, descending, T entries (or S if S < T).
    """
    a = torch.as_tensor(a).to(torch.float64).clamp_min(0.0)
    row = a.sum(dim=-1, keepdim=True)
    col = a.sum(dim=-2, keepdim=True)
    inv_r = torch.where(row > 0, row.rsqrt(), torch.zeros_like(row))
    inv_c = torch.where(col > 0, col.rsqrt(), torch.zeros_like(col))
    m = a * inv_r * inv_c
    mt = m.transpose(-1, -2)
    gram = (m @ mt) if m.shape[-2] <= m.shape[-1] else (mt @ m)
    return _eigvalsh_desc(gram)


def graph_laplacian_eigenvalues(
    x: torch.Tensor | np.ndarray, *, center: bool = True
) -> torch.Tensor:
    """Laplacian spectrum of the activation graph of X (..., N, d): one node per row.

    w_ij = |cos(x_i − x̄, x_j − x̄)| for i ≠ j (`center=False`: cosines of the raw rows),
    L = D − W; float64, descending, N entries.  A row with zero (centred) norm has no edges.
    """
    x = torch.as_tensor(x).to(torch.float64)
    if center:
        x = x - x.mean(dim=-2, keepdim=True)
    norm = x.norm(dim=-1, keepdim=True)
    floor = norm.amax(dim=-2, keepdim=True) * 1e-12
    unit = torch.where(norm > floor, x / norm.clamp_min(1e-300), torch.zeros_like(x))
    w = (unit @ unit.transpose(-1, -2)).abs()
    w = w - torch.diag_embed(torch.diagonal(w, dim1=-2, dim2=-1))
    lap = torch.diag_embed(w.sum(dim=-1)) - w
    return _eigvalsh_desc(lap)


def cross_attention_lap_eigvals(maps: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """LapEigvals (arXiv 2502.17598) adapted to cross-attention: top-`k` eigenvalues per head.

    LapEigvals reads a square causal self-attention map as a graph over tokens. A
    cross-attention map A (T decoder rows × S encoder frames) is not square, so the graph
    here joins two decision positions by how much they look at the same frames:
    W = A Aᵀ without self-loops, and its symmetric normalised Laplacian
    L = I − D^{-1/2} W D^{-1/2} (eigenvalues in [0, 2], so decodes of different lengths are
    comparable; an isolated node contributes 0, as in networkx). `maps` is (..., H, T, S);
    returns (..., H, k) in descending order, NaN where T < k (fewer eigenvalues than asked).
    """
    a = torch.as_tensor(maps).to(torch.float64)
    w = a @ a.transpose(-1, -2)
    w = w - torch.diag_embed(torch.diagonal(w, dim1=-2, dim2=-1))
    deg = w.sum(dim=-1)
    inv = torch.where(deg > 0, deg.clamp_min(1e-300).rsqrt(), torch.zeros_like(deg))
    eye = torch.diag_embed((deg > 0).to(w.dtype))
    lap = eye - inv[..., :, None] * w * inv[..., None, :]
    eig = _eigvalsh_desc(lap).cpu().numpy()
    out = np.full((*eig.shape[:-1], k), np.nan)
    n = min(k, eig.shape[-1])
    out[..., :n] = eig[..., :n]
    return out


def _eigvalsh_desc(sym: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of symmetric matrices, descending and clamped at 0 (round-off negatives).

    Non-finite matrices give NaN spectra instead of a LAPACK error, so one bad site
    cannot sink a whole batch.
    """
    finite = torch.isfinite(sym).all(dim=-1).all(dim=-1)
    safe = torch.where(finite[..., None, None], sym, torch.zeros_like(sym))
    safe = 0.5 * (safe + safe.transpose(-1, -2))
    eig = torch.linalg.eigvalsh(safe).flip(-1).clamp_min(0.0)
    return torch.where(finite[..., None], eig, torch.full_like(eig, float("nan")))


def numerical_rank(eigs: np.ndarray, n_max: int | None = None) -> np.ndarray:
    """Number of eigenvalues above λ_max · n · eps(float64), n = n_max or the spectrum length.

    The tolerance is numpy's matrix-rank rule applied to the float64 eigen-solve; pass
    n_max = max(N, d) of the matrix the spectrum came from.
    """
    lam = _sorted(eigs)
    n = lam.shape[-1] if n_max is None else max(n_max, lam.shape[-1])
    tol = lam[..., :1] * n * _EPS64
    return (lam > tol).sum(axis=-1)


def _sorted(eigs: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float64 copy, clamped at 0, sorted descending along the last axis (NaN stays NaN)."""
    if isinstance(eigs, torch.Tensor):
        eigs = eigs.detach().cpu().numpy()
    lam = np.asarray(eigs, dtype=np.float64)
    lam = np.where(np.isnan(lam), np.nan, np.maximum(lam, 0.0))
    return -np.sort(-lam, axis=-1)


def _top(eigs: np.ndarray, k: int) -> np.ndarray:
    lam = _sorted(eigs)
    return lam if k <= 0 else lam[..., :k]


def _valid(lam: np.ndarray) -> np.ndarray:
    """Spectra that are finite and not all zero (where every metric is defined)."""
    return np.isfinite(lam).all(axis=-1) & (np.nansum(lam, axis=-1) > 0)


def _finish(value: np.ndarray, ok: np.ndarray) -> np.ndarray | float:
    out = np.where(ok, value, np.nan)
    return float(out) if out.ndim == 0 else out


def effective_rank(eigs: np.ndarray, k: int = 0) -> np.ndarray | float:
    """Entropy effective rank exp(H(p)), p = λ/Σλ over λ₁..λ_k (eigenvalue-based variant).

    Roy & Vetterli (2007) on eigenvalues of the covariance (not singular values): rank-1
    gives 1, k equal eigenvalues give k.  H uses scipy.special.entr (0·log 0 = 0, no +ε).
    """
    lam = _top(eigs, k)
    total = lam.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = lam / total
        h = entr(p).sum(axis=-1)
    return _finish(np.exp(h), _valid(lam))


def participation_ratio(eigs: np.ndarray, k: int = 0) -> np.ndarray | float:
    """(Σλ)² / Σλ² over λ₁..λ_k: the order-2 Rényi effective rank."""
    lam = _top(eigs, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lam.sum(axis=-1) ** 2 / (lam**2).sum(axis=-1)
    return _finish(value, _valid(lam))


def stable_rank(eigs: np.ndarray, k: int = 0) -> np.ndarray | float:
    """Σλ / λ₁ over λ₁..λ_k (= ‖X‖_F² / ‖X‖₂²): the order-∞ Rényi effective rank."""
    lam = _top(eigs, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lam.sum(axis=-1) / lam[..., 0]
    return _finish(value, _valid(lam))


def top_share(eigs: np.ndarray, k: int = 0) -> np.ndarray | float:
    """λ₁ / Σλ over λ₁..λ_k: the share of variance in the dominant mode (1/stable rank)."""
    lam = _top(eigs, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lam[..., 0] / lam.sum(axis=-1)
    return _finish(value, _valid(lam))


def _tail(
    eigs: np.ndarray, k: int, n_max: int | None, need: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spectrum, last index used, defined?) for metrics that look at the tail of λ.

    k > 0 uses λ₁..λ_k and needs numerical rank ≥ k; k = 0 uses λ₁..λ_r, r = numerical
    rank, and needs r ≥ `need`.
    """
    lam = _sorted(eigs)
    rank = numerical_rank(lam, n_max)
    last = rank if k <= 0 else np.full_like(rank, k)
    ok = _valid(lam) & (last >= need) & (last <= rank) & (last <= lam.shape[-1])
    return lam, last, ok


def condition_number_log10(
    eigs: np.ndarray, k: int = 0, n_max: int | None = None
) -> np.ndarray | float:
    """log10(λ₁/λ_k), the dominant-mode condition number; k = 0 uses λ_r, r = numerical rank.

    Earlier versions of this book called it K_f; the paper's K_f is the Kirchhoff index
    (`kirchhoff_index`).  It stays as a sensitivity check under the name log10_cond.

    NaN when λ_k is below the numerical-rank tolerance (the ratio would measure round-off).
    """
    lam, last, ok = _tail(eigs, k, n_max, need=1)
    idx = np.clip(last - 1, 0, lam.shape[-1] - 1)
    lam_k = np.take_along_axis(lam, np.asarray(idx)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.log10(lam[..., 0] / lam_k)
    return _finish(value, ok)


def spectral_slope(eigs: np.ndarray, k: int = 0, n_max: int | None = None) -> np.ndarray | float:
    """α = −(least-squares slope of ln λ_i on ln i), i = 1..k (k = 0: i = 1..numerical rank).

    Unweighted ordinary least squares (the α-ReQ reference uses weights 1/i; we do not).
    λ_i = C·i^(−a) gives α = a exactly.  NaN when fewer than 2 points or λ_k is below the
    numerical-rank tolerance.
    """
    lam, last, ok = _tail(eigs, k, n_max, need=2)
    n = lam.shape[-1]
    i = np.arange(1, n + 1, dtype=np.float64)
    use = i <= np.asarray(last)[..., None]
    logi = np.log(i)
    with np.errstate(divide="ignore", invalid="ignore"):
        logl = np.where(use, np.log(np.where(use, lam, 1.0)), 0.0)
        w = use.astype(np.float64)
        cnt = w.sum(axis=-1)
        mx = (w * logi).sum(axis=-1) / cnt
        my = logl.sum(axis=-1) / cnt
        dx = np.where(use, logi - mx[..., None], 0.0)
        slope = (dx * (logl - my[..., None])).sum(axis=-1) / (dx**2).sum(axis=-1)
    return _finish(-slope, ok)


def kirchhoff_index(mu: np.ndarray, k: int = 0) -> np.ndarray | float:
    """Kf = N · Σ 1/μ_i over the nonzero Laplacian eigenvalues μ of an N-node graph.

    k > 0 sums the k smallest nonzero eigenvalues only (the slowest modes, which carry most
    of Kf).  A Laplacian eigenvalue counts as zero below μ_max · N · eps(float64).  NaN for
    a one-node graph, an empty graph, or a disconnected one (more than one zero eigenvalue:
    infinite resistance between components).  Closed forms: complete graph K_N gives N − 1,
    path P_N (N³ − N)/6, star S_N (N − 1)², cycle C_N (N³ − N)/12.
    """
    lam = _sorted(mu)
    n = lam.shape[-1]
    tol = lam[..., :1] * n * _EPS64
    nonzero = lam > tol
    connected = (n - nonzero.sum(axis=-1)) == 1
    ok = np.isfinite(lam).all(axis=-1) & (lam[..., 0] > 0) & connected & (n >= 2)
    asc = np.sort(np.where(nonzero, lam, np.inf), axis=-1)  # smallest nonzero first
    if k > 0:
        asc = asc[..., :k]
    with np.errstate(divide="ignore", invalid="ignore"):
        value = n * np.where(np.isfinite(asc), 1.0 / asc, 0.0).sum(axis=-1)
    return _finish(value, ok)


def kirchhoff_log10(mu: np.ndarray, k: int = 0) -> np.ndarray | float:
    """log10 of `kirchhoff_index` (the paper's log10 K_f)."""
    value = np.asarray(kirchhoff_index(mu, k), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(value)
    return float(out) if out.ndim == 0 else out


def metric_values(
    eigs: np.ndarray, metric: str, k: int = 0, n_max: int | None = None
) -> np.ndarray | float:
    """Dispatch one metric by its table name (see METRICS).

    `eigs` is the covariance (or attention) spectrum, except for `GRAPH_METRICS`, which read
    the activation graph's Laplacian spectrum.
    """
    if metric == "n_eff":
        return effective_rank(eigs, k)
    if metric == "participation_ratio":
        return participation_ratio(eigs, k)
    if metric == "stable_rank":
        return stable_rank(eigs, k)
    if metric == "top_share":
        return top_share(eigs, k)
    if metric == "log10_kf":
        return kirchhoff_log10(eigs, k)
    if metric == "log10_cond":
        return condition_number_log10(eigs, k, n_max)
    if metric == "alpha":
        return spectral_slope(eigs, k, n_max)
    raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def nan_reason(eigs: np.ndarray, metric: str, k: int = 0, n_max: int | None = None) -> str:
    """Why `metric` of one spectrum is NaN ('' if it is not)."""
    lam = _sorted(eigs)
    if lam.ndim != 1:
        raise ValueError("nan_reason explains one spectrum; pass a 1-D array")
    if not np.isfinite(lam).all():
        return "non-finite input"
    if metric in GRAPH_METRICS:
        if lam.size < 2:
            return "one-node graph"
        if lam.sum() <= 0:
            return "graph without edges"
        zeros = int((lam <= lam[0] * lam.size * _EPS64).sum())
        return f"disconnected graph ({zeros} components)" if zeros > 1 else ""
    if lam.size == 0 or lam.sum() <= 0:
        return "zero spectrum (fewer than 2 distinct rows)"
    if metric in ("log10_cond", "alpha"):
        rank = int(numerical_rank(lam, n_max))
        need = (2 if metric == "alpha" else 1) if k <= 0 else k
        if k > lam.size:
            return f"spectrum has {lam.size} eigenvalues < K={k}"
        if rank < need:
            return f"numerical rank {rank} < {need}"
    return ""
