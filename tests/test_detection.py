"""AUROC, its CI and DeLong comparison on data with known answers (AUROCs checked against
scikit-learn), cluster resampling of the intervals, and the feature join."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from wspec import detection, stats
from wspec.errors import WspecError


def test_auroc_extremes_and_ties() -> None:
    y = np.array([0, 0, 0, 1, 1, 1], dtype=bool)
    assert detection.auroc([1, 2, 3, 4, 5, 6], y) == 1.0
    assert detection.auroc([6, 5, 4, 3, 2, 1], y) == 0.0
    assert detection.auroc(np.ones(6), y) == 0.5  # all ties count ½
    with pytest.raises(WspecError, match="both"):
        detection.auroc([1, 2], [True, True])


def test_auroc_equals_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.random(40) < 0.4
    pos, neg = s[y], s[~y]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)])
    assert detection.auroc(s, y) == pytest.approx(brute, abs=1e-12)


def test_auroc_equals_sklearn_with_and_without_weights() -> None:
    # Point estimate: scikit-learn's trapezoidal ROC area, which counts ties ½ like our
    # Mann–Whitney form; equal to rounding (1e-12). The bootstrap replicates are weighted
    # AUROCs: with integer resampling counts as sample weights sklearn computes the same.
    rng = np.random.default_rng(5)
    s = np.round(rng.normal(size=80), 1)  # one decimal: many ties
    y = rng.random(80) < 0.3
    assert detection.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    counts = rng.integers(0, 4, size=(5, 80)).astype(float)
    counts[:, np.flatnonzero(y)[0]] += 1  # every replicate keeps both classes
    counts[:, np.flatnonzero(~y)[0]] += 1
    expected = [roc_auc_score(y, s, sample_weight=w) for w in counts]
    np.testing.assert_allclose(detection.weighted_aurocs(s, y, counts), expected, atol=1e-12)


def test_auroc_ci_draws_whole_clusters() -> None:
    # 30 cases, each copied 5 times into one cluster. Drawing whole clusters is then exactly
    # the case bootstrap of the 30 originals (same draws: clusters are numbered like the
    # cases, and an AUROC does not change when every case is weighted 5×). Resampling the
    # 150 copies one by one instead pretends to 5× the data: an interval about √5 narrower.
    rng = np.random.default_rng(6)
    y = np.arange(30) < 12
    s = rng.normal(size=30) + 0.8 * y
    copies = np.repeat(np.arange(30), 5)
    single = detection.auroc_ci(s, y, n_boot=1000, seed=3)
    whole = detection.auroc_ci(s[copies], y[copies], clusters=copies, n_boot=1000, seed=3)
    assert whole == pytest.approx(single, abs=1e-12)
    rows = detection.auroc_ci(s[copies], y[copies], n_boot=1000, seed=3)
    assert rows[2] - rows[1] < 0.6 * (whole[2] - whole[1])
    with pytest.raises(WspecError, match="at least 2 independent units"):
        detection.auroc_ci(s, y, clusters=np.where(y, "pos", np.arange(30).astype(str)))


def test_auroc_random_scores_near_half() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(2000) < 0.5
    # SE of AUROC under H0 with ~1000 per class is ≈ 0.013; ±0.05 is almost 4 SE.
    assert detection.auroc(rng.standard_normal(2000), y) == pytest.approx(0.5, abs=0.05)


def test_auroc_ci_coverage_binormal() -> None:
    # Positives ~ N(1, 1), negatives ~ N(0, 1): AUROC = Φ(1/√2) ≈ 0.760.
    truth = sps.norm.cdf(1 / np.sqrt(2))
    rng = np.random.default_rng(2)
    hits = []
    for rep in range(150):
        s = np.concatenate([rng.normal(1, 1, 50), rng.normal(0, 1, 50)])
        y = np.arange(100) < 50
        _, lo, hi = detection.auroc_ci(s, y, n_boot=300, seed=rep)
        hits.append(lo <= truth <= hi)
    # Nominal 95 %; binomial SD over 150 reps is 1.8 %, percentile bootstrap at n = 50 per
    # class under-covers by a few %: accept 0.88–0.99.
    assert 0.88 <= np.mean(hits) <= 0.99


def test_delong_and_paired_bootstrap_difference() -> None:
    rng = np.random.default_rng(3)
    y = np.arange(200) < 100
    strong = y * 1.5 + rng.standard_normal(200)
    noise = rng.standard_normal(200)
    same = detection.delong_test(strong, strong, y)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    res = detection.delong_test(strong, noise, y)
    assert res["auroc_a"] == pytest.approx(detection.auroc(strong, y))
    assert res["diff"] > 0.2 and res["p_value"] < 1e-4
    diff, lo, hi = detection.paired_auroc_difference(strong, noise, y, n_boot=1000, seed=0)
    assert diff == pytest.approx(res["diff"], abs=1e-12)
    # DeLong SE and the bootstrap SE estimate the same quantity: the CI width / (2·1.96)
    # should agree with DeLong's SE within 25 % at n = 100 per class.
    assert (hi - lo) / (2 * 1.96) == pytest.approx(res["se"], rel=0.25)
    assert lo > 0


def _synthetic(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Results where hallucinated stimuli have 15 % lower cross-attention N_eff; Whisper's
    avg_logprob carries no information; compression_ratio is missing for a few cases."""
    rng = np.random.default_rng(seed)
    halluc = rng.random(n) < 0.4
    rows, labels = [], []
    for i in range(n):
        sid, family = f"s{i}", "nonspeech" if i % 2 else "clean"
        level = 6 * (1 + 0.05 * rng.standard_normal()) * (0.85 if halluc[i] else 1.0)
        for layer in range(2):
            for component in ("dec_cross_attn", "dec_self_attn"):
                value = level if component == "dec_cross_attn" else 6 + rng.standard_normal()
                rows.append(
                    ("tiny.en", sid, family, "", layer, component, "matched_T", "n_eff", 10, value)
                )
        cr = np.nan if i < 5 else 1.5 + 0.2 * rng.standard_normal()
        labels.append(
            ("tiny.en", sid, family, bool(halluc[i]), rng.normal(-0.5, 0.2), rng.random(), cr)
        )
    results = pd.DataFrame(rows, columns=list(stats.RESULT_COLUMNS))
    lab = pd.DataFrame(
        labels,
        columns=[
            "model",
            "stimulus_id",
            "family",
            "hallucinated",
            "avg_logprob",
            "no_speech_prob",
            "compression_ratio",
        ],
    )
    return results, lab


