"""Verdict rules on constructed inputs: every outcome reachable, one rule for every claim,
scopes, bands and the Holm family honoured."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from wspec import stats, verdicts
from wspec.errors import WspecError
from wspec.verdicts import (
    CONFIRMED,
    CONSISTENT,
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_CONFIRMED,
    NOT_CONSISTENT,
)


def _deltas(rows: list[tuple[str, str, str, float, float, float]]) -> pd.DataFrame:
    """delta_table-shaped rows: (model, component, metric, estimate, ci_low, ci_high)."""
    frame = pd.DataFrame(
        rows, columns=["model", "component", "metric", "estimate", "ci_low", "ci_high"]
    )
    return frame.assign(layer=stats.LAYER_MEAN, family="pgd_untargeted")


def test_bands_derive_from_the_paper_by_one_rule() -> None:
    # One band rule: each published v gives [v/2, 2v] widened to v ± δ near zero; the hull.
    assert pytest.approx({"n_eff": 0.76, "alpha": 0.007}) == verdicts.NEAR_ZERO
    # C1: Tiny −7.56, Small −9.54, abstract −13.4 → [2·(−13.4), ½·(−7.56)].
    assert pytest.approx((-26.8, -3.78)) == verdicts.C1_RANGE
    # C3: Δα +0.25, +0.24, +0.17 → [½·0.17, 2·0.25] (δ = 0.007 is below v/2 everywhere).
    assert pytest.approx((0.085, 0.5)) == verdicts.C3_RANGE
    # C2: abstract −2.34 → [−4.68, −1.17]; Large +0.04 is near zero: ±0.76 → [−0.72, +0.80].
    # (The old rule hand-set +1 % as C2's upper end; the floor now comes from Table 1.)
    assert pytest.approx((-4.68, 0.80)) == verdicts.C2_RANGE
    signs = {cid: claim.sign for cid, claim in verdicts.CHANGE_CLAIMS.items()}
    assert signs == {"C1": -1, "C2": -1, "C3": +1}


@pytest.mark.parametrize(
    ("lo", "hi", "direction", "magnitude", "verdict"),
    [
        (-12.0, -8.0, CONFIRMED, CONSISTENT, CONFIRMED),
        (-40.0, -30.0, CONFIRMED, NOT_CONSISTENT, NOT_CONFIRMED),  # right sign, far too big
        (-1.0, -0.5, CONFIRMED, NOT_CONSISTENT, NOT_CONFIRMED),  # right sign, far too small
        (1.0, 3.0, CONTRADICTED, NOT_CONSISTENT, NOT_CONFIRMED),
        (-0.5, 0.5, INCONCLUSIVE, NOT_CONSISTENT, NOT_CONFIRMED),  # rules out the paper's size
        (-10.0, 1.0, INCONCLUSIVE, CONSISTENT, INCONCLUSIVE),  # allows 0 and the paper's size
        (float("nan"), 1.0, INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE),
    ],
)
def test_judge_change_outcomes(
    lo: float, hi: float, direction: str, magnitude: str, verdict: str
) -> None:
    d, m, v, reason = verdicts.judge_change(lo, hi, sign=-1, band=verdicts.C1_RANGE)
    assert (d, m, v) == (direction, magnitude, verdict)
    assert f"direction {direction}" in reason and f"magnitude {magnitude}" in reason
    assert verdicts.combine_parts(direction, magnitude) == verdict


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.9, 2.5, 4.0, 6.0])
def test_one_rule_for_every_claim(factor: float) -> None:
    # A CI of ±10 % around `factor` × a claim's largest published value gets the same
    # verdict for C1 (ΔN_eff, −13.4 %) and C3 (Δα, +0.25): the rule looks only at where the
    # CI lies relative to the paper's numbers (sign, and the band whose upper end is 2× the
    # largest value for every claim), never at which claim it is. So a CI at 4× is "not
    # confirmed" for C1 exactly as a CI at 6× is for C3.
    def ci(claim: verdicts.ChangeClaim) -> tuple[float, float]:
        biggest = max(claim.values, key=abs)
        return tuple(sorted((0.9 * factor * biggest, 1.1 * factor * biggest)))

    outcomes = {}
    for cid, metric in (("C1", "n_eff"), ("C3", "alpha")):
        lo, hi = ci(verdicts.CHANGE_CLAIMS[cid])
        rows = _deltas([("tiny.en", "dec_cross_attn", metric, (lo + hi) / 2, lo, hi)])
        judged = getattr(verdicts, f"judge_{cid.lower()}")(rows)
        outcomes[cid] = (judged.direction, judged.magnitude, judged.verdict)
    # 0.9·1.9 = 1.71 < 2 still overlaps the band; 0.9·2.5 = 2.25 lies above it.
    magnitude = CONSISTENT if factor <= 1.9 else NOT_CONSISTENT
    verdict = CONFIRMED if factor <= 1.9 else NOT_CONFIRMED
    assert outcomes == {cid: (CONFIRMED, magnitude, verdict) for cid in ("C1", "C3")}


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(1.1, 1.8, CONFIRMED), (2.5, 3.0, NOT_CONFIRMED), (1.5, 2.5, INCONCLUSIVE)],
)
def test_judge_within_outcomes(lo: float, hi: float, expected: str) -> None:
    assert verdicts.judge_within(lo, hi, claimed=(1.0, verdicts.C5_MAX_FACTOR))[0] == expected


def test_c1_combines_in_scope_models_only() -> None:
    rows = [
        ("tiny.en", "dec_cross_attn", "n_eff", -9.0, -11.0, -7.0),
        ("base", "dec_cross_attn", "n_eff", -8.0, -10.0, -6.0),
        # A large model rising would contradict C1 if it were in scope; it is not.
        ("large-v3-turbo", "dec_cross_attn", "n_eff", 5.0, 4.0, 6.0),
    ]
    v = verdicts.judge_c1(_deltas(rows))
    assert (v.verdict, v.direction, v.magnitude) == (CONFIRMED, CONFIRMED, CONSISTENT)
    assert [m.model for m in v.per_model] == ["base", "tiny.en"]
    rows[1] = ("base", "dec_cross_attn", "n_eff", -3.0, -8.0, 1.0)
    v = verdicts.judge_c1(_deltas(rows))
    assert (v.verdict, v.direction, v.magnitude) == (INCONCLUSIVE, INCONCLUSIVE, CONSISTENT)
    rows[1] = ("base", "dec_cross_attn", "n_eff", 2.0, 1.0, 3.0)
    v = verdicts.judge_c1(_deltas(rows))
    assert (v.verdict, v.direction, v.magnitude) == (NOT_CONFIRMED, CONTRADICTED, NOT_CONSISTENT)


def test_c2_near_zero_and_scope() -> None:
    small_only = _deltas([("tiny.en", "dec_self_attn", "n_eff", -0.1, -1.0, 0.8)])
    v = verdicts.judge_c2(small_only)
    assert v.verdict == INCONCLUSIVE and "not tested" in v.reason
    large = "openai/whisper-large-v3-turbo"

    def c2(lo: float, hi: float) -> verdicts.ModelVerdict:
        return verdicts.judge_c2(_deltas([(large, "dec_self_attn", "n_eff", 0, lo, hi)])).per_model[
            0
        ]

    # A CI around zero fits Table 1's +0.04 % but not a sign: inconclusive, not confirmed.
    # (The old within-range rule called this "confirmed"; a claim gets its sign's verdict
    # only from a CI that excludes zero.)
    assert (c2(-1.0, 0.5).direction, c2(-1.0, 0.5).verdict) == (INCONCLUSIVE, INCONCLUSIVE)
    assert c2(-2.0, -0.5).verdict == CONFIRMED  # the abstract's compression, same order
    assert (c2(-8.0, -6.0).magnitude, c2(-8.0, -6.0).verdict) == (NOT_CONSISTENT, NOT_CONFIRMED)
    assert c2(0.9, 2.0).verdict == NOT_CONFIRMED  # a rise: contradicted


def test_c3_and_glue_items() -> None:
    rows = [("tiny.en", "dec_cross_attn", "alpha", 0.2, 0.15, 0.25)]
    v = verdicts.judge_c3(_deltas(rows))
    assert v.verdict == CONFIRMED
    items = v.glue_items()
    assert items["C3_verdict"] == CONFIRMED and items["C3_magnitude"] == CONSISTENT
    assert items["C3_tiny_en_estimate"] == pytest.approx(0.2)
    assert items["C3_tiny_en_direction"] == CONFIRMED
    assert all(isinstance(x, (str, float)) for x in items.values())
    flat = _deltas([("tiny.en", "dec_cross_attn", "alpha", 0.0, -0.01, 0.01)])
    assert verdicts.judge_c3(flat).verdict == NOT_CONFIRMED  # CI rules out Δα ≥ 0.085


def test_holm_over_the_claims_primary_tests() -> None:
    rows = _deltas(
        [
            ("tiny.en", "dec_cross_attn", "n_eff", -9.0, -11.0, -7.0),
            ("base", "dec_cross_attn", "n_eff", -8.0, -10.0, -6.0),
            ("tiny.en", "dec_cross_attn", "alpha", 0.2, 0.15, 0.25),
            ("base", "dec_cross_attn", "alpha", 0.1, -0.05, 0.25),
            ("large-v3", "dec_self_attn", "n_eff", -1.0, -2.0, 0.1),
            # Not a primary test of any claim: outside the family.
            ("tiny.en", "dec_ffn", "n_eff", -1.0, -2.0, 0.1),
        ]
    ).assign(p_value=[0.001, 0.004, 0.01, 0.3, 0.04, 0.0001])
    tests = verdicts.claim_tests(rows)
    assert list(zip(tests["claim_id"], tests["model"], strict=True)) == [
        ("C1", "base"),
        ("C1", "tiny.en"),
        ("C2", "large-v3"),
        ("C3", "base"),
        ("C3", "tiny.en"),
    ]
    expected = multipletests(tests["p_value"], method="holm")[1]
    np.testing.assert_array_equal(tests["p_holm"], expected)
    c3 = verdicts.judge_c3(rows).per_model
    assert [m.p_holm for m in c3] == list(tests.loc[tests["claim_id"] == "C3", "p_holm"])
    table = verdicts.verdict_table([verdicts.judge_c1(rows), verdicts.judge_c2(rows[:1])])
    assert list(table["model"]) == ["base", "tiny.en", ""]  # C2: no large model in scope
    assert table.loc[2, "reason"].startswith("not tested")
    assert np.isfinite(table.loc[0, "p_holm"]) and table.loc[0, "direction"] == CONFIRMED


def test_several_families_need_a_choice() -> None:
    rows = _deltas([("tiny.en", "dec_cross_attn", "n_eff", -9.0, -11.0, -7.0)])
    both = pd.concat([rows, rows.assign(family="nonspeech", ci_low=1.0, ci_high=2.0)])
    with pytest.raises(WspecError, match="family"):
        verdicts.judge_c1(both)
    assert verdicts.judge_c1(both, family="pgd_untargeted").verdict == CONFIRMED
    assert verdicts.judge_c1(both, family="nonspeech").verdict == NOT_CONFIRMED


def _baseline_data(drop: float, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Results + labels for tiny.en and an untrained reference on the same stimuli.

    30 clean (5 of them hallucinated, the rest healthy), 30 stressed versions of the clean
    ones (20 hallucinated with N_eff scaled by 1 + drop, 10 survived unchanged). The reference
    model's N_eff is 20 % higher everywhere (static compression of the trained model).
    """
    rng = np.random.default_rng(seed)
    level = 6 * (1 + 0.05 * rng.standard_normal(30))
    rows, labels = [], []
    for i in range(30):
        rows.append((f"c{i}", "clean", "", level[i]))
        labels.append((f"c{i}", "clean", i < 5))
        hallucinated = i < 20
        value = level[i] * ((1 + drop) if hallucinated else 1.0)
        rows.append((f"p{i}", "pgd_untargeted", f"c{i}", value))
        labels.append((f"p{i}", "pgd_untargeted", hallucinated))

    def table(model: str, scale: float) -> pd.DataFrame:
        out = []
        for sid, fam, src, val in rows:
            for layer in range(2):
                noisy = val * scale + 0.05 * rng.standard_normal()
                out.append(
                    (model, sid, fam, src, layer, "dec_cross_attn", "matched_T", "n_eff", 10, noisy)
                )
        return pd.DataFrame(out, columns=list(stats.RESULT_COLUMNS))

    lab = pd.DataFrame(labels, columns=["stimulus_id", "family", "hallucinated"]).assign(
        model="tiny.en"
    )
    return table("tiny.en", 1.0), lab, table("random:tiny", 1.2)


