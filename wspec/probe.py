"""Cross-validated hallucination detectors: Whisper's signals, spectral probes, both.

The question is not whether spectra detect hallucinations at all (non-speech clips make
that easy) but whether they add to what Whisper already prints. So every detector is fitted
and scored the same way:

* **Cases** (`case_table`): one row per distinct model input (`detection.feature_table`),
  with the label, Whisper's five signals (`WHISPER_FEATURES`: avg log-prob, no-speech
  probability, compression ratio, natural token count, clip duration), the pre-registered
  single spectral feature (`PREREGISTERED`, layer mean) and the per-layer spectral features
  "component/metric/L<layer>" of every decoder layer × component × metric (`spectral_matrix`),
  with the per-clip features the pipeline stored from the same decode (`pipeline.features_path`):
  LapEigvals of every layer's per-head cross-attention map ("dec_cross_attn_lap/h<h>_eig<j>/
  L<layer>", spectral like the rest) and the mean-pooled middle-layer residual state
  ("hidden:L<layer>:<i>").
* **Detectors** (`detector_columns`): each Whisper signal alone, (a) all five in one
  logistic model, (b) the pre-registered feature as is (a fixed score, no fitting), (c) the
  spectral probe (per-layer metrics + LapEigvals), (d) the hidden-state probe in the style of
  Jasiński et al. 2026, (e) (a) + (c). A fitted detector is median imputation with missing-value
  indicators, standardization and an L2 logistic regression with a fixed C (`PROBE_C`,
  never tuned), all inside the fold (`make_probe`). (e) is *stacked* (`StackedProbe`): one
  penalised model over Whisper's 5 signals and several hundred spectral columns lets the
  spectral block drown the 5 (one shared penalty, hundreds of noisy coefficients), so (e)
  fits (a) and (c) separately and combines their scores with a two-input logistic model
  trained on inner grouped out-of-fold scores (nested inside the outer training fold).
* **Cross-validation** (`fold_ids`, `oof_scores`): `StratifiedGroupKFold` grouped by the
  ``cluster`` column (a sentence with every clip made from it, one non-speech generator
  kind), seeded; every case gets the score of the model fitted without its cluster. The folds
  are made once over all cases and shared by every detector, so paired comparisons are fair.
* **Evaluation sets** (`evaluation_sets`): all cases; speech-derived cases (every family but
  non-speech); the *confident* cases that pass Whisper's own gate (avg log-prob above
  `labels.LOGPROB_LIMIT` and no-speech probability below `labels.NO_SPEECH_LIMIT`). The
  out-of-fold scores are restricted to each set: the detector is trained on everything, as
  one deployed would be, and judged where Whisper's signals are weakest.
* **Metrics** (`evaluate`, `gains`): AUROC (`detection.auroc`) and PR-AUC (scikit-learn's
  average precision) with percentile intervals over cluster resamples
  (`detection._boot_weights`), and the paired AUROC gains (c) − (a), (d) − (a) and (e) − (a)
  from the same resamples (`detection.paired_auroc_difference`). Where (a) is already perfect
  on a set, a gain is 0 with a zero-width interval by construction; `gains` says so in its
  ``note`` column rather than let it read as a measured null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from wspec.capture import DECODER_COMPONENTS
from wspec.detection import (
    _boot_weights,
    _case_units,
    auroc,
    feature_direction,
    feature_table,
    paired_auroc_difference,
    weighted_aurocs,
)
from wspec.errors import WspecError
from wspec.labels import LOGPROB_LIMIT, NO_SPEECH_LIMIT
from wspec.pipeline import HIDDEN_PREFIX, LAP_COMPONENT
from wspec.protocol import FORCED_CONTROL

#: Whisper's own signals for the baseline (a): what a user of Whisper gets for free.
WHISPER_FEATURES: tuple[str, ...] = (
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
    "n_tokens",
    "duration_s",
)
#: The pre-registered single feature (b), scored as is with its fixed direction.
PREREGISTERED = "dec_cross_attn/alpha"
#: Decoder components whose per-layer metrics feed the spectral probe (c): every one captured.
PROBE_COMPONENTS: tuple[str, ...] = tuple(f"dec_{part}" for part in DECODER_COMPONENTS)
#: Sequence-length control of the probe's features: the natural rows at their own length.
#: natural_T (the first T₀ natural rows) is undefined for every decode shorter than T₀ and so
#: for most clean sentences; the book shows it as a sensitivity analysis.
PROBE_CONTROL = "raw"
PROBE_K = 10
#: Inverse L2 strength on standardized features: scikit-learn's default, fixed in advance.
PROBE_C = 1.0
N_SPLITS = 5
SEED = 0
#: Detector names, in the order the book shows them.
WHISPER_ALL = "(a) Whisper's signals"
PREREG = "(b) pre-registered feature"
SPECTRAL = "(c) spectral probe"
HIDDEN = "(d) hidden-state probe"
COMBINED = "(e) Whisper + spectral"
#: Detectors compared with (a) by `gains`; C6 judges (c) and (e) only (verdicts.C6_COMPARISONS).
GAIN_DETECTORS: tuple[str, ...] = (SPECTRAL, HIDDEN, COMBINED)
NO_ROOM = "no room to gain: (a) is already perfect on this set"
#: Evaluation sets.
SETS: tuple[str, ...] = ("all", "speech-derived", "confident")
#: Widest AUROC interval half-width at which the detectors can be compared: the stress set is
#: sized so that every detector's speech-derived interval is narrower than this.
PRECISION_TARGET = 0.1


def comparison_label(detector: str) -> str:
    """ "(c) − (a)": how `gains` names the comparison of `detector` with Whisper's signals."""
    return f"{detector[:3]} − {WHISPER_ALL[:3]}"


