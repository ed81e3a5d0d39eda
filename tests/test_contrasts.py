"""Input-fixed contrasts: stratified estimates, cluster bootstrap, regression, layer profiles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from wspec import contrasts as ct
from wspec import verdicts
from wspec.stats import LAYER_MEAN

LEVELS = {"tempo 3.5": -2.0, "talkers 4": -1.0, "noise 0db-white": 0.0, "tempo 1.5": 1.0}
#: Share of sources each level makes hallucinate: the failure goes with the hard levels.
HALLUCINATION_SHARE = {
    "tempo 3.5": 0.75,
    "talkers 4": 0.625,
    "noise 0db-white": 0.375,
    "tempo 1.5": 0.25,
}


def _hell_design(effect: float, n_sources: int = 16, seed: int = 1) -> pd.DataFrame:
    """One hell clip per (source, level); value = level + source + noise (+ effect if flagged).

    Which sources hallucinate at a level is drawn at random, the share set by the level, so
    hallucination is confounded with level while every level holds both kinds. The design is
    fixed (seed 1): over 200 seeds the stratified 95 % interval covered 0 in 92.5 % of them, a
    little under nominal, as percentile intervals from 16 clusters are.
    """
    rng = np.random.default_rng(seed)
    source_effect = rng.normal(0.0, 0.2, n_sources)
    rows = []
    for level, shift in LEVELS.items():
        n_flagged = round(HALLUCINATION_SHARE[level] * n_sources)
        flagged = set(rng.permutation(n_sources)[:n_flagged])
        for s in range(n_sources):
            flag = s in flagged
            value = 10.0 + shift + source_effect[s] + rng.normal(0.0, 0.1) + effect * flag
            condition, strength = level.split(" ")
            rows.append(
                {
                    "stimulus_id": f"hell-{s:02d}-v-{level.replace(' ', '')}",
                    "source_id": f"long-{s:02d}",
                    "params": json.dumps({"condition": condition, "level": strength}),
                    "flag": flag,
                    "value": value,
                }
            )
    return pd.DataFrame(rows)


def _results(design: pd.DataFrame, component: str = "dec_cross_attn", metric: str = "alpha"):
    """The tidy results, labels and manifest of a `_hell_design` for one model."""
    results = pd.DataFrame(
        {
            "model": "m",
            "stimulus_id": design["stimulus_id"],
            "family": "hell",
            "source_id": design["source_id"],
            "cluster": "source:" + design["source_id"],
            "input_key": design["stimulus_id"],
            "layer": 0,
            "component": component,
            "control": "natural_T",
            "metric": metric,
            "K": 10,
            "value": design["value"],
        }
    )
    labels = pd.DataFrame(
        {
            "model": "m",
            "stimulus_id": design["stimulus_id"],
            "family": "hell",
            "hallucinated": design["flag"],
            "wer": np.where(design["flag"], 0.9, 0.1),
            "n_tokens": 30,
        }
    )
    manifest = pd.DataFrame(
        {
            "id": design["stimulus_id"],
            "family": "hell",
            "params": design["params"],
            "source_id": design["source_id"],
        }
    )
    return results, labels, manifest


def _speech(design: pd.DataFrame) -> pd.Series:
    results, labels, manifest = _results(design)
    table = ct.speech_contrasts(
        results, labels, manifest, families=("hell",), label_names=(ct.LABEL_FLAG,), n_boot=500
    )
    assert len(table) == 1  # one model, component, metric, reading, label, family
    return table.iloc[0]


def _c4(effect: float) -> verdicts.Verdict:
    """C4 on a `_hell_design` of N_eff (≈ 10, so `effect` −1 is about −10 %)."""
    results, labels, manifest = _results(_hell_design(effect), metric="n_eff")
    table = ct.speech_contrasts(
        results,
        labels,
        manifest,
        label_names=(ct.LABEL_FLAG,),
        components=("dec_cross_attn",),
        metrics=("n_eff",),
        n_boot=500,
    )
    return verdicts.judge_c4(table)


def test_c4_is_judged_within_level_not_against_clean() -> None:
    # Hallucination goes with the hard levels, whose N_eff is lower: a pooled contrast would
    # read that as a drop of about 6 %. Within level there is none, and C4 is not confirmed.
    null = _c4(0.0)
    assert null.per_model[0].model == "m" and null.verdict != verdicts.CONFIRMED
    assert abs(null.per_model[0].estimate) < 1.0
    planted = _c4(-1.0)
    assert (planted.verdict, planted.direction) == (verdicts.CONFIRMED, verdicts.CONFIRMED)
    # −1 against level means of 8–11 is −12.5 % to −9 %.
    assert -12.5 < planted.per_model[0].estimate < -9.0
    assert planted.per_model[0].ci_high < -verdicts.C4_MARGIN_PCT
    assert _c4(1.0).verdict == verdicts.NOT_CONFIRMED


def test_stratified_contrast_sees_through_the_level_confound() -> None:
    design = _hell_design(effect=0.0)
    row = _speech(design)
    assert row["n_strata"] == 4 and row["n_clusters"] == 16
    assert row["n_hallucinated"] + row["n_other"] == 64
    assert abs(row["estimate"]) < 0.1
    assert row["ci_low"] < 0.0 < row["ci_high"]
    # The pooled contrast (one stratum, same bootstrap) reads the levels as hallucination.
    pooled = ct.stratified_contrast(
        design["value"], design["flag"], np.zeros(len(design)), design["source_id"], n_boot=500
    )
    assert pooled.estimate < -0.5 and pooled.ci_high < -0.25
    assert pooled.p_value < 0.01


def test_stratified_contrast_recovers_a_planted_within_level_effect() -> None:
    row = _speech(_hell_design(effect=0.5))
    assert row["ci_low"] < 0.5 < row["ci_high"]
    assert row["ci_low"] > 0.2
    assert row["p_value"] < 0.01


def test_point_estimate_is_the_fixed_effects_regression_coefficient() -> None:
    rng = np.random.default_rng(3)
    n = 90
    frame = pd.DataFrame(
        {
            "stratum": rng.integers(0, 7, n).astype(str),
            "flag": rng.random(n) < 0.4,
            "cluster": rng.integers(0, 15, n),
        }
    )
    frame["value"] = 5.0 + rng.normal(size=n) + frame["stratum"].astype(int) * 0.3
    ours = ct.stratified_contrast(
        frame["value"], frame["flag"], frame["stratum"], frame["cluster"], n_boot=200
    )
    frame["f"] = frame["flag"].astype(float)
    ols = smf.ols("value ~ f + C(stratum)", data=frame).fit()
    assert ours.estimate == pytest.approx(ols.params["f"], rel=1e-10)
    # "pct": the same difference relative to the weighted mean of the unflagged clips
    pct = ct.stratified_contrast(
        frame["value"], frame["flag"], frame["stratum"], frame["cluster"], kind="pct", n_boot=200
    )
    assert pct.estimate == pytest.approx(100 * ours.estimate / (frame["value"].mean()), rel=0.1)


def test_interval_resamples_clusters_not_clips() -> None:
    """Sources whose own hallucinations differ: the spread between sources is the uncertainty,
    which a clip-level bootstrap (each clip its own unit) understates."""
    rng = np.random.default_rng(1)
    n_sources, per = 10, 8
    source = np.repeat(np.arange(n_sources), per)
    stratum = np.tile(np.arange(per) // 2, n_sources)  # a flagged and an unflagged clip each
    flag = np.tile(np.arange(per) % 2 == 0, n_sources)
    value = 1.0 + flag * rng.normal(0.0, 1.0, n_sources)[source] + rng.normal(0, 0.05, source.size)
    clustered = ct.stratified_contrast(value, flag, stratum, source, n_boot=1000)
    by_clip = ct.stratified_contrast(value, flag, stratum, np.arange(source.size), n_boot=1000)
    assert clustered.estimate == pytest.approx(by_clip.estimate)
    assert clustered.n_clusters == n_sources
    width = clustered.ci_high - clustered.ci_low
    assert width > 1.5 * (by_clip.ci_high - by_clip.ci_low)


def test_one_cluster_of_a_kind_gives_no_interval() -> None:
    """One hallucinated and one other source: every usable resample is the same pair, so a
    percentile "interval" would have zero width (a base build once confirmed C4 on one)."""
    row = ct.stratified_contrast(
        [8.0, 10.0], [True, False], ["s", "s"], ["a", "b"], kind="pct", n_boot=200
    )
    assert row.estimate == pytest.approx(-20.0)
    assert np.isnan(row.ci_low) and np.isnan(row.ci_high) and np.isnan(row.p_value)
    assert (row.n_hallucinated, row.n_other, row.n_clusters) == (1, 1, 2)
    # Two sources of each kind do get an interval.
    two = ct.stratified_contrast(
        [8.0, 7.5, 10.0, 10.5], [True, True, False, False], ["s"] * 4, list("abcd"), n_boot=200
    )
    assert np.isfinite(two.ci_low) and two.ci_low < two.ci_high


def test_strata_without_both_kinds_give_counts_not_numbers() -> None:
    none = ct.stratified_contrast([1.0, 2.0, 3.0], [True, True, False], ["a", "a", "b"], [0, 1, 2])
    assert np.isnan(none.estimate) and none.n_strata == 0 and none.n_hallucinated == 0
    # one contributing cluster: an estimate, but no interval from a single unit
    one = ct.stratified_contrast(
        [1.0, 3.0, np.nan], [True, False, True], ["a", "a", "a"], [0, 0, 1]
    )
    assert one.estimate == pytest.approx(-2.0)
    assert one.n_clusters == 1 and np.isnan(one.ci_low) and np.isnan(one.p_value)


def test_attack_contrasts_separate_success_from_the_noise_control() -> None:
    rows, attacks = [], []
    rng = np.random.default_rng(2)
    for s in range(8):
        for snr in (35.0, 45.0):
            base = 3.0 + rng.normal(0, 0.5) + (snr == 35.0)
            for fam in ("pgd_untargeted", "gauss_control"):
                sid = f"{fam}-m-{s:02d}-{snr:g}db"
                success = fam != "gauss_control" and s % 2 == 0
                rows.append((sid, fam, f"clean-{s:02d}", base + 0.8 * success))
                params = {"snr_db": snr, "success": success}
                attacks.append({"id": sid, "family": fam, "params": json.dumps(params)})
    frame = pd.DataFrame(rows, columns=["stimulus_id", "family", "source_id", "value"])
    results = frame.assign(
        model="m",
        cluster="source:" + frame["source_id"],
        input_key=frame["stimulus_id"],
        layer=0,
        component="dec_ffn",
        control="null_diff",
        metric="alpha",
        K=10,
    )
    table = ct.attack_contrasts(results, pd.DataFrame(attacks), n_boot=500)
    table = table.set_index("contrast")
    assert set(table["reading"]) == {ct.LENGTH_ROBUST}
    win, fail, both = (table.loc[name] for name, _, _ in ct.ATTACK_CONTRASTS)
    assert win["estimate"] == pytest.approx(0.8) and win["n_strata"] == 8
    assert fail["estimate"] == pytest.approx(0.0, abs=1e-9)
    # successful and failed attacks never share a sentence here: no stratum holds both
    assert both["n_strata"] == 0 and np.isnan(both["estimate"])


def test_nonspeech_contrast_compares_kinds_on_the_encoder_side() -> None:
    rows, labels, manifest = [], [], []
    for k, kind in enumerate(("noise", "hum", "hiss", "tone")):
        for j in range(3):
            sid = f"nonspeech-{kind}-{j}"
            text = j == 0
            rows.append((sid, f"nonspeech:{kind}", 20.0 + 2 * k + 0.5 * text))
            labels.append({"model": "m", "stimulus_id": sid, "hallucinated": text})
            manifest.append(
                {"id": sid, "family": "nonspeech", "params": json.dumps({"kind": kind})}
            )
    frame = pd.DataFrame(rows, columns=["stimulus_id", "cluster", "value"])
    results = frame.assign(
        model="m",
        family="nonspeech",
        source_id="",
        input_key=frame["stimulus_id"],
        layer=0,
        component="enc_residual",
        control=ct.ENCODER_CONTROL,
        metric="log10_kf",
        K=10,
    )
    row = ct.nonspeech_contrasts(results, pd.DataFrame(labels), pd.DataFrame(manifest)).iloc[0]
    assert row["estimate"] == pytest.approx(0.5) and row["n_strata"] == 4
    assert row["n_clusters"] == 4 and row["reading"] == ct.INPUT_SIDE


def _clustered_frame(
    coef: float, n_clusters: int = 40, per: int = 6, seed: int = 0, cluster_sd: float = 1.0
):
    """Hallucination set per cluster (a source that fails fails in all its clips) and a
    shared cluster error: the case where naive OLS errors are too small."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(n_clusters), per)
    hall = (rng.random(n_clusters) < 0.5)[cluster].astype(float)
    family = np.array(["hell", "noisy_snr", "reversed"])[rng.integers(0, 3, cluster.size)]
    log_rows = rng.normal(3.0, 0.5, cluster.size)
    encoder = rng.normal(40.0, 3.0, cluster.size)
    value = (
        2.0
        + coef * hall
        + 0.3 * log_rows
        + 0.05 * encoder
        + (family == "hell") * 0.7
        + rng.normal(0.0, cluster_sd, n_clusters)[cluster]
        + rng.normal(0.0, 0.2, cluster.size)
    )
    return pd.DataFrame(
        {
            "value": value,
            "hallucinated": hall,
            "family": family,
            "log_rows": log_rows,
            "encoder": encoder,
            "cluster": cluster,
        }
    )


