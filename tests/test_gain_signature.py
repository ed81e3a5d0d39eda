"""Clip-level gain/alignment intervals and the circularity test (measured rho vs signature)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from wspec import crossmodel as xm
from wspec import gain_signature as gs


def test_weighted_spearman_is_spearman_of_the_expanded_sample() -> None:
    """Every bootstrap replicate equals scipy's Spearman on the clips repeated as drawn,
    ties (in the data and from duplicates) included."""
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=12), 1)  # rounding makes ties
    y = np.round(x + rng.normal(size=12), 1)
    weights = rng.integers(0, 4, size=(20, 12))
    weights[:, 0] += 1  # never an empty replicate
    got = gs.weighted_spearman(x, y, weights)
    for row, value in zip(weights, got, strict=True):
        expected = stats.spearmanr(np.repeat(x, row), np.repeat(y, row)).statistic
        assert value == pytest.approx(expected, abs=1e-12)


def test_rank_correlation_matches_scipy_and_finds_a_planted_relation() -> None:
    """A monotone (noisy, non-linear) relation over 24 clips in 12 units: the point estimate
    is scipy's, and the cluster-bootstrap interval excludes 0."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=24)
    y = np.exp(x) + rng.normal(scale=0.3, size=24)
    units = np.repeat(np.arange(12), 2)
    corr = gs.rank_correlation(x, y, units, n_boot=2000, seed=3)
    assert corr.spearman == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert corr.n == 24 and corr.n_units == 12
    assert corr.ci_low > 0.3 and corr.ci_low <= corr.spearman <= corr.ci_high


def test_rank_correlation_covers_zero_without_a_relation() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=24), rng.normal(size=24)
    corr = gs.rank_correlation(x, y, np.repeat(np.arange(12), 2), n_boot=2000, seed=3)
    assert corr.ci_low < 0 < corr.ci_high


def test_rank_correlation_needs_enough_units() -> None:
    """Six clips from two sources are two draws: an estimate, but no interval."""
    x = np.arange(6.0)
    corr = gs.rank_correlation(x, x**2, ["a", "a", "a", "b", "b", "b"])
    assert corr.spearman == pytest.approx(1.0)
    assert np.isnan(corr.ci_low) and np.isnan(corr.ci_high) and corr.n_units == 2


def _jacobian(clips: dict[str, tuple[str, str, list[list[float]]]]) -> pd.DataFrame:
    """A measure_clips-like table: {clip: (family, cluster, rho[step][layer])}, kappa 2x null."""
    rows = []
    for sid, (family, cluster, steps) in clips.items():
        for step, layers in enumerate(steps):
            for layer, rho in enumerate([*layers, np.nan]):  # the last layer has no rho
                rows.append(
                    {
                        "model": "m",
                        "stimulus_id": sid,
                        "family": family,
                        "cluster": cluster,
                        "stack": "decoder",
                        "layer": layer,
                        "step": step,
                        "position": step + 3,
                        "rho": rho,
                        "sigma1": 2 * rho,
                        "kappa": 0.5,
                        "kappa_null": 0.25,
                        "kappa_sub": 0.3,
                        "kappa_sub_null": 0.3,
                    }
                )
    return pd.DataFrame(rows)


