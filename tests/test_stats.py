"""Statistics layer on synthetic data with known answers: CI coverage, p-values, KL."""

from __future__ import annotations

import numpy as np
import pytest

from wspec import stats
from wspec.errors import WspecError

REPS = 300  # repeated seeded experiments per coverage check


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_unpaired_pct_ci_covers_true_delta(method: str) -> None:
    # Clean ~ N(10, 2), stressed ~ N(9, 2): true ΔN_eff = −10 %.
    rng = np.random.default_rng(1)
    hits = []
    for rep in range(REPS):
        clean, stressed = rng.normal(10, 2, 40), rng.normal(9, 2, 40)
        d = stats.bootstrap_delta(clean, stressed, kind="pct", n_boot=400, seed=rep, method=method)
        hits.append(d.ci_low <= -10.0 <= d.ci_high)
    # Nominal 95 %; binomial SD over 300 reps is 1.3 %, and percentile/BCa intervals
    # under-cover by ~1–2 % at n = 40, so accept 0.90–0.99.
    assert 0.90 <= np.mean(hits) <= 0.99


def test_paired_cluster_ci_covers_true_delta() -> None:
    # 30 clean sources with large between-source spread; each has 1–3 stressed versions
    # shifted by −0.5 with small noise. The paired CI must cover −0.5 and be much narrower
    # than the unpaired one (between-source variance cancels).
    rng = np.random.default_rng(2)
    hits, widths_paired, widths_unpaired = [], [], []
    for rep in range(REPS):
        clean = rng.normal(5, 2, 30)
        pairs = np.repeat(np.arange(30), rng.integers(1, 4, 30))
        stressed = clean[pairs] - 0.5 + rng.normal(0, 0.3, pairs.size)
        d = stats.bootstrap_delta(clean, stressed, pairs=pairs, n_boot=400, seed=rep)
        u = stats.bootstrap_delta(clean, stressed, n_boot=400, seed=rep)
        hits.append(d.ci_low <= -0.5 <= d.ci_high)
        widths_paired.append(d.ci_high - d.ci_low)
        widths_unpaired.append(u.ci_high - u.ci_low)
        assert d.paired and d.n_base == 30 and d.n_other == pairs.size
    assert 0.90 <= np.mean(hits) <= 0.99  # same tolerance reasoning as above
    assert np.median(widths_paired) < 0.25 * np.median(widths_unpaired)


