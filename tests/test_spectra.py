"""Spectral metrics on matrices whose spectra are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wspec.spectra import (
    METRICS,
    attention_eigenvalues,
    condition_number_log10,
    effective_rank,
    gram_eigenvalues,
    metric_values,
    nan_reason,
    numerical_rank,
    participation_ratio,
    spectral_slope,
    stable_rank,
    top_share,
)

# Closed-form cases are exact up to float64 round-off of an n ≤ 200 eigen-solve, so
# 1e-9 relative leaves a margin of ~10⁴ over the expected error and still fails on any
# real mistake (an off-by-one in K changes values at the 1e-2 level).
TIGHT = 1e-9


def _with_spectrum(lam: np.ndarray, n_rows: int, d: int | None = None) -> torch.Tensor:
    """An n_rows × d matrix whose centred covariance has nonzero eigenvalues `lam`.

    Needs len(lam) ≤ min(n_rows − 1, d): X = U diag(√((N−1)λ)) Vᵀ with U orthonormal,
    zero-mean columns (so centring leaves X unchanged) and V orthonormal.
    """
    rng = np.random.default_rng(0)
    d = d or lam.size
    z = rng.standard_normal((n_rows, lam.size))
    u, _ = np.linalg.qr(z - z.mean(axis=0))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return torch.from_numpy(u * np.sqrt(lam * (n_rows - 1)) @ v[:, : lam.size].T)


def test_rank_one_activations_have_effective_rank_one() -> None:
    rng = np.random.default_rng(1)
    x = np.outer(rng.standard_normal(40), rng.standard_normal(64)) + rng.standard_normal(64)
    lam = gram_eigenvalues(torch.from_numpy(x)).numpy()
    assert numerical_rank(lam, 64) == 1
    assert effective_rank(lam) == pytest.approx(1.0, rel=TIGHT)
    assert stable_rank(lam) == pytest.approx(1.0, rel=TIGHT)
    assert top_share(lam) == pytest.approx(1.0, rel=TIGHT)


@pytest.mark.parametrize("n_rows,d", [(300, 50), (20, 50)])
def test_isotropic_covariance_gives_full_effective_rank(n_rows: int, d: int) -> None:
    # both code paths: d×d covariance (N > d) and N×N Gram (N ≤ d)
    m = min(n_rows - 1, d)
    lam = gram_eigenvalues(_with_spectrum(np.ones(m), n_rows, d)).numpy()
    assert effective_rank(lam) == pytest.approx(m, rel=TIGHT)
    assert participation_ratio(lam) == pytest.approx(m, rel=TIGHT)
    assert stable_rank(lam) == pytest.approx(m, rel=TIGHT)
    assert condition_number_log10(lam, 0, max(n_rows, d)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("a", [0.5, 1.0, 2.0])
def test_power_law_eigenvalues_give_alpha(a: float) -> None:
    lam_true = np.arange(1, 41, dtype=np.float64) ** -a
    lam = gram_eigenvalues(_with_spectrum(lam_true, 200)).numpy()
    for k in (10, 0):
        assert spectral_slope(lam, k, 200) == pytest.approx(a, rel=1e-8)
    # K_f at K = 10 is λ1/λ10 = 10^a
    assert condition_number_log10(lam, 10, 200) == pytest.approx(a, rel=1e-8)


def test_eigenvalue_based_variant_matches_literature_value() -> None:
    # The spectral-numerics notes give N_eff ≈ 614 (eigenvalue-based) vs ≈ 814
    # (singular-value-based) for iid Gaussian 1000×1024; we implement the former.
    # 1 % covers the spread over seeds (~0.1 %).
    x = torch.randn(1000, 1024, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert effective_rank(gram_eigenvalues(x)) == pytest.approx(614, rel=0.01)


def test_renyi_ordering_and_gram_equals_covariance() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 80)) @ np.diag(rng.uniform(0.1, 3, 80))
    lam = gram_eigenvalues(torch.from_numpy(x)).numpy()
    cov = np.cov(x, rowvar=False)
    ref = np.sort(np.linalg.eigvalsh(cov))[::-1][: lam.size]
    np.testing.assert_allclose(lam, np.clip(ref, 0, None), rtol=1e-9, atol=1e-12 * ref[0])
    r = numerical_rank(lam, 80)
    assert r == 29  # 30 centred rows
    assert stable_rank(lam) <= participation_ratio(lam) <= effective_rank(lam) <= r


def test_batched_equals_one_by_one() -> None:
    x = torch.randn(3, 4, 15, 32, generator=torch.Generator().manual_seed(4))
    batched = gram_eigenvalues(x)
    single = gram_eigenvalues(x[2, 1])
    torch.testing.assert_close(batched[2, 1], single, rtol=1e-12, atol=1e-12)
    values = effective_rank(batched)
    assert values.shape == (3, 4)
    assert values[2, 1] == pytest.approx(effective_rank(single), rel=1e-12)


def test_top_k_uses_dominant_modes_only() -> None:
    lam = np.array([4.0, 2.0, 1.0, 1.0, 1e-3, 1e-3])
    assert effective_rank(lam, 2) == pytest.approx(
        np.exp(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))
    )
    assert top_share(lam, 4) == pytest.approx(0.5)
    assert condition_number_log10(lam, 3) == pytest.approx(np.log10(4.0))


def test_undefined_values_are_nan_with_a_reason() -> None:
    bad = np.array([1.0, np.nan, 0.5])
    for m in METRICS:
        assert np.isnan(metric_values(bad, m, 0))
        assert nan_reason(bad, m, 0) == "non-finite input"
    zero = np.zeros(5)
    assert np.isnan(effective_rank(zero))
    assert "zero spectrum" in nan_reason(zero, "n_eff")
    short = np.array([3.0, 1.0, 0.0, 0.0])  # numerical rank 2
    assert np.isnan(condition_number_log10(short, 3))
    assert nan_reason(short, "log10_cond", 3) == "numerical rank 2 < 3"
    assert np.isnan(spectral_slope(short, 10))
    assert nan_reason(short, "alpha", 10) == "spectrum has 4 eigenvalues < K=10"
    # the entropy uses 0·log 0 = 0: zeros neither add rank nor produce NaN
    assert effective_rank(short) == pytest.approx(
        np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    )
    # negative round-off is clamped, not propagated
    assert effective_rank(np.array([1.0, 1.0, -1e-17])) == pytest.approx(2.0, rel=TIGHT)


def test_attention_graph_spectrum() -> None:
    t, s = 6, 40
    # each query attends to its own key: a perfect matching, all singular values 1
    diag = torch.zeros(t, s)
    diag[torch.arange(t), torch.arange(t) * 3] = 1.0
    lam = attention_eigenvalues(diag).numpy()
    np.testing.assert_allclose(lam, np.ones(t), atol=1e-12)
    assert effective_rank(lam) == pytest.approx(t, rel=TIGHT)
    # all queries attend with the same distribution: rank one
    same = torch.softmax(torch.randn(s, generator=torch.Generator().manual_seed(5)), 0)
    lam1 = attention_eigenvalues(same.expand(t, s)).numpy()
    assert effective_rank(lam1) == pytest.approx(1.0, rel=TIGHT)
    # any non-negative map: the degree-normalised top singular value is exactly 1
    rand = torch.softmax(torch.randn(3, t, s, generator=torch.Generator().manual_seed(6)), -1)
    np.testing.assert_allclose(attention_eigenvalues(rand)[:, 0].numpy(), 1.0, rtol=1e-12)


def test_cross_attention_lap_eigvals_match_networkx_and_pad_short_decodes() -> None:
    # Independent check: networkx's normalised Laplacian of W = A Aᵀ without self-loops.
    # Both are float64 eigen-solves of the same small matrix: equal to 1e-10.
    import networkx as nx

    from wspec.spectra import cross_attention_lap_eigvals

    rng = np.random.default_rng(3)
    maps = torch.softmax(torch.as_tensor(rng.normal(size=(3, 7, 50)) * 3), dim=-1)
    got = cross_attention_lap_eigvals(maps, 4)
    assert got.shape == (3, 4)
    for h in range(3):
        a = maps[h].numpy()
        w = a @ a.T
        np.fill_diagonal(w, 0.0)
        lap = nx.normalized_laplacian_matrix(nx.from_numpy_array(w)).toarray()
        ref = np.sort(np.linalg.eigvalsh(lap))[::-1][:4]
        np.testing.assert_allclose(got[h], ref, atol=1e-10)
    assert ((got >= 0) & (got <= 2 + 1e-12)).all()
    short = cross_attention_lap_eigvals(maps[:, :2], 4)  # two positions: two eigenvalues
    assert np.isfinite(short[:, :2]).all() and np.isnan(short[:, 2:]).all()
    alone = cross_attention_lap_eigvals(maps[:, :1], 4)  # one isolated node: 0, as networkx
    np.testing.assert_array_equal(alone[:, 0], 0.0)
