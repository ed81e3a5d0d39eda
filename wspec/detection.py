"""AUROC and its cluster-bootstrap interval, and the case table of hallucination detection.

Each stimulus decoded by a model is a case; the label is the label table's `hallucinated`
flag (or `hallucinated_gated`). `feature_table` holds the scores known at decode time:

* spectral features from the results table: one column per component × metric, the metric
  averaged over layers (as in `wspec.stats`), named "component/metric";
* Whisper's signals: avg_logprob, no_speech_prob, compression_ratio.

The cross-validated detectors built on these cases are in `wspec.probe`.

Each score has a direction fixed *in advance* (`DIRECTIONS`: e.g. lower N_eff, lower avg
log-prob, higher compression ratio → hallucination), so AUROC < 0.5 means the feature points the
other way; we never flip a feature after seeing the data. AUROC = Mann–Whitney U / (n₊·n₋)
with mid-ranks for ties (checked against scikit-learn). Its CI is a percentile bootstrap that
resamples the independent units, not the cases: the ``cluster`` column (`wspec.units`: a
sentence and every clip made from it, one non-speech generator kind, ...) groups the cases,
and whole clusters are drawn with replacement, stratified into clusters holding only
hallucinated cases, only correct ones, and both (so every resample has both classes); cases
without clusters are resampled one by one, positives and negatives separately. Identical
model inputs (equal ``input_key``) are one case. Two detectors on the same cases are
compared with DeLong's test (correlated AUROCs; it treats cases as independent) and a
bootstrap CI of the AUROC difference (the same cluster resamples for both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from wspec.errors import WspecError
from wspec.stats import (
    LAYER_MEAN,
    TABLE1_COMPONENTS,
    TABLE1_METRICS,
    Labels,
    cluster_units,
    select_results,
    stimulus_values,
    stratified_counts,
    unit_columns,
)

#: Whisper's own decode-time signals and the direction that indicates hallucination.
WHISPER_SIGNALS: dict[str, int] = {"avg_logprob": -1, "no_speech_prob": +1, "compression_ratio": +1}
#: Spectral metrics and the direction the paper associates with failure (rank collapse,
#: larger dominant-mode condition number, harder slope).
METRIC_DIRECTIONS: dict[str, int] = {
    "n_eff": -1,
    "participation_ratio": -1,
    "stable_rank": -1,
    "log10_kf": +1,
    "alpha": +1,
    "top_share": +1,
}


def _binary(labels: Sequence[bool] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype != bool:
        if not np.isin(y, [0, 1]).all():
            raise WspecError("labels must be boolean (or 0/1)")
        y = y.astype(bool)
    return y


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count ½."""
    s = np.asarray(scores, dtype=np.float64)
    y = _binary(labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise WspecError("AUROC needs both hallucinated and non-hallucinated cases")
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def weighted_aurocs(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of `scores` under each row of case `weights` (replicates × cases).

    The share of (positive, negative) weight pairs in which the positive scores higher, ties
    counting ½: with integer weights, the AUROC of the sample that repeats each case that
    many times (a bootstrap resample). Computed per block of tied scores in one pass.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = _binary(labels)
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    w = np.atleast_2d(weights)[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * ~y[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each tie block
    return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _case_units(y: np.ndarray, clusters: Labels) -> tuple[np.ndarray, int, int]:
    """Unit index per case, and how many units hold positives and how many negatives."""
    if clusters is None:
        unit = np.arange(y.size)
    else:
        names = pd.Series(list(clusters), dtype=object)
        if names.size != y.size:
            raise WspecError(f"{names.size} cluster labels for {y.size} cases")
        unit = pd.factorize(names)[0]
    return unit, np.unique(unit[y]).size, np.unique(unit[~y]).size


def _boot_weights(
    y: np.ndarray, clusters: Labels, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap weight of every case (n_boot × cases): whole clusters drawn with replacement.

    Strata (`wspec.stats.cluster_units`): clusters of correct cases only, of hallucinated
    cases only, and of both; every resample so has both classes. Without clusters each case
    is a unit and the strata are the two classes: the stratified case bootstrap.
    """
    unit, n_pos_units, n_neg_units = _case_units(y, clusters)
    if n_pos_units < 2 or n_neg_units < 2:
        raise WspecError(
            f"{n_pos_units} hallucinated and {n_neg_units} correct cluster(s); an AUROC "
            "interval needs at least 2 independent units of each"
        )
    first_n, _, strata = cluster_units(unit, y)
    return stratified_counts(rng, strata, first_n.size, n_boot)[:, unit]


def auroc_ci(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    clusters: Labels = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC with a percentile-bootstrap CI over clusters: (auroc, ci_low, ci_high).

    `clusters` (one label per case, e.g. the results' ``cluster`` column) are the independent
    units the bootstrap draws (`_boot_weights`); None = each case is its own unit.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = _binary(labels)
    point = auroc(s, y)
    w = _boot_weights(y, clusters, n_boot, np.random.default_rng(seed))
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(weighted_aurocs(s, y, w), [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)


def _placements(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: per positive and per negative, the share it 'wins'."""
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def delong_test(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
) -> dict[str, float]:
    """DeLong et al. (1988) test of AUROC(a) = AUROC(b) on the same cases (two-sided).

    Returns auroc_a, auroc_b, diff (a − b), se, z, p_value.
    """
    y = _binary(labels)
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if not (a.shape == b.shape == y.shape):
        raise WspecError("DeLong test needs both scores on the same cases")
    v10_a, v01_a = _placements(a, y)
    v10_b, v01_b = _placements(b, y)
    m, n = v10_a.size, v01_a.size
    if m < 2 or n < 2:
        raise WspecError("DeLong test needs at least 2 cases of each class")
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    diff = float(v10_a.mean() - v10_b.mean())
    se = float(np.sqrt(max(var, 0.0)))
    z = diff / se if se > 0 else (0.0 if diff == 0 else np.inf * np.sign(diff))
    p = float(2 * stats.norm.sf(abs(z)))
    return {
        "auroc_a": float(v10_a.mean()),
        "auroc_b": float(v10_b.mean()),
        "diff": diff,
        "se": se,
        "z": float(z),
        "p_value": p,
    }


def paired_auroc_difference(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    clusters: Labels = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC(a) − AUROC(b) with a bootstrap CI from the same cluster resamples for both."""
    y = _binary(labels)
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    w = _boot_weights(y, clusters, n_boot, np.random.default_rng(seed))
    diff = weighted_aurocs(a, y, w) - weighted_aurocs(b, y, w)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(diff, [alpha, 1.0 - alpha])
    return auroc(a, y) - auroc(b, y), float(lo), float(hi)


def feature_table(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    model: str,
    control: str = "matched_T",
    K: int = 10,
    components: Sequence[str] = TABLE1_COMPONENTS,
    metrics: Sequence[str] = TABLE1_METRICS,
    label_column: str = "hallucinated",
) -> pd.DataFrame:
    """One row per model input decoded by `model`: label, Whisper signals, spectral features.

    Spectral columns are "component/metric", the metric averaged over layers per stimulus
    (stimuli missing a layer get NaN). Joined on stimulus_id with the label table. The
    ``cluster`` and ``input_key`` columns come from the results (`wspec.stats.unit_columns`);
    stimuli that are the same model input (digital silence of any length, speech followed by
    silence inside the window and its source) are one case: the first by stimulus id is kept.
    """
    need = {"model", "stimulus_id", "family", label_column, *WHISPER_SIGNALS}
    if not need <= set(labels.columns):
        raise WspecError(f"label table lacks {sorted(need - set(labels.columns))}")
    lab = labels[labels["model"] == model]
    if lab.empty:
        raise WspecError(f"no labels for model {model!r}; run the labelling step for it")
    out = lab[["stimulus_id", "family", label_column, *WHISPER_SIGNALS]].copy()
    out = out.rename(columns={label_column: "label"}).set_index("stimulus_id")
    out = out[out["label"].notna()]  # unlabelled cases (NaN) must not count as hallucinated
    out["label"] = out["label"].astype(bool)
    sub = select_results(results, control=control, K=K)
    sub = sub[sub["model"] == model]
    for component in components:
        for metric in metrics:
            cell = sub[(sub["component"] == component) & (sub["metric"] == metric)]
            if cell.empty:
                continue
            vals = stimulus_values(cell, LAYER_MEAN).set_index("stimulus_id")["value"]
            out[f"{component}/{metric}"] = vals.reindex(out.index)
    units = unit_columns(sub).reindex(out.index)
    own = out.index.to_series(index=out.index).astype(str)
    for column in units.columns:
        out[column] = units[column].fillna(own)
    out = out.sort_index()
    out = out[~out["input_key"].duplicated()]
    return out.reset_index().assign(model=model)


def feature_direction(feature: str, directions: Mapping[str, int] | None = None) -> int:
    """+1 if larger values indicate hallucination, −1 if smaller do (fixed in advance)."""
    if directions and feature in directions:
        return int(directions[feature])
    if feature in WHISPER_SIGNALS:
        return WHISPER_SIGNALS[feature]
    metric = feature.split("/")[-1]
    if metric not in METRIC_DIRECTIONS:
        raise WspecError(f"no direction known for feature {feature!r}; pass directions=")
    return METRIC_DIRECTIONS[metric]