def test_regression_recovers_the_coefficient_with_a_cluster_robust_interval() -> None:
    frame = _clustered_frame(coef=-1.0)
    fit = ct.fit_hallucination(frame, "diff")
    assert fit["note"] == "" and fit["n"] == 240 and fit["n_clusters"] == 40
    assert fit["ci_low"] < -1.0 < fit["ci_high"]
    assert fit["ci_high"] < 0.0
    X = ct.design_matrix(frame)
    beta, *_ = np.linalg.lstsq(X.to_numpy(), frame["value"].to_numpy(), rcond=None)
    assert fit["estimate"] == pytest.approx(beta[list(X.columns).index("hallucinated")])
    naive = sm.OLS(frame["value"], X).fit().conf_int().loc["hallucinated"]
    assert fit["ci_high"] - fit["ci_low"] > 1.5 * (naive[1] - naive[0])


def test_regression_needs_variation_and_reports_why_not() -> None:
    frame = _clustered_frame(coef=0.0)
    fit = ct.fit_hallucination(frame.assign(hallucinated=1.0), "diff")
    assert np.isnan(fit["estimate"]) and fit["note"] == "hallucination does not vary"
    # hallucinated exactly where the family is hell: input type and failure cannot be told apart
    confounded = frame.assign(hallucinated=(frame["family"] == "hell").astype(float))
    assert "separable" in ct.fit_hallucination(confounded, "diff")["note"]


