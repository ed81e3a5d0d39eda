"""Verdict rules on constructed inputs: every outcome reachable, scopes and ranges honoured."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wspec import stats, verdicts
from wspec.errors import WspecError
from wspec.verdicts import CONFIRMED, INCONCLUSIVE, NOT_CONFIRMED


def _deltas(rows: list[tuple[str, str, str, float, float, float]]) -> pd.DataFrame:
    """delta_table-shaped rows: (model, component, metric, estimate, ci_low, ci_high)."""
    frame = pd.DataFrame(
        rows, columns=["model", "component", "metric", "estimate", "ci_low", "ci_high"]
    )
    return frame.assign(layer=stats.LAYER_MEAN, family="pgd_untargeted")


def test_ranges_derive_from_the_paper() -> None:
    # C1: Tiny −7.56, Small −9.54, abstract −13.4 → [2·(−13.4), ½·(−7.56)].
    assert pytest.approx((-26.8, -3.78)) == verdicts.C1_RANGE
    # C3: Δα +0.25, +0.24, +0.17 → [½·0.17, 2·0.25].
    assert pytest.approx((0.085, 0.5)) == verdicts.C3_RANGE
    assert pytest.approx((-4.68, 1.0)) == verdicts.C2_RANGE


@pytest.mark.parametrize(
    ("lo", "hi", "expected", "reason"),
    [
        (-12.0, -8.0, CONFIRMED, "overlaps"),
        (1.0, 3.0, NOT_CONFIRMED, "opposite"),
        (-1.0, -0.5, NOT_CONFIRMED, "magnitude"),
        (-0.5, 0.5, NOT_CONFIRMED, "includes 0 and excludes"),
        (-10.0, 1.0, INCONCLUSIVE, "both"),
        (float("nan"), 1.0, INCONCLUSIVE, "missing"),
    ],
)
def test_judge_direction_outcomes(lo: float, hi: float, expected: str, reason: str) -> None:
    verdict, why = verdicts.judge_direction(lo, hi, sign=-1, claimed=verdicts.C1_RANGE)
    assert verdict == expected and reason in why


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [(-1.0, 0.5, CONFIRMED), (-8.0, -6.0, NOT_CONFIRMED), (-3.0, 2.0, INCONCLUSIVE)],
)
def test_judge_within_outcomes(lo: float, hi: float, expected: str) -> None:
    assert verdicts.judge_within(lo, hi, claimed=verdicts.C2_RANGE)[0] == expected


def test_c1_combines_in_scope_models_only() -> None:
    rows = [
        ("tiny.en", "dec_cross_attn", "n_eff", -9.0, -11.0, -7.0),
        ("base", "dec_cross_attn", "n_eff", -8.0, -10.0, -6.0),
        # A large model rising would contradict C1 if it were in scope; it is not.
        ("large-v3-turbo", "dec_cross_attn", "n_eff", 5.0, 4.0, 6.0),
    ]
    v = verdicts.judge_c1(_deltas(rows))
    assert v.verdict == CONFIRMED
    assert [m.model for m in v.per_model] == ["base", "tiny.en"]
    rows[1] = ("base", "dec_cross_attn", "n_eff", -3.0, -8.0, 1.0)
    assert verdicts.judge_c1(_deltas(rows)).verdict == INCONCLUSIVE
    rows[1] = ("base", "dec_cross_attn", "n_eff", 2.0, 1.0, 3.0)
    assert verdicts.judge_c1(_deltas(rows)).verdict == NOT_CONFIRMED


def test_c2_needs_a_large_model() -> None:
    small_only = _deltas([("tiny.en", "dec_self_attn", "n_eff", -0.1, -1.0, 0.8)])
    v = verdicts.judge_c2(small_only)
    assert v.verdict == INCONCLUSIVE and "not tested" in v.reason
    large = _deltas([("openai/whisper-large-v3-turbo", "dec_self_attn", "n_eff", -0.2, -1.0, 0.5)])
    assert verdicts.judge_c2(large).verdict == CONFIRMED
    collapse = _deltas([("large-v3", "dec_self_attn", "n_eff", -7.0, -8.0, -6.0)])
    assert verdicts.judge_c2(collapse).verdict == NOT_CONFIRMED


def test_c3_and_glue_items() -> None:
    rows = [("tiny.en", "dec_cross_attn", "alpha", 0.2, 0.15, 0.25)]
    v = verdicts.judge_c3(_deltas(rows))
    assert v.verdict == CONFIRMED
    items = v.glue_items()
    assert items["C3_verdict"] == CONFIRMED
    assert items["C3_tiny_en_estimate"] == pytest.approx(0.2)
    assert all(isinstance(x, (str, float)) for x in items.values())
    flat = _deltas([("tiny.en", "dec_cross_attn", "alpha", 0.0, -0.01, 0.01)])
    assert verdicts.judge_c3(flat).verdict == NOT_CONFIRMED  # CI rules out Δα ≥ 0.085


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


def test_c4_from_baseline_comparison() -> None:
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
    v = verdicts.judge_c4(base)
    assert v.verdict == CONFIRMED
    assert v.evidence["tiny.en static estimate"] == pytest.approx(static["estimate"])

    def c4(drop: float) -> str:
        frame = stats.baseline_comparison(
            *_baseline_data(drop)[:2],
            model="tiny.en",
            component="dec_cross_attn",
            n_boot=500,
            n_perm=500,
        )
        return verdicts.judge_c4(frame).verdict

    # No drop: the unpaired CI (between-stimulus SD 5 %) spans about ±3 %, covering both 0 and
    # the claimed ≤ −1 % region. A rise of 10 % lies on the opposite side of 0.
    assert c4(0.0) == INCONCLUSIVE
    assert c4(0.10) == NOT_CONFIRMED


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


def test_c6_and_evaluate_claims() -> None:
    det = pd.DataFrame(
        {
            "model": ["tiny.en", "base", "small"],
            "feature": ["dec_cross_attn/alpha"] * 3,
            "auroc": [0.8, 0.5, 0.6],
            "ci_low": [0.7, 0.4, 0.45],
            "ci_high": [0.9, 0.58, 0.75],
        }
    )
    v = verdicts.judge_c6(det)
    assert [(m.model, m.verdict) for m in v.per_model] == [
        ("base", NOT_CONFIRMED),
        ("small", INCONCLUSIVE),
        ("tiny.en", CONFIRMED),
    ]
    assert v.verdict == NOT_CONFIRMED
    deltas = _deltas([("tiny.en", "dec_cross_attn", "n_eff", -9.0, -11.0, -7.0)])
    all_claims = verdicts.evaluate_claims(deltas, detection=det)
    table = verdicts.verdict_table(all_claims)
    assert list(table["claim_id"]) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert table.set_index("claim_id").loc["C4", "verdict"] == INCONCLUSIVE  # no baselines given