def test_bootstrap_is_seeded_and_point_estimate_exact() -> None:
    clean, stressed = np.array([10.0, 12.0, 11.0, 9.0]), np.array([9.0, 10.0, 9.5, 8.0])
    a = stats.bootstrap_delta(clean, stressed, kind="pct", seed=7)
    b = stats.bootstrap_delta(clean, stressed, kind="pct", seed=7)
    assert a == b
    assert a.estimate == pytest.approx(100 * (9.125 - 10.5) / 10.5, rel=1e-12)
    assert stats.bootstrap_delta(clean, stressed, kind="diff").estimate == pytest.approx(-1.375)


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(WspecError, match="at least 2"):
        stats.bootstrap_delta([1.0], [1.0, 2.0])
    with pytest.raises(WspecError, match="non-finite"):
        stats.bootstrap_delta([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(WspecError, match="percentile"):
        stats.bootstrap_delta([1.0, 2.0, 3.0], [1.0, 2.0], method="studentized")


@pytest.mark.parametrize("paired", [False, True])
def test_permutation_p_uniform_under_null_and_small_under_shift(paired: bool) -> None:
    rng = np.random.default_rng(3)
    p_null, p_shift = [], []
    for rep in range(200):
        clean = rng.normal(0, 1, 25)
        pairs = np.arange(25) if paired else None
        base_other = clean if paired else rng.normal(0, 1, 25)
        noise = rng.normal(0, 1, 25)
        null_other = base_other + noise if paired else noise
        p_null.append(
            stats.permutation_test(clean, null_other, pairs=pairs, n_perm=300, seed=rep).p_value
        )
        shifted = null_other + 1.5
        p_shift.append(
            stats.permutation_test(clean, shifted, pairs=pairs, n_perm=300, seed=rep).p_value
        )
    p_null = np.asarray(p_null)
    # Under H0 p ~ U(0, 1): with 200 draws the share below 0.1 has SD 2.1 %, so 0.03–0.18
    # is a > 3-SD band; the mean of U(0,1) over 200 draws has SD 0.02, band 0.42–0.58.
    assert 0.03 <= np.mean(p_null < 0.1) <= 0.18
    assert 0.42 <= p_null.mean() <= 0.58
    # A 1.5-SD shift with n = 25 per group: z ≈ 5.3, power at α = 0.01 is > 0.99.
    assert np.mean(np.asarray(p_shift) < 0.01) > 0.95


def test_permutation_p_floor() -> None:
    # 30 vs 30: a permutation reproducing the split has probability 2/C(60, 30) ≈ 1e-17,
    # so no permuted statistic is as extreme and p = 1/(1 + n_perm).
    res = stats.permutation_test(np.zeros(30), np.ones(30), n_perm=99, seed=0)
    assert res.p_value == pytest.approx(1 / 100)
    assert res.statistic == 1.0


def test_effect_size_recovers_cohens_d() -> None:
    rng = np.random.default_rng(4)
    d = stats.effect_size(rng.normal(0, 2, 20000), rng.normal(1, 2, 20000))
    assert d == pytest.approx(0.5, abs=0.03)  # SE of d at n = 20000 per group is ~0.01


def test_adjust_pvalues_matches_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, np.nan, 0.5]
    # Holm: sorted 0.01·4, 0.03·3, 0.04·2 → running max; 0.5·1.
    np.testing.assert_allclose(
        stats.adjust_pvalues(p, "holm"), [0.04, 0.09, 0.09, np.nan, 0.5], rtol=1e-12
    )
    # BH: 0.01·4/1, 0.03·4/2, 0.04·4/3, 0.5 → running min from the top.
    np.testing.assert_allclose(
        stats.adjust_pvalues(p, "bh"), [0.04, 0.16 / 3, 0.16 / 3, np.nan, 0.5], rtol=1e-12
    )
    with pytest.raises(WspecError):
        stats.adjust_pvalues(p, "bonferroni-ish")


def test_kl_zero_for_identical_and_positive_otherwise() -> None:
    lam = 1.0 / np.arange(1, 40) ** 1.2
    p = stats.normalized_spectrum(lam, K=10)
    assert p.sum() == pytest.approx(1.0)
    assert stats.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
    # Scaling a spectrum does not change its normalised shape.
    assert stats.kl_divergence(stats.normalized_spectrum(3 * lam), p) == pytest.approx(0, abs=1e-15)
    harder = stats.normalized_spectrum(1.0 / np.arange(1, 40) ** 2.0, K=10)
    assert stats.kl_divergence(harder, p) > 0.01
    h1 = stats.log_eigenvalue_histogram(lam)
    assert stats.kl_divergence(h1, h1) == pytest.approx(0.0, abs=1e-15)
    assert stats.kl_divergence(stats.log_eigenvalue_histogram(lam**3), h1) > 0.1


def test_normalized_spectrum_pads_short_spectra() -> None:
    p = stats.normalized_spectrum([2.0, 1.0, 1.0], K=5)
    np.testing.assert_allclose(p, [0.5, 0.25, 0.25, 0.0, 0.0])
    with pytest.raises(WspecError):
        stats.normalized_spectrum([0.0, 0.0])


@pytest.mark.parametrize("representation", ["rank", "hist"])
def test_spectral_kl_test_null_and_alternative(representation: str) -> None:
    rng = np.random.default_rng(5)

    def spectra(exponent: float, n: int) -> list[np.ndarray]:
        # Power-law spectra with multiplicative noise: k^-exponent · LogNormal(0, 0.3).
        k = np.arange(1, 31)
        return [k**-exponent * rng.lognormal(0, 0.3, k.size) for _ in range(n)]

    same = stats.spectral_kl_test(
        spectra(1.0, 20), spectra(1.0, 20), representation=representation, n_perm=500, seed=0
    )
    diff = stats.spectral_kl_test(
        spectra(1.0, 20), spectra(1.6, 20), representation=representation, n_perm=500, seed=0
    )
    assert same.p_value > 0.01  # one draw under H0: fails with probability ≈ 1 %
    assert diff.p_value < 0.01 and diff.kl > diff.null_q95