def test_baseline_comparison_splits_decodes_by_what_the_model_did() -> None:
    """The Referee chapter's descriptive table (C4 itself is judged within family: see
    tests/test_contrasts.py)."""
    results, labels, reference = _baseline_data(drop=-0.10)
    base = stats.baseline_comparison(
        results,
        labels,
        model="tiny.en",
        component="dec_cross_attn",
        reference=reference,
        n_boot=500,
        n_perm=500,
    )
    assert list(base["comparison"]) == [
        "hallucinated vs healthy",
        "not hallucinated vs healthy",
        "healthy vs reference (random:tiny)",
    ]
    rec = base.set_index("comparison")
    assert (
        rec.loc["hallucinated vs healthy", "ci_low"]
        <= -10
        <= rec.loc["hallucinated vs healthy", "ci_high"]
    )
    # Survivors are unchanged up to layer noise (SD ≈ 0.6 % per stimulus, ≈ 0.2 % on the mean
    # of 10 pairs), so |Δ| < 1 % is a 5-SD bound.
    survived = rec.loc["not hallucinated vs healthy"]
    assert survived["paired"] and abs(survived["estimate"]) < 1.0
    # Healthy tiny.en vs a reference 20 % higher: −1/6 ≈ −16.7 %.
    static = rec.loc["healthy vs reference (random:tiny)"]
    assert static["paired"] and static["ci_low"] <= -16.67 <= static["ci_high"]
    assert rec.loc["hallucinated vs healthy", "n_clean"] == 25  # healthy = clean, not hallucinated