def test_gain_alignment_table_averages_clips_not_positions() -> None:
    """A clip measured at 5 steps weighs as much as one measured at 1 step; rho_bar is the
    geometric mean; kappa ratios come out against their nulls."""
    jac = _jacobian(
        {
            "c1": ("clean", "u1", [[1.0, 1.0]] * 5),
            "c2": ("clean", "u2", [[4.0, 4.0]]),
            "s1": ("hell", "u1", [[2.0, 8.0]] * 2),
        }
    )
    table = gs.gain_alignment_table(jac, n_boot=200, min_units=2)
    table = table.set_index(["group", "quantity"])
    clean = table.loc["clean"]
    assert clean.loc["rho", "estimate"] == pytest.approx(2.0)  # sqrt(1 * 4), not 4^(1/6)
    assert clean.loc["kappa_ratio", "estimate"] == pytest.approx(2.0)
    assert clean.loc["kappa_sub_ratio", "estimate"] == pytest.approx(1.0)
    assert clean.loc["frac_rho_ge_1", "estimate"] == pytest.approx(1.0)
    assert clean.loc["rho", "n_clips"] == 2 and clean.loc["rho", "n_units"] == 2
    assert clean.loc["rho", "ci_low"] == pytest.approx(1.0)  # both clips drawn as c1
    assert clean.loc["rho", "ci_high"] == pytest.approx(4.0)
    stressed = table.loc["stressed"]
    assert stressed.loc["rho", "estimate"] == pytest.approx(4.0)
    assert stressed.loc["partial_factor", "estimate"] == pytest.approx(2.0)  # 8 / rho_bar
    default = gs.gain_alignment_table(jac, n_boot=200)  # two units: no interval by default
    assert default["ci_low"].isna().all() and np.isfinite(default["estimate"]).all()
    assert gs.chance_reading(np.nan, np.nan) == "no interval"
    assert gs.format_estimate(0.187, np.nan, np.nan) == "0.19 (no interval)"


def _results(values: dict[str, tuple[str, str, float, float]], control: str) -> pd.DataFrame:
    """Results rows {clip: (family, source_id, n_eff, alpha)} at two layers (same value)."""
    rows = []
    for sid, (family, source, n_eff, alpha) in values.items():
        for metric, value in (("n_eff", n_eff), ("alpha", alpha)):
            for layer in (0, 1):
                rows.append(
                    {
                        "model": "m",
                        "stimulus_id": sid,
                        "family": family,
                        "source_id": source,
                        "layer": layer,
                        "component": "dec_cross_attn",
                        "control": control,
                        "metric": metric,
                        "K": 10,
                        "value": value,
                        "n_tokens": 30,
                    }
                )
    return pd.DataFrame(rows)


def test_clip_signature_uses_the_source_else_the_clean_mean() -> None:
    results = _results(
        {
            "long-a": ("long_clean", "", 10.0, 1.0),
            "long-b": ("long_clean", "", 6.0, 2.0),
            "hell-a": ("hell", "long-a", 8.0, 1.5),
            "syll": ("repeated_syllables", "", 4.0, 3.0),
        },
        "natural_T",
    )
    assert gs.signature_control(results) == "natural_T"
    sig = gs.clip_signature(results, control="natural_T").set_index("stimulus_id")
    assert sig.loc["hell-a", "reference"] == "source"
    assert sig.loc["hell-a", "d_n_eff_pct"] == pytest.approx(-20.0)
    assert sig.loc["hell-a", "d_alpha"] == pytest.approx(0.5)
    assert sig.loc["syll", "reference"] == "clean mean"
    assert sig.loc["syll", "d_n_eff_pct"] == pytest.approx(-50.0)  # against (10 + 6) / 2
    assert sig.loc["long-b", "d_alpha"] == pytest.approx(0.5)
    assert gs.defined_clips(sig.reset_index(), ["m"]) == ["hell-a", "long-a", "long-b", "syll"]


def test_signature_control_falls_back_when_natural_T_is_undefined() -> None:
    results = pd.concat(
        [
            _results({"a": ("clean", "", np.nan, np.nan)}, "natural_T"),
            _results({"a": ("clean", "", 5.0, 1.0)}, "raw"),
        ]
    )
    assert gs.signature_control(results) == "raw"


