"""Detecting hallucinations without a transcript: spectral features vs Whisper's own signals.

Each stimulus decoded by a model is a case; the label is the label table's `hallucinated`
flag (or `hallucinated_gated`). Candidate detectors are scores known at decode time:

* spectral features from the results table: one column per component × metric, the metric
  averaged over layers (as in `wspec.stats`), named "component/metric";
* Whisper's signals: avg_logprob, no_speech_prob, compression_ratio.

Each score has a direction fixed *in advance* (`DIRECTIONS`: e.g. lower N_eff, lower avg
log-prob, higher compression ratio → hallucination), so AUROC < 0.5 means the feature points the
other way; we never flip a feature after seeing the data. AUROC = Mann–Whitney U / (n₊·n₋)
with mid-ranks for ties; its CI is a stratified percentile bootstrap (positives and negatives
resampled separately, seeded). Two detectors on the same cases are compared with DeLong's test
(correlated AUROCs) and a paired bootstrap CI of the AUROC difference.
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
    select_results,
    stimulus_values,
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


def _boot_aurocs(
    score_matrix: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Stratified bootstrap AUROCs for each row of `score_matrix` (same resamples for all rows)."""
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    idx = np.concatenate(
        [
            pos[rng.integers(0, pos.size, (n_boot, pos.size))],
            neg[rng.integers(0, neg.size, (n_boot, neg.size))],
        ],
        axis=1,
    )
    out = []
    for scores in score_matrix:
        ranks = stats.rankdata(scores[idx], axis=1)
        out.append(
            (ranks[:, : pos.size].sum(1) - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size)
        )
    return np.asarray(out)


def auroc_ci(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC with a stratified percentile-bootstrap CI: (auroc, ci_low, ci_high)."""
    s = np.asarray(scores, dtype=np.float64)
    y = _binary(labels)
    point = auroc(s, y)
    boot = _boot_aurocs(s[None, :], y, n_boot, np.random.default_rng(seed))[0]
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
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
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC(a) − AUROC(b) with a paired stratified bootstrap CI (same resampled cases)."""
    y = _binary(labels)
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    boot = _boot_aurocs(np.vstack([a, b]), y, n_boot, np.random.default_rng(seed))
    diff = boot[0] - boot[1]
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
    """One row per stimulus decoded by `model`: label, Whisper signals, spectral features.

    Spectral columns are "component/metric", the metric averaged over layers per stimulus
    (stimuli missing a layer get NaN). Joined on stimulus_id with the label table.
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


def detection_table(
    features: pd.DataFrame,
    *,
    reference: str = "avg_logprob",
    directions: Mapping[str, int] | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """AUROC with CI of every feature per model, and its difference to `reference`.

    `features` is `feature_table` output (one or more models concatenated). Per model and
    feature, cases with a missing feature value are dropped; the comparison with `reference`
    uses the cases where both are present. Columns: model, feature, kind ("spectral" /
    "whisper"), direction, n_pos, n_neg, auroc, ci_low, ci_high, diff_vs_reference, diff_low,
    diff_high, delong_p. A model whose cases are all one class gets NaN AUROCs.
    """
    feature_cols = [c for c in features.columns if "/" in c or c in WHISPER_SIGNALS]
    rows = []
    for model, sub in features.groupby("model"):
        y_all = sub["label"].astype(bool).to_numpy()
        for feature in feature_cols:
            sign = feature_direction(feature, directions)
            x = sub[feature].to_numpy(float)
            ok = np.isfinite(x)
            y = y_all[ok]
            row: dict[str, object] = {
                "model": model,
                "feature": feature,
                "kind": "spectral" if "/" in feature else "whisper",
                "direction": sign,
                "n_pos": int(y.sum()),
                "n_neg": int((~y).sum()),
            }
            nan = float("nan")
            row |= dict.fromkeys(["auroc", "ci_low", "ci_high"], nan)
            row |= dict.fromkeys(["diff_vs_reference", "diff_low", "diff_high", "delong_p"], nan)
            if row["n_pos"] >= 2 and row["n_neg"] >= 2:
                auc, lo, hi = auroc_ci(sign * x[ok], y, n_boot=n_boot, ci=ci, seed=seed)
                row |= {"auroc": auc, "ci_low": lo, "ci_high": hi}
                r = sub[reference].to_numpy(float)
                both = ok & np.isfinite(r)
                yb = y_all[both]
                if feature != reference and min(yb.sum(), (~yb).sum()) >= 2:
                    a = sign * x[both]
                    b = feature_direction(reference, directions) * r[both]
                    diff, dlo, dhi = paired_auroc_difference(
                        a, b, yb, n_boot=n_boot, ci=ci, seed=seed
                    )
                    row |= {"diff_vs_reference": diff, "diff_low": dlo, "diff_high": dhi}
                    row["delong_p"] = delong_test(a, b, yb)["p_value"]
            rows.append(row)
    return pd.DataFrame(rows)