def _jacobian(layer_gains: list[float], noise: float, steps: int, seed: int = 0) -> pd.DataFrame:
    """Jacobian-table rows: ρ_j = gain_j · LogNormal(0, noise) per decoding step; plus
    encoder rows with wildly varying gains that C5 must ignore (the claim is about the decoder)."""
    rng = np.random.default_rng(seed)
    rows = [
        ("tiny.en", "decoder", layer, step, gain * rng.lognormal(0, noise))
        for step in range(steps)
        for layer, gain in enumerate(layer_gains)
    ]
    rows += [("tiny.en", "encoder", layer, -1, 10.0**layer) for layer in range(4)]
    return pd.DataFrame(rows, columns=["model", "stack", "layer", "step", "rho"])


def test_c5_gain_stability_outcomes() -> None:
    stable = verdicts.judge_c5(_jacobian([1.0, 1.02, 0.98, 1.01], noise=0.05, steps=40))
    assert stable.verdict == CONFIRMED
    # Gains 0.5, 1, 1.5, 2: log-deviations from the mean sum to at most 0.888 over a tail
    # (layers 2–3), so the partial-product factor is e^0.888 ≈ 2.43 > 2.
    varying = verdicts.judge_c5(_jacobian([0.5, 1.0, 1.5, 2.0], noise=0.05, steps=40))
    assert varying.verdict == NOT_CONFIRMED
    assert varying.per_model[0].estimate == pytest.approx(2.43, abs=0.05)  # noise 5 %
    assert varying.evidence["tiny.en frac_same_side"] == 0.0
    # Factor ≈ 2.0 with 20 % noise on 8 steps: the CI straddles the threshold.
    borderline = verdicts.judge_c5(_jacobian([0.6, 1.0, 1.4, 1.8], noise=0.2, steps=8))
    assert borderline.verdict == INCONCLUSIVE
    with pytest.raises(WspecError, match="rho"):
        verdicts.judge_c5(_jacobian([1.0, 1.0], 0.1, 5).drop(columns=["rho"]))