def spectral_matrix(
    results: pd.DataFrame, *, control: str = PROBE_CONTROL, K: int = PROBE_K
) -> pd.DataFrame:
    """Per-layer decoder features, one row per stimulus_id, columns "component/metric/L<l>".

    Rows of one model's results (a single-model table: the probe is per model). A value the
    pipeline left NaN (too few natural rows) stays NaN; `make_probe` imputes it.
    """
    if results["model"].nunique() > 1:
        raise WspecError("spectral_matrix needs the results of one model")
    sub = results[
        (results["control"] == control)
        & (results["K"] == K)
        & results["component"].isin(PROBE_COMPONENTS)
        & (results["layer"] >= 0)
    ]
    if sub.empty:
        raise WspecError(f"no decoder rows under control {control!r}, K={K} in the results")
    names = sub["component"] + "/" + sub["metric"] + "/L" + sub["layer"].astype(str)
    wide = sub.assign(feature=names).pivot_table(
        index="stimulus_id", columns="feature", values="value", aggfunc="first", dropna=False
    )
    return wide.sort_index(axis=1)


def case_table(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    durations: pd.Series,
    *,
    model: str,
    control: str = PROBE_CONTROL,
    label_column: str = "hallucinated",
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per distinct model input of `model`: label, Whisper features, spectral ones.

    `durations` maps stimulus_id → clip length in seconds (the manifest's ``duration_s``).
    `features` is the run's probe-feature table (`pipeline.features_path`; rows of several
    models allowed); without it the case table has no LapEigvals or hidden-state columns.
    The pre-registered feature is the layer mean under the control it was registered with, the
    forced budget (`protocol.FORCED_CONTROL`: a sensitivity baseline that enters no verdict),
    as in `detection.feature_table`, whose rows (and identical-input rule) this extends.
    """
    base = feature_table(
        results,
        labels,
        model=model,
        control=FORCED_CONTROL,
        components=[PREREGISTERED.split("/")[0]],
        metrics=[PREREGISTERED.split("/")[1]],
        label_column=label_column,
    )
    lab = labels[labels["model"] == model].set_index("stimulus_id")
    base["n_tokens"] = lab["n_tokens"].reindex(base["stimulus_id"]).to_numpy(float)
    base["text"] = lab["text"].reindex(base["stimulus_id"]).to_numpy(object)
    missing = sorted(set(base["stimulus_id"]) - set(durations.index))
    if missing:
        raise WspecError(f"no clip duration for {len(missing)} stimuli (e.g. {missing[0]!r})")
    base["duration_s"] = durations.reindex(base["stimulus_id"]).to_numpy(float)
    spectral = spectral_matrix(results[results["model"] == model], control=control)
    spectral = spectral.reindex(base["stimulus_id"]).reset_index(drop=True)
    parts = [base.reset_index(drop=True), spectral]
    if features is not None:
        parts.append(_stored_features(features, model, base["stimulus_id"]))
    return pd.concat(parts, axis=1)


def _stored_features(features: pd.DataFrame, model: str, ids: pd.Series) -> pd.DataFrame:
    """One model's stored probe features in the order of `ids`; columns of other models
    (another width of hidden state) are dropped, a stimulus without features is an error."""
    own = features[features["model"] == model].set_index("stimulus_id")
    missing = sorted(set(ids) - set(own.index))
    if missing:
        raise WspecError(
            f"no stored probe features for {len(missing)} {model} stimuli (e.g. {missing[0]!r}); "
            "re-run the model (`wspec book`) so that its run writes them"
        )
    own = own.drop(columns="model").dropna(axis=1, how="all")
    return own.reindex(ids).reset_index(drop=True)


def spectral_columns(cases: pd.DataFrame) -> list[str]:
    """The per-layer spectral feature columns of a `case_table`."""
    return [c for c in cases.columns if c.count("/") == 2]


def hidden_columns(cases: pd.DataFrame) -> list[str]:
    """The mean-pooled hidden-state columns of a `case_table` (empty without stored features)."""
    return [c for c in cases.columns if str(c).startswith(HIDDEN_PREFIX)]


def detector_columns(cases: pd.DataFrame) -> dict[str, list[str]]:
    """Feature columns of every fitted detector (the pre-registered one is not fitted);
    (d) only where the case table carries hidden states."""
    spectral = spectral_columns(cases)
    if not spectral:
        raise WspecError("the case table has no per-layer spectral features")
    single = {f"Whisper: {name}": [name] for name in WHISPER_FEATURES}
    hidden = hidden_columns(cases)
    return single | {
        WHISPER_ALL: list(WHISPER_FEATURES),
        SPECTRAL: spectral,
        **({HIDDEN: hidden} if hidden else {}),
        COMBINED: [*WHISPER_FEATURES, *spectral],
    }


class StackedProbe(ClassifierMixin, BaseEstimator):
    """Detector (e): (a) and (c) fitted apart, their scores combined by a logistic stacker.

    `blocks` are the column indices of each base detector in X. The stacker is trained on
    out-of-fold scores of the bases from an inner `fold_ids` split of the training cases by
    `groups` (their clusters), so it never sees a score its base fitted on the same case;
    the bases are then refitted on all training cases for prediction.
    """

    def __init__(self, blocks: tuple[tuple[int, ...], ...] = (), seed: int = SEED):
        self.blocks = blocks
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> StackedProbe:
        y = np.asarray(y, bool)
        inner = fold_ids(y, groups, seed=self.seed)
        meta = np.column_stack([oof_scores(X[:, list(b)], y, inner)[0] for b in self.blocks])
        self.bases_ = [make_probe().fit(X[:, list(b)], y) for b in self.blocks]
        self.stacker_ = LogisticRegression().fit(_logit(meta), y)
        self.classes_ = self.stacker_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        pairs = zip(self.bases_, self.blocks, strict=True)
        meta = [base.predict_proba(X[:, list(b)])[:, 1] for base, b in pairs]
        return self.stacker_.predict_proba(_logit(np.column_stack(meta)))


def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Log-odds of base scores, clipped so that a score of exactly 0 or 1 stays finite."""
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def combined_blocks(n_columns: int) -> tuple[tuple[int, ...], ...]:
    """Column blocks of (e)'s features [*WHISPER_FEATURES, *spectral]: (a), then (c)."""
    n = len(WHISPER_FEATURES)
    return (tuple(range(n)), tuple(range(n, n_columns)))


def fit_detector(
    name: str, X: np.ndarray, y: np.ndarray, groups: Sequence[str] | None
) -> Pipeline | StackedProbe:
    """One detector fitted on (X, y): the stacked (e), whose inner split needs the cases'
    clusters `groups`, else `make_probe`. A single class (or, for (e), fewer than two clusters
    of each class) is a `WspecError`."""
    if np.unique(y).size < 2:
        raise WspecError("fitting a probe needs hallucinated and correct cases")
    if name == COMBINED:
        return StackedProbe(combined_blocks(X.shape[1])).fit(X, y, groups=groups)
    return make_probe().fit(X, y)


def make_probe() -> Pipeline:
    """Median imputation (+ a missing-value indicator per feature with gaps in training),
    standardization, L2 logistic regression: fitted inside each fold, nothing tuned."""
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(C=PROBE_C, max_iter=5000),
    )


