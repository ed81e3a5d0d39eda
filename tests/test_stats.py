"""Statistics layer on synthetic data with known answers: CI coverage, p-values, KL; the
hand-written bootstrap, permutation test and corrections checked against scipy/statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

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


# --------------------------------------------------------------------------- resampling units


def _clustered(rng: np.random.Generator, n_clusters: int, size: int, shift: float):
    """Two groups of `n_clusters` clusters × `size` clips each: cluster effect SD 1, clip SD
    0.2 (intra-cluster correlation 0.96), the other group shifted by `shift`."""

    def group(mean: float) -> np.ndarray:
        effect = rng.normal(mean, 1.0, n_clusters)[:, None]
        return (effect + rng.normal(0.0, 0.2, (n_clusters, size))).ravel()

    return group(0.0), group(shift)


def test_cluster_bootstrap_covers_where_the_row_bootstrap_does_not() -> None:
    # 12 clusters × 8 clips per group, true delta 0.5. Clips of a cluster are near copies,
    # so the data hold 12 independent units per group, not 96: resampling rows understates
    # the SE by √(design effect) ≈ 2.8, and its nominal 95 % interval covers only ≈ 50 %
    # (2Φ(1.96/2.8) − 1 = 0.52). Resampling clusters covers ≈ 92 % (the percentile
    # bootstrap's shortfall with 12 units per group: variance × 11/12 and t-like tails).
    # Monte Carlo error of a coverage estimate over R = 1000 replications:
    # √(0.92·0.08/1000) = 0.9 % (cluster) and √(0.5·0.5/1000) = 1.6 % (rows). The bounds
    # 0.86–0.99 lie ≥ 6 and ≥ 7 SE from 0.92, and 0.75 lies > 15 SE above 0.5, while a
    # cluster bootstrap that fell back to rows (coverage 0.5) would miss 0.86 by > 20 SE.
    rng = np.random.default_rng(11)
    reps, n_clusters, size, delta = 1000, 12, 8, 0.5
    base_labels = np.repeat(np.arange(n_clusters), size)
    other_labels = base_labels + n_clusters
    row_hits, cluster_hits = [], []
    for rep in range(reps):
        base, other = _clustered(rng, n_clusters, size, delta)
        rows = stats.bootstrap_delta(base, other, n_boot=500, seed=rep)
        clusters = stats.bootstrap_delta(
            base,
            other,
            base_clusters=base_labels,
            other_clusters=other_labels,
            n_boot=500,
            seed=rep,
        )
        row_hits.append(rows.ci_low <= delta <= rows.ci_high)
        cluster_hits.append(clusters.ci_low <= delta <= clusters.ci_high)
    assert np.mean(row_hits) < 0.75
    assert 0.86 <= np.mean(cluster_hits) <= 0.99


@pytest.mark.parametrize("kind", ["diff", "pct"])
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_intervals_equal_scipy_bootstrap_on_the_same_draws(kind: str, method: str) -> None:
    # Unpaired, no clusters: scipy.stats.bootstrap draws each sample's indices with
    # Generator.integers(0, n, (n_resamples, n)), base first — the draws bootstrap_delta
    # makes — so the two intervals agree to rounding (1e-9 relative: the only difference is
    # the order of floating-point sums). BCa checks the bias correction and the
    # multi-sample acceleration too.
    rng = np.random.default_rng(6)
    base, other = rng.normal(10, 2, 30), rng.lognormal(2.2, 0.3, 25)  # skewed: BCa ≠ percentile

    def statistic(b: np.ndarray, o: np.ndarray, axis: int) -> np.ndarray:
        diff = o.mean(axis) - b.mean(axis)
        return 100 * diff / b.mean(axis) if kind == "pct" else diff

    ours = stats.bootstrap_delta(base, other, kind=kind, n_boot=2000, seed=5, method=method)
    ref = sps.bootstrap(
        (base, other), statistic, n_resamples=2000, method=method, rng=np.random.default_rng(5)
    ).confidence_interval
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], [ref.low, ref.high], rtol=1e-9)
    assert ours.estimate == pytest.approx(statistic(base, other, 0), rel=1e-12)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_cluster_bootstrap_equals_scipy_on_cluster_means(method: str) -> None:
    # With equal-sized clusters nested in groups, a group mean is the mean of its cluster
    # means, and drawing clusters with replacement is scipy's bootstrap of the cluster means
    # (same draws, as above): equal to rounding.
    rng = np.random.default_rng(7)
    base, other = _clustered(rng, 10, 6, 0.4)
    base, other = base[:48], other  # 8 base clusters, 10 other clusters
    labels_b, labels_o = np.repeat(np.arange(8), 6), np.repeat(np.arange(10), 6) + 100
    ours = stats.bootstrap_delta(
        base, other, base_clusters=labels_b, other_clusters=labels_o, seed=2, method=method
    )
    ref = sps.bootstrap(
        (base.reshape(8, 6).mean(1), other.reshape(10, 6).mean(1)),
        lambda b, o, axis: o.mean(axis) - b.mean(axis),
        n_resamples=2000,
        method=method,
        rng=np.random.default_rng(2),
    ).confidence_interval
    np.testing.assert_allclose([ours.ci_low, ours.ci_high], [ref.low, ref.high], rtol=1e-9)
    assert (ours.n_clusters_base, ours.n_clusters_other) == (8, 10)
    assert (ours.n_base, ours.n_other) == (48, 60)


def test_permutation_p_matches_scipy_exact_test() -> None:
    # 6 vs 7 values: C(13, 6) = 1716 splits, which scipy enumerates exactly; our p uses
    # 20000 random shuffles, so it differs by Monte Carlo error, SE = √(p(1 − p)/20000)
    # (0.0026 at p ≈ 0.16): the tolerance is 4 SE. scipy's statistic is |T| with
    # alternative "greater", which is our two-sided rule #{|T*| ≥ |T|}.
    rng = np.random.default_rng(11)
    base, other = rng.normal(0, 1, 6), rng.normal(0.8, 1, 7)

    def abs_diff(b: np.ndarray, o: np.ndarray, axis: int) -> np.ndarray:
        return np.abs(o.mean(axis) - b.mean(axis))

    exact = sps.permutation_test(
        (base, other), abs_diff, n_resamples=np.inf, alternative="greater"
    ).pvalue
    assert 0.05 < exact < 0.5  # a p-value where a wrong null would show
    ours = stats.permutation_test(base, other, n_perm=20000, seed=0)
    assert ours.p_value == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20000))
    assert ours.statistic == pytest.approx(other.mean() - base.mean(), rel=1e-12)


def test_cluster_permutation_moves_whole_clusters() -> None:
    # Equal-sized clusters nested in groups: shuffling whole clusters between groups is the
    # permutation test on cluster means. 5 vs 5 clusters: C(10, 5) = 252 splits (exact in
    # scipy); Monte Carlo tolerance as above (4 SE at 20000 shuffles). The row-level test,
    # blind to the clusters, is far more confident than the 252 splits allow.
    rng = np.random.default_rng(9)
    base, other = _clustered(rng, 5, 8, 1.2)
    labels_b, labels_o = np.repeat(np.arange(5), 8), np.repeat(np.arange(5), 8) + 5
    exact = sps.permutation_test(
        (base.reshape(5, 8).mean(1), other.reshape(5, 8).mean(1)),
        lambda b, o, axis: np.abs(o.mean(axis) - b.mean(axis)),
        n_resamples=np.inf,
        alternative="greater",
    ).pvalue
    ours = stats.permutation_test(
        base, other, base_clusters=labels_b, other_clusters=labels_o, n_perm=20000, seed=1
    )
    se = np.sqrt(exact * (1 - exact) / 20000)
    assert ours.p_value == pytest.approx(exact, abs=max(4 * se, 2 / 20000))
    assert exact >= 2 / 252  # the smallest two-sided p with 5 + 5 units
    rows = stats.permutation_test(base, other, n_perm=20000, seed=1)
    assert rows.p_value < exact / 4


def test_a_cluster_on_both_sides_is_drawn_whole() -> None:
    # Every cluster holds one clean clip and its stressed versions, all sharing a strong
    # cluster effect (SD 1 vs clip SD 0.1). Drawing each cluster with both sides keeps the
    # covariance, so the interval reflects only the clip noise; labelling the sides apart
    # (each side's clips a cluster of their own) throws the covariance away.
    rng = np.random.default_rng(10)
    effect = rng.normal(0, 1, 20)
    base = effect + rng.normal(0, 0.1, 20)
    reps = np.repeat(np.arange(20), 3)
    other = effect[reps] + 0.3 + rng.normal(0, 0.1, 60)
    joint = stats.bootstrap_delta(base, other, base_clusters=np.arange(20), other_clusters=reps)
    apart = stats.bootstrap_delta(
        base, other, base_clusters=np.arange(20), other_clusters=reps + 20
    )
    assert joint.ci_low <= 0.3 <= joint.ci_high
    # Width ratio: SD of the clip-noise part (≈ 0.1·√(1/20 + 1/60)) over the SD with the
    # cluster effect (≈ √(2/20)): ≈ 0.08; 0.25 leaves room for bootstrap noise.
    assert (joint.ci_high - joint.ci_low) < 0.25 * (apart.ci_high - apart.ci_low)
    assert not joint.paired and (joint.n_clusters_base, joint.n_clusters_other) == (20, 20)


def test_paired_units_are_the_sources_clusters() -> None:
    # Six sources, two stressed versions each; sources 0 and 1 share a cluster (one phrase
    # read by two voices), so the paired bootstrap draws 5 units, not 6.
    rng = np.random.default_rng(12)
    base = rng.normal(5, 1, 6)
    pairs = np.repeat(np.arange(6), 2)
    other = base[pairs] - 0.5 + rng.normal(0, 0.1, 12)
    labels = np.array(["phrase:a", "phrase:a", "s2", "s3", "s4", "s5"], dtype=object)
    d = stats.bootstrap_delta(base, other, pairs=pairs, base_clusters=labels)
    assert d.paired and (d.n_base, d.n_clusters_base, d.n_clusters_other) == (6, 5, 5)
    assert d.estimate == pytest.approx(np.mean(other - base[pairs]), rel=1e-12)
    with pytest.raises(WspecError, match="at least 2 independent units"):
        stats.bootstrap_delta(base, other, pairs=pairs, base_clusters=["one"] * 6)
    with pytest.raises(WspecError, match="cluster labels"):
        stats.bootstrap_delta(base, other, base_clusters=labels[:5])


def test_holm_equals_statsmodels_exactly() -> None:
    # Same arithmetic (sorted p × (m − rank), running maximum, clipped at 1): bit-identical.
    rng = np.random.default_rng(13)
    p = np.concatenate([rng.uniform(0, 0.05, 8), rng.uniform(0, 1, 12), [0.01, 0.01, 0.9]])
    ref = multipletests(p, method="holm")[1]
    np.testing.assert_array_equal(stats.adjust_pvalues(p, "holm"), ref)
    # NaN cells are not tests: the others are adjusted as a family of the finite ones.
    with_nan = np.insert(p, [3, 7], np.nan)
    adjusted = stats.adjust_pvalues(with_nan, "holm")
    np.testing.assert_array_equal(adjusted[np.isfinite(with_nan)], ref)
    assert np.isnan(adjusted[[3, 8]]).all()
    # BH divides where statsmodels multiplies: equal to the last bit or two.
    np.testing.assert_allclose(
        stats.adjust_pvalues(p, "bh"), multipletests(p, method="fdr_bh")[1], rtol=1e-14
    )


# --------------------------------------------------------------------------- delta_table units


def _unit_results(with_units: bool = True) -> pd.DataFrame:
    """Six clean sentences, each followed by silence (the same input), non-speech of three
    kinds at three lengths (the three silences identical inputs), two layers."""
    rng = np.random.default_rng(14)
    clips = [(f"c{i}", "clean", "", f"source:c{i}", f"k-c{i}", 6 + 0.3 * i) for i in range(6)]
    clips += [
        (f"t{i}", "trailing_silence", f"c{i}", f"source:c{i}", f"k-c{i}", 6 + 0.3 * i)
        for i in range(6)
    ]
    for kind, level in (("silence", 3.0), ("noise", 4.0), ("hum", 5.0)):
        for length in (1, 10, 31):
            key = "k-zero" if kind == "silence" else f"k-{kind}-{length}"
            sid = f"nonspeech-{kind}-{length}s"
            clips.append((sid, "nonspeech", "", f"nonspeech:{kind}", key, level + 0.1 * length))
    rows = []
    for sid, family, source, cluster, key, value in clips:
        for layer in range(2):
            rows.append(
                {
                    "model": "tiny.en",
                    "stimulus_id": sid,
                    "family": family,
                    "source_id": source,
                    "cluster": cluster,
                    "input_key": key,
                    "layer": layer,
                    "component": "dec_cross_attn",
                    "control": "matched_T",
                    "metric": "n_eff",
                    "K": 10,
                    "value": value + 0.01 * rng.standard_normal(),
                }
            )
    frame = pd.DataFrame(rows)
    return frame if with_units else frame.drop(columns=list(stats.UNIT_COLUMNS))


def test_delta_table_resamples_clusters_and_counts_each_input_once() -> None:
    results = _unit_results()
    families = ["nonspeech", "trailing_silence"]
    table = stats.delta_table(
        results, components=["dec_cross_attn"], metrics=["n_eff"], stress_families=families
    )
    row = table.iloc[0]
    # The trailing-silence clips are their clean sources to Whisper: dropped. The three
    # silences are one input: 1 + 3 + 3 stressed clips from 3 generator kinds.
    assert (row["n_clean"], row["n_stressed"]) == (6, 7)
    assert (row["n_clusters_clean"], row["n_clusters_stressed"]) == (6, 3)
    assert not row["paired"]
    # The row is bootstrap_delta with the clusters, on the deduplicated layer means.
    values = stats.stimulus_values(results)
    clean = values[values["family"] == "clean"]
    kept = values[values["family"] == "nonspeech"].drop_duplicates("input_key")
    assert list(kept["stimulus_id"]).count("nonspeech-silence-10s") == 1  # first by id
    expected = stats.bootstrap_delta(
        clean["value"],
        kept["value"],
        base_clusters=clean["cluster"],
        other_clusters=kept["cluster"],
        kind="pct",
        seed=stats.cell_seed(0, "tiny.en", "dec_cross_attn", "n_eff", -1, "+".join(families)),
    )
    assert (row["estimate"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (expected.estimate, expected.ci_low, expected.ci_high), rel=1e-12
    )
    # Alone, trailing silence has no stressed input left: no cell.
    alone = stats.delta_table(results, stress_families=["trailing_silence"], by_family=True)
    assert alone.empty


def test_delta_table_omits_one_cluster_and_reads_old_tables() -> None:
    results = _unit_results()
    silence_only = results[~results["stimulus_id"].str.contains("noise|hum")]
    # Three silences = one input of one kind: one cluster, no interval.
    assert stats.delta_table(silence_only, stress_families=["nonspeech"]).empty
    # A table without cluster/input_key: one cluster per stimulus, no input merged.
    old = stats.delta_table(_unit_results(with_units=False), stress_families=["nonspeech"])
    row = old.iloc[0]
    assert (row["n_clean"], row["n_stressed"]) == (6, 9)
    assert (row["n_clusters_clean"], row["n_clusters_stressed"]) == (6, 9)