def test_c5_resamples_decodes_not_steps() -> None:
    # Three decoding steps of one decode are not three independent measurements. When every
    # stimulus's steps are identical copies, drawing stimuli is exactly the bootstrap of one
    # step per stimulus (the expanded sample's median is the stimuli's median), while
    # resampling steps pretends to 3× the data and narrows the interval.
    rng = np.random.default_rng(3)
    gains = [1.0, 1.3, 0.8, 1.1]
    profiles = [np.array(gains) * rng.lognormal(0, 0.3, 4) for _ in range(12)]
    rows = [
        ("tiny.en", f"s{i}", "decoder", layer, step, rho)
        for i, profile in enumerate(profiles)
        for step in range(3)
        for layer, rho in enumerate(profile)
    ]
    columns = ["model", "stimulus_id", "stack", "layer", "step", "rho"]
    jac = pd.DataFrame(rows, columns=columns)
    by_stimulus = verdicts.gain_stability(jac, n_boot=1000).iloc[0]
    one_step = verdicts.gain_stability(jac[jac["step"] == 0], n_boot=1000).iloc[0]
    assert (by_stimulus["n_units"], by_stimulus["n_clusters"]) == (36, 12)
    assert (by_stimulus["ci_low"], by_stimulus["ci_high"]) == pytest.approx(
        (one_step["ci_low"], one_step["ci_high"]), abs=1e-12
    )
    per_step = verdicts.gain_stability(
        jac.drop(columns=["stimulus_id"]).assign(
            step=jac["step"] + 10 * jac["stimulus_id"].str[1:].astype(int)
        ),
        n_boot=1000,
    ).iloc[0]
    assert per_step["n_clusters"] == 36
    width = by_stimulus["ci_high"] - by_stimulus["ci_low"]
    assert per_step["ci_high"] - per_step["ci_low"] < 0.8 * width
    with pytest.raises(WspecError, match="at least 2 independent units"):
        verdicts.gain_stability(jac[jac["stimulus_id"] == "s0"])