def fold_ids(
    y: np.ndarray, clusters: Sequence[str], *, n_splits: int = N_SPLITS, seed: int = SEED
) -> np.ndarray:
    """Fold index per case: StratifiedGroupKFold by cluster, as many folds as the rarer class
    has clusters (at most `n_splits`), so that every fold can hold a positive."""
    y = np.asarray(y, bool)
    _, n_pos, n_neg = _case_units(y, clusters)
    k = min(n_splits, n_pos, n_neg)
    if k < 2:
        raise WspecError(
            f"{n_pos} cluster(s) with hallucinations and {n_neg} without: cross-validation "
            "needs at least 2 of each"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.empty(y.size, dtype=int)
    for i, (_, test) in enumerate(splitter.split(np.zeros(y.size), y, groups=list(clusters))):
        folds[test] = i
    return folds


def oof_scores(
    X: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    detector: str = "",
    clusters: Sequence[str] | None = None,
) -> tuple[np.ndarray, int]:
    """Out-of-fold hallucination probabilities and the number of one-class training folds.

    A training fold with a single class cannot fit a classifier, and the stacked (e)
    (`detector` = `COMBINED`, which needs `clusters`) cannot fit without two clusters of each
    class for its inner split; such a fold's test cases get its training prevalence (an
    uninformative constant) and are counted, not hidden.
    """
    scores = np.empty(y.size)
    degenerate = 0
    groups = None if clusters is None else np.asarray(clusters, dtype=object)
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        try:
            model = fit_detector(
                detector, X[train], y[train], None if groups is None else groups[train]
            )
        except WspecError:
            scores[test] = y[train].mean()
            degenerate += 1
            continue
        scores[test] = model.predict_proba(X[test])[:, 1]
    return scores, degenerate


def fitted_scores(
    cases: pd.DataFrame, detectors: dict[str, list[str]], *, seed: int = SEED
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Out-of-fold scores of fitted detectors {name: feature columns} on the shared folds,
    and their one-class fold counts."""
    y = cases["label"].to_numpy(bool)
    clusters = cases["cluster"].astype(str).tolist()
    folds = fold_ids(y, clusters, seed=seed)
    out = pd.DataFrame(index=cases.index)
    degenerate: dict[str, int] = {}
    for name, columns in detectors.items():
        X = cases[columns].to_numpy(float)
        out[name], degenerate[name] = oof_scores(X, y, folds, detector=name, clusters=clusters)
    return out, degenerate


def all_scores(cases: pd.DataFrame, *, seed: int = SEED) -> tuple[pd.DataFrame, dict[str, int]]:
    """Out-of-fold scores of every detector (columns) per case, and one-class fold counts."""
    out, degenerate = fitted_scores(cases, detector_columns(cases), seed=seed)
    out[PREREG] = feature_direction(PREREGISTERED) * cases[PREREGISTERED].to_numpy(float)
    return out, degenerate


def lap_columns(cases: pd.DataFrame) -> list[str]:
    """The LapEigvals columns among the spectral ones (for the chapter's sensitivity table)."""
    return [c for c in spectral_columns(cases) if c.startswith(LAP_COMPONENT + "/")]


def evaluation_sets(cases: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean masks of the three evaluation sets (see the module docstring)."""
    confident = (cases["avg_logprob"] > LOGPROB_LIMIT) & (cases["no_speech_prob"] < NO_SPEECH_LIMIT)
    return {
        "all": np.ones(len(cases), bool),
        "speech-derived": cases["family"].ne("nonspeech").to_numpy(),
        "confident": confident.to_numpy(),
    }


def _counts(y: np.ndarray, clusters: np.ndarray) -> dict[str, int]:
    _, n_pos_units, n_neg_units = _case_units(y, clusters)
    return {
        "n_pos": int(y.sum()),
        "n_neg": int((~y).sum()),
        "n_clusters_pos": n_pos_units,
        "n_clusters_neg": n_neg_units,
    }


def weighted_average_precisions(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Average precision (scikit-learn's definition) under each row of case `weights`.

    AP = Σ_k (R_k − R_{k−1}) P_k over the distinct scores in descending order, with weighted
    counts: one pass for all bootstrap replicates instead of one scikit-learn call each.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, bool)
    order = np.argsort(-s, kind="stable")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    w = np.atleast_2d(weights)[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * ~y[order], starts, axis=1)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    return (pos * precision).sum(axis=1) / pos.sum(axis=1)


def _metric_row(
    s: np.ndarray, y: np.ndarray, clusters: np.ndarray, n_boot: int, ci: float, seed: int
) -> dict[str, float]:
    """AUROC and PR-AUC with cluster-bootstrap intervals (NaN below 2 clusters per class)."""
    row = {"auroc": np.nan, "auroc_low": np.nan, "auroc_high": np.nan}
    row |= {"pr_auc": np.nan, "pr_low": np.nan, "pr_high": np.nan, "prevalence": y.mean()}
    counts = _counts(y, clusters)
    if min(counts["n_clusters_pos"], counts["n_clusters_neg"]) < 2:
        return row
    w = _boot_weights(y, clusters, n_boot, np.random.default_rng(seed))
    alpha = (1.0 - ci) / 2.0
    aucs = weighted_aurocs(s, y, w)
    aps = weighted_average_precisions(s, y, w)
    row["auroc"], row["pr_auc"] = auroc(s, y), average_precision_score(y, s)
    row["auroc_low"], row["auroc_high"] = np.quantile(aucs, [alpha, 1.0 - alpha])
    row["pr_low"], row["pr_high"] = np.quantile(aps, [alpha, 1.0 - alpha])
    return row


def _set_slices(cases: pd.DataFrame):
    """(set name, mask, labels, clusters) of every evaluation set: the loop `evaluate` and
    `gains` share."""
    for set_name, mask in evaluation_sets(cases).items():
        y = cases.loc[mask, "label"].to_numpy(bool)
        clusters = cases.loc[mask, "cluster"].astype(str).to_numpy(object)
        yield set_name, mask, y, clusters


def evaluate(
    cases: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = SEED,
) -> pd.DataFrame:
    """One row per evaluation set × detector: counts, AUROC and PR-AUC with intervals."""
    rows = []
    for set_name, mask, y, clusters in _set_slices(cases):
        for detector in scores.columns:
            s = scores.loc[mask, detector].to_numpy(float)
            ok = np.isfinite(s)
            row = {"set": set_name, "detector": detector} | _counts(y[ok], clusters[ok])
            row |= _metric_row(s[ok], y[ok], clusters[ok], n_boot, ci, seed)
            rows.append(row)
    return pd.DataFrame(rows)


def gains(
    cases: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = SEED,
) -> pd.DataFrame:
    """Paired AUROC gains over (a) of every `GAIN_DETECTORS` entry the scores carry, per
    evaluation set, on the same resamples.

    Columns set, comparison, n_pos, n_neg, n_clusters_pos, n_clusters_neg, gain, gain_low,
    gain_high (NaN where a set has fewer than 2 clusters of either class) and note
    (`NO_ROOM` where (a) already separates the set perfectly, so that no detector can gain
    and the interval is [0, 0] by construction; '' otherwise).
    """
    rows = []
    detectors = [d for d in GAIN_DETECTORS if d in scores.columns]
    for set_name, mask, y, clusters in _set_slices(cases):
        base = scores.loc[mask, WHISPER_ALL].to_numpy(float)
        for detector in detectors:
            row = {"set": set_name, "comparison": comparison_label(detector)}
            row |= _counts(y, clusters) | {"note": ""}
            if min(row["n_clusters_pos"], row["n_clusters_neg"]) < 2:
                rows.append(row | {"gain": np.nan, "gain_low": np.nan, "gain_high": np.nan})
                continue
            s = scores.loc[mask, detector].to_numpy(float)
            gain, lo, hi = paired_auroc_difference(
                s, base, y, clusters=clusters, n_boot=n_boot, ci=ci, seed=seed
            )
            note = NO_ROOM if auroc(base, y) == 1.0 else ""
            rows.append(row | {"gain": gain, "gain_low": lo, "gain_high": hi, "note": note})
    return pd.DataFrame(rows)


def fit(cases: pd.DataFrame, detector: str = COMBINED) -> tuple[Pipeline | StackedProbe, list[str]]:
    """`detector` fitted on every case (for its coefficients or for use on new audio)."""
    columns = detector_columns(cases)[detector]
    X, y = cases[columns].to_numpy(float), cases["label"].to_numpy(bool)
    groups = cases["cluster"].astype(str).tolist()
    return fit_detector(detector, X, y, groups), columns


def coefficients(pipe: Pipeline, columns: Sequence[str]) -> pd.Series:
    """Logistic coefficients per standardized input (missing-value indicators named
    "missing: <feature>"): the change in log-odds per standard deviation of the feature."""
    imputer = pipe.named_steps["simpleimputer"]
    names = [
        *np.asarray(columns)[~np.isnan(imputer.statistics_)],
        *(f"missing: {columns[i]}" for i in imputer.indicator_.features_),
    ]
    coef = pipe.named_steps["logisticregression"].coef_[0]
    return pd.Series(coef, index=names)