def test_feature_table_joins_labels_and_features() -> None:
    results, labels = _synthetic()
    feats = detection.feature_table(results, labels, model="tiny.en", metrics=["n_eff"])
    assert len(feats) == 120
    assert {"dec_cross_attn/n_eff", "dec_self_attn/n_eff", "avg_logprob", "label"} <= set(
        feats.columns
    )
    assert detection.feature_direction("dec_cross_attn/n_eff") == -1
    y = feats["label"].to_numpy(bool)
    cross = detection.auroc(-feats["dec_cross_attn/n_eff"], y)
    assert cross > 0.95  # 15 % drop vs 5 % spread
    assert feats["compression_ratio"].notna().sum() == 115


def test_feature_table_errors() -> None:
    results, labels = _synthetic(n=20)
    with pytest.raises(WspecError, match="no labels"):
        detection.feature_table(results, labels, model="base")
    with pytest.raises(WspecError, match="lacks"):
        detection.feature_table(results, labels.drop(columns=["avg_logprob"]), model="tiny.en")
    with pytest.raises(WspecError, match="direction"):
        detection.feature_direction("dec_ffn/weird_metric")


def test_feature_table_keeps_clusters_and_counts_each_input_once() -> None:
    results, labels = _synthetic(n=40)
    # Ten clusters of four stimuli; stimuli 0 and 1 are the same model input.
    sids = results["stimulus_id"].str[1:].astype(int)
    results["cluster"] = "unit:" + (sids // 4).astype(str)
    results["input_key"] = np.where(sids == 1, "k0", "k" + sids.astype(str))
    feats = detection.feature_table(results, labels, model="tiny.en", metrics=["n_eff"])
    assert len(feats) == 39 and "s1" not in set(feats["stimulus_id"])
    assert feats.set_index("stimulus_id").loc["s5", "cluster"] == "unit:1"
    y = feats["label"].to_numpy(bool)
    _, n_pos_units, _ = detection._case_units(y, feats["cluster"])
    assert n_pos_units == feats.loc[y, "cluster"].nunique()