def test_cluster_medians_equal_numpy_on_the_expanded_sample() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=9)
    clusters = ["a", "a", "b", "c", "c", "c", "d", "e", "e"]
    medians = verdicts.cluster_medians(values, clusters, 50, np.random.default_rng(1))
    # Replay the draws: cluster counts per replicate, each value repeated by its cluster's.
    codes = pd.factorize(pd.Series(clusters))[0]
    counts = stats.resample_counts(np.random.default_rng(1), 5, 50)[:, codes].astype(int)
    expected = [np.median(np.repeat(values, c)) for c in counts]
    np.testing.assert_allclose(medians, expected, rtol=0, atol=1e-15)


def test_c6_gain_rule() -> None:
    """Best of the four comparisons per model; the all-clips set never counts."""

    def rows(model, gains):
        sets = ["speech-derived", "speech-derived", "confident", "confident", "all"]
        comps = ["(c) − (a)", "(e) − (a)"] * 2 + ["(c) − (a)"]
        return [
            {"model": model, "set": s, "comparison": c, "gain": g, "gain_low": lo, "gain_high": hi}
            for s, c, (g, lo, hi) in zip(sets, comps, gains, strict=True)
        ]

    low = (-0.1, -0.2, 0.01)  # CI entirely below C6_MIN_GAIN
    wide = (0.0, -0.1, 0.1)
    nan = (float("nan"),) * 3
    det = pd.DataFrame(
        rows("tiny.en", [low, low, low, (0.05, 0.01, 0.09), (0.3, 0.2, 0.4)])  # one confirmed
        + rows("base", [low, low, low, low, (0.3, 0.2, 0.4)])  # only "all" beats (a)
        + rows("small", [low, wide, nan, low, low])
    )
    v = verdicts.judge_c6(det)
    assert [(m.model, m.verdict, m.ci_low) for m in v.per_model] == [
        ("base", NOT_CONFIRMED, -0.2),
        ("small", INCONCLUSIVE, -0.1),
        ("tiny.en", CONFIRMED, 0.01),
    ]
    assert v.per_model[2].reason.startswith("confident set, (e) − (a)")
    assert v.verdict == NOT_CONFIRMED