def test_regression_from_results_reports_rank_metrics_in_percent() -> None:
    frame = _clustered_frame(coef=np.log(0.8), seed=4, cluster_sd=0.1)  # −20 %: log scale
    ids = [f"{f}-{i:03d}" for i, f in enumerate(frame["family"])]
    decoder = pd.DataFrame(
        {
            "stimulus_id": ids,
            "family": frame["family"],
            "cluster": frame["cluster"].astype(str),
            "component": "dec_self_attn",
            "layer": 0,
            "value": np.exp(frame["value"]),
        }
    )
    encoder = decoder.assign(component="enc_residual", control=ct.ENCODER_CONTROL)
    encoder = pd.concat(
        [encoder.assign(layer=0, value=1.0), encoder.assign(value=frame["encoder"])]
    )
    encoder["layer"] = [0] * len(frame) + [3] * len(frame)  # the covariate is the last layer
    results = pd.concat([decoder.assign(control="natural_T"), encoder], ignore_index=True)
    results = results.assign(model="m", source_id="", input_key=results["stimulus_id"])
    results = results.assign(metric="n_eff", K=10)
    labels = pd.DataFrame(
        {
            "model": "m",
            "stimulus_id": ids,
            "hallucinated": frame["hallucinated"].astype(bool),
            "n_tokens": np.round(np.exp(frame["log_rows"]) - 1.0),
        }
    )
    table = ct.hallucination_regression(results, labels, components=("dec_self_attn",))
    row = table.set_index("reading").loc[ct.PRIMARY]
    assert row["kind"] == "pct" and row["n_clusters"] == 40
    assert row["ci_low"] < -20.0 < row["ci_high"] and row["ci_high"] < 0.0