def test_circularity_table_recovers_a_planted_relation() -> None:
    """Clips whose measured rho is larger lose more N_eff and gain more alpha: the mean
    predictor's intervals exclude 0 in the theory's direction and the reading says so."""
    rng = np.random.default_rng(4)
    clips, sig = {}, []
    for i in range(16):
        rho = float(np.exp(rng.normal(scale=0.5)))
        family = "long_clean" if i < 8 else "hell"
        clips[f"c{i}"] = (family, f"u{i}", [[rho, rho * 1.1]] * 3)
        sig.append(
            {
                "model": "m",
                "stimulus_id": f"c{i}",
                "d_n_eff_pct": -30 * np.log(rho) + rng.normal(scale=5.0),
                "d_alpha": 0.4 * np.log(rho) + rng.normal(scale=0.05),
            }
        )
    table = gs.circularity_table(_jacobian(clips), pd.DataFrame(sig), n_boot=1000)
    mean = table[(table["predictor"] == "mean") & (table["clips"] == "all")]
    by_target = mean.set_index("target")
    assert by_target.loc["d_n_eff_pct", "ci_high"] < 0 < by_target.loc["d_alpha", "ci_low"]
    assert by_target.loc["d_alpha", "n"] == 16
    assert all("as the theory predicts" in gs.reading(row) for _, row in mean.iterrows())
    assert set(table["predictor"]) == {"mean", "layer 0", "layer 1"}
    stressed = table[(table["clips"] == "stressed") & (table["predictor"] == "mean")]
    assert (stressed["n"] == 8).all()
    sentence = gs.correlation_sentence(table, "m")
    assert sentence.startswith("`m` (16 clips, 16 units): Spearman(ρ̄, ΔN_eff) = −0.")


def test_circularity_without_enough_units_says_so() -> None:
    """Four clips of three units (the reduced build): estimates, no interval, plain words."""
    clips = {f"c{i}": ("hell", f"u{min(i, 2)}", [[1.0 + i, 2.0]]) for i in range(4)}
    sig = pd.DataFrame(
        {"model": "m", "stimulus_id": list(clips), "d_n_eff_pct": [0, -1, -2, -3.0]}
    ).assign(d_alpha=[0, 1, 2, 3.0])
    table = gs.circularity_table(_jacobian(clips), sig, n_boot=100)
    assert table["ci_low"].isna().all()
    sentence = gs.correlation_sentence(table, "m")
    assert "(4 clips, 3 units): Spearman(ρ̄, ΔN_eff) = −1.00, Spearman(ρ̄, Δα) = +1.00" in sentence
    assert "no interval" in sentence
    assert "too few independent units" in gs.reading(table.iloc[0])


def test_pick_clips_spreads_units_and_respects_eligibility() -> None:
    """Hell clips come one source at a time, each source under a different condition; only
    eligible ids are drawn; the output says which side each clip is on."""
    rows = [
        {"id": f"long-{s}", "family": "long_clean", "source_id": "", "duration_s": 16.0}
        for s in range(3)
    ]
    rows += [
        {"id": f"hell-{s}-{c}", "family": "hell", "source_id": f"long-{s}", "duration_s": 9.0}
        for s in range(3)
        for c in range(3)
    ]
    stim = pd.DataFrame(rows).assign(params=json.dumps({}))
    chosen = xm.pick_clips(
        stim,
        n_clean=2,
        n_stressed=4,
        clean_families=("long_clean",),
        stress_order=("hell",),
        eligible=[r["id"] for r in rows if r["id"] != "hell-1-1"],
    )
    # round 0: each source's k-th eligible clip (source 1 lacks hell-1-1), then round 1
    expected = ["long-0", "long-1", "hell-0-0", "hell-1-2", "hell-2-2", "hell-0-1"]
    assert chosen["id"].tolist() == expected
    assert chosen["group"].tolist() == ["clean"] * 2 + ["stressed"] * 4
    units = gs.clip_units(chosen)
    assert units.iloc[2] == "source:long-0" and units.iloc[0] == "source:long-0"


def test_correlation_reading_judges_the_interval_against_the_predicted_sign() -> None:
    read = gs.correlation_reading
    assert "as the theory predicts" in read(-0.6, -0.1, -1, "q", "N_eff")
    assert "against the theory's direction" in read(0.1, 0.6, -1, "q", "N_eff")
    assert read(-0.6, 0.2, -1, "q", "N_eff").startswith("the interval covers 0: q does not")
    assert "too few independent units" in read(np.nan, np.nan, +1, "q", "α")