def test_layer_profiles_pair_deltas_with_a_healthy_baseline() -> None:
    rows, labels = [], []
    for s in range(4):
        src = f"long-{s:02d}"
        clips = [(src, "long_clean", "", 0.0, s == 3)]
        clips += [(f"hell-{s:02d}-v-tempo3p5", "hell", src, -1.0, True)]
        for sid, fam, source, shift, hallucinated in clips:
            labels.append(
                {"model": "m", "stimulus_id": sid, "family": fam}
                | {"hallucinated": hallucinated, "wer": 0.9 if fam == "hell" else 0.0}
            )
            for layer in range(3):
                value = 8.0 + layer + shift * layer + 0.01 * s
                rows.append(
                    {"model": "m", "stimulus_id": sid, "family": fam, "source_id": source}
                    | {"cluster": f"source:{src}", "input_key": sid, "layer": layer}
                    | {"component": "dec_ffn", "control": "natural_T", "metric": "alpha"}
                    | {"K": 10, "value": value}
                )
    profile = ct.layer_profiles(
        pd.DataFrame(rows), pd.DataFrame(labels), components=("dec_ffn",), n_boot=200
    )
    assert LAYER_MEAN not in set(profile["layer"])
    delta = profile[profile["profile"] == ct.PROFILE_DELTA].set_index("layer")
    assert delta["estimate"].to_numpy() == pytest.approx([0.0, -1.0, -2.0])
    healthy = profile[profile["profile"] == ct.PROFILE_HEALTHY].set_index("layer")
    # the long clip the model hallucinated on (source 3) is not healthy
    assert (healthy["n"] == 3).all()
    assert healthy["estimate"].to_numpy() == pytest.approx([8.01, 9.01, 10.01])
