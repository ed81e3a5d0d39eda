"""Contrasts that hold the input fixed: does a spectrum change with hallucination, or with input?

Clean-versus-stressed deltas (`wspec.stats`, `wspec.protocol`) compare *inputs*: a sentence
against noise, a long utterance against its 3.5× time-stretched version. Hallucinations pile
up on some inputs, so a spectral difference between those groups may be the audio rather than
the failure. Here decodes that hallucinated are compared with decodes that did not while the
input is held as fixed as the design allows:

* **speech under stress** (`speech_contrasts`; families ``noisy_snr`` and ``hell``, whose
  ``tempo`` condition is the time-stretched speech): within a stratum = family × condition
  level (the same degradation at the same strength: e.g. ``hell: tempo 3.5`` or
  ``noisy_snr: -5 dB white``). The design makes one clip per source and level, and each
  model decodes it once, so a (source, level) stratum can never hold a hallucinated *and* a
  survived decode; the source enters as the resampling unit instead. Two labels: the book's
  flag (``hallucinated``: an insertion run or share, `wspec.labels`) and the paper's
  ``WER > 0.5``. Two readings: the primary control (``natural_T``: the first T₀ rows the
  model chose) and, because a one-sentence decode is often shorter than T₀ and
  ``natural_T`` then keeps only the long (often looping) decodes, a length-robust one: the
  whole natural decode normalised by a Gaussian null of its own shape (``null_ratio`` for
  rank-like metrics, ``null_diff`` for the others: `wspec.seqlen.null_control`).
* **attacks** (`attack_contrasts`): successful and failed PGD attacks and the Gaussian noise
  of equal energy, within a stratum = (sentence, SNR budget). Success is what the attack
  manifest recorded (`wspec.attacks.attack_success`).
* **non-speech** (`nonspeech_contrasts`): decodes with text against empty decodes, within
  the generator kind. An empty decode has one decoder row (the prompt), where no decoder
  spectrum exists, so only encoder-side metrics are compared: they say whether the model
  *heard* something different, i.e. whether "text on non-speech" is a property of the input.
* **regression** (`hallucination_regression`): every stressed clip, metric ~ hallucinated
  + family + log(natural rows) + encoder-output effective rank, with cluster-robust errors.
* **layer profiles** (`layer_profiles`): the paper-protocol deltas per decoder layer beside
  the absolute values of healthy long decodes.

**Estimator** (`stratified_contrast`). Within each stratum holding both kinds, the difference
of means (hallucinated − other); across strata, the average weighted by n₁n₀/(n₁ + n₀): the
weights of a regression with stratum fixed effects, so the point estimate equals the OLS
coefficient of the flag in ``value ~ flag + C(stratum)`` (tests/test_contrasts.py checks it
against statsmodels). Strata with one kind only carry no information about the contrast and
are left out. For rank-like metrics (`wspec.stats.delta_kind` "pct") the estimate is that
difference as a percentage of the weighted mean of the other decodes, like Table 1's ΔN_eff.

**Interval**. A cluster bootstrap: the clusters (`wspec.units`: a source sentence with
everything made from it, a non-speech generator kind) that contribute to some stratum are
drawn with replacement, each with all its clips in all its strata, and the estimate is
recomputed; strata that lose one kind in a replicate drop out of it, as they would from
data drawn that way. Percentile interval; the p-value inverts it (two-sided, the share of
replicates across zero). Fewer than two clusters on either side (hallucinated or other) give
an estimate without an interval (with one of each, every usable resample is the same pair);
with few clusters percentile intervals run a little narrow (as `wspec.stats`' do),
so every row carries its number of clusters. Identical model inputs (equal ``input_key``)
count once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm

from wspec.errors import WspecError
from wspec.protocol import (
    CLEAN_FAMILY,
    FORCED_CONTROL_FAMILY,
    PRIMARY_CONTROL,
    STRESS_FAMILY,
    WER_THRESHOLD,
    protocol_table,
)
from wspec.stats import (
    CLEAN_FAMILIES,
    CONTROL_FAMILIES,
    LAYER_MEAN,
    cell_seed,
    delta_kind,
    resample_counts,
    stimulus_values,
)

SPEECH_FAMILIES: tuple[str, ...] = ("noisy_snr", STRESS_FAMILY)
#: The family name of the pooled speech-under-stress contrast (C4's primary test).
POOLED_SPEECH = "+".join(SPEECH_FAMILIES)
ATTACK_FAMILIES: tuple[str, ...] = ("pgd_untargeted", "pgd_targeted")
GAUSS_FAMILY = "gauss_control"
NONSPEECH_FAMILY = "nonspeech"
DECODER_COMPONENTS: tuple[str, ...] = ("dec_cross_attn", "dec_self_attn", "dec_ffn")
ENCODER_COMPONENTS: tuple[str, ...] = ("enc_residual", "enc_self_attn")
METRICS: tuple[str, ...] = ("n_eff", "log10_kf", "alpha")
#: Encoder spectra on F₀ seeded frame subsets: the same shape for every clip ≥ 3 s long.
ENCODER_CONTROL = "matched_T"
#: The input-side covariate of the regression: n_eff of the last encoder layer's residual.
ENCODER_COVARIATE = ("enc_residual", "n_eff")
LABEL_FLAG = "hallucinated"
LABEL_WER = f"WER > {WER_THRESHOLD:g}"
LABEL_ATTACK = "attack success"
LABEL_TEXT = "text on non-speech"
PRIMARY = "primary"
LENGTH_ROBUST = "length-robust"
INPUT_SIDE = "input side: encoder"
#: The decoder readings: control → reading. Each metric has one null control in the results.
DECODER_READINGS: dict[str, str] = {
    PRIMARY_CONTROL: PRIMARY,
    "null_ratio": LENGTH_ROBUST,
    "null_diff": LENGTH_ROBUST,
}
CONTRAST_COLUMNS: tuple[str, ...] = (
    "model",
    "contrast",
    "family",
    "component",
    "metric",
    "control",
    "reading",
    "label",
    "kind",
    "estimate",
    "ci_low",
    "ci_high",
    "n_hallucinated",
    "n_other",
    "n_strata",
    "n_clusters",
    "p_value",
)
SPEECH_CONTRAST = "hallucinated − not, same family and condition level"
ATTACK_CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("successful attack − Gaussian control, same sentence and SNR", "success", "control"),
    ("failed attack − Gaussian control, same sentence and SNR", "failure", "control"),
    ("successful − failed attack, same sentence and SNR", "success", "failure"),
)
NONSPEECH_CONTRAST = "text − empty decode, same generator kind"


#: Independent units each kind (hallucinated, other) needs before a contrast gets an interval.
MIN_CLUSTERS_PER_KIND = 2

# --------------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class Contrast:
    """A stratified contrast: estimate, percentile interval, p-value and what it rests on.

    Counts refer to the contributing strata (both kinds present); n_clusters counts the
    independent units the bootstrap drew.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n_hallucinated: int
    n_other: int
    n_strata: int
    n_clusters: int


def _stratified(
    weights: np.ndarray, value: np.ndarray, flag: np.ndarray, onehot: np.ndarray, kind: str
) -> np.ndarray:
    """The fixed-effects-weighted contrast for each row of clip `weights` (n_rep, n_clips).

    NaN where no stratum holds both kinds (possible in a bootstrap replicate).
    """
    w1, w0 = weights * flag, weights * ~flag
    n1, n0 = w1 @ onehot, w0 @ onehot
    with np.errstate(invalid="ignore", divide="ignore"):
        m1, m0 = (w1 * value) @ onehot / n1, (w0 * value) @ onehot / n0
        both = (n1 > 0) & (n0 > 0)
        w = np.where(both, n1 * n0 / (n1 + n0), 0.0)
        total = w.sum(axis=1)
        diff = np.where(both, m1 - m0, 0.0)
        est = (w * diff).sum(axis=1) / total
        if kind == "pct":
            est = 100.0 * est / ((w * np.where(both, m0, 0.0)).sum(axis=1) / total)
    return np.where(total > 0, est, np.nan)


def _percentile(boot: np.ndarray, ci: float) -> tuple[float, float, float]:
    """Percentile interval and the two-sided p-value that inverts it (NaN replicates ignored)."""
    finite = boot[np.isfinite(boot)]
    if finite.size == 0:
        return np.nan, np.nan, np.nan
    lo, hi = np.quantile(finite, [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0])
    below, above = np.sum(finite <= 0), np.sum(finite >= 0)
    p = min(1.0, 2.0 * (1.0 + min(below, above)) / (1.0 + finite.size))
    return float(lo), float(hi), p


def _contributing(flag: np.ndarray, stratum: np.ndarray) -> np.ndarray:
    """Mask of clips in strata that hold both a flagged and an unflagged clip."""
    frame = pd.DataFrame({"s": stratum, "f": flag})
    kinds = frame.groupby("s")["f"].transform("nunique").to_numpy()
    return kinds == 2


def stratified_contrast(
    value: Sequence[float] | np.ndarray,
    flag: Sequence[bool] | np.ndarray,
    stratum: Sequence[object] | np.ndarray,
    cluster: Sequence[object] | np.ndarray,
    *,
    kind: str = "diff",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | Sequence[int] = 0,
) -> Contrast:
    """Flagged − unflagged within strata, fixed-effects weighted, with a cluster bootstrap.

    See the module docstring for the estimator and the interval. Non-finite values are
    dropped first (a decode too short for the control has no value, and its stratum may
    then lack one kind).
    """
    if kind not in ("pct", "diff"):
        raise WspecError(f"unknown contrast kind {kind!r}; use 'pct' or 'diff'")
    value = np.asarray(value, dtype=float)
    flag = np.asarray(flag, dtype=bool)
    stratum = np.asarray(stratum, dtype=object)
    cluster = np.asarray(cluster, dtype=object)
    if not value.shape == flag.shape == stratum.shape == cluster.shape:
        raise WspecError("value, flag, stratum and cluster need one entry per clip")
    ok = np.isfinite(value)
    ok[ok] = _contributing(flag[ok], stratum[ok])
    value, flag = value[ok], flag[ok]
    strata, clusters = pd.factorize(stratum[ok])[0], pd.factorize(cluster[ok])[0]
    n_clusters = int(clusters.max()) + 1 if clusters.size else 0
    counts = dict(
        n_hallucinated=int(flag.sum()),
        n_other=int((~flag).sum()),
        n_strata=int(strata.max()) + 1 if strata.size else 0,
        n_clusters=n_clusters,
    )
    if not counts["n_strata"]:
        return Contrast(np.nan, np.nan, np.nan, np.nan, **counts)
    onehot = np.eye(counts["n_strata"])[strata]
    estimate = float(_stratified(np.ones((1, value.size)), value, flag, onehot, kind)[0])
    # An interval needs independent units on both sides: with one hallucinated and one other
    # cluster every usable resample repeats the same pair, and its "interval" has no width.
    per_kind = min(len(np.unique(clusters[flag])), len(np.unique(clusters[~flag])))
    if per_kind < MIN_CLUSTERS_PER_KIND:
        return Contrast(estimate, np.nan, np.nan, np.nan, **counts)
    draws = resample_counts(np.random.default_rng(seed), n_clusters, n_boot)
    boot = _stratified(draws[:, clusters], value, flag, onehot, kind)
    return Contrast(estimate, *_percentile(boot, ci), **counts)


@dataclass(frozen=True)
class Mean:
    """A mean over clips with a cluster-bootstrap percentile interval."""

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int


def cluster_mean(
    value: Sequence[float] | np.ndarray,
    cluster: Sequence[object] | np.ndarray,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | Sequence[int] = 0,
) -> Mean:
    """Mean of the finite values; the interval resamples clusters (no interval from one)."""
    value = np.asarray(value, dtype=float)
    ok = np.isfinite(value)
    value, clusters = value[ok], pd.factorize(np.asarray(cluster, dtype=object)[ok])[0]
    n_clusters = int(clusters.max()) + 1 if clusters.size else 0
    if n_clusters == 0:
        return Mean(np.nan, np.nan, np.nan, 0, 0)
    estimate = float(value.mean())
    if n_clusters < 2:
        return Mean(estimate, np.nan, np.nan, int(value.size), n_clusters)
    w = resample_counts(np.random.default_rng(seed), n_clusters, n_boot)[:, clusters]
    lo, hi, _ = _percentile(w @ value / w.sum(axis=1), ci)
    return Mean(estimate, lo, hi, int(value.size), n_clusters)


# --------------------------------------------------------------------------- inputs


def condition_level(family: str, params: str | dict) -> str:
    """The condition and strength a clip was made with: its stratum within the family.

    Hell: condition and level ("tempo 3.5"); speech in noise: SNR and noise colour; attacks
    and their Gaussian control: the SNR budget; non-speech: the generator kind. Other
    families have no level ("").
    """
    p = json.loads(params) if isinstance(params, str) else dict(params)
    if family == STRESS_FAMILY:
        return f"{p['condition']} {p['level']}"
    if family == "noisy_snr":
        return f"{float(p['snr_db']):g} dB {p['color']}"
    if family in (*ATTACK_FAMILIES, GAUSS_FAMILY):
        return f"{float(p['snr_db']):g} dB"
    if family == NONSPEECH_FAMILY:
        return str(p["kind"])
    return ""


def levels(manifest: pd.DataFrame) -> pd.Series:
    """`condition_level` of every stimulus of a manifest, indexed by stimulus id."""
    return pd.Series(
        [
            condition_level(f, p)
            for f, p in zip(manifest["family"], manifest["params"], strict=True)
        ],
        index=manifest["id"].to_numpy(),
        dtype=object,
    )


def hallucination_flag(labels: pd.DataFrame, label: str) -> pd.Series:
    """The label of each labelled decode: the book's flag or the paper's WER threshold."""
    if label in (LABEL_FLAG, LABEL_TEXT):
        return labels["hallucinated"].astype(bool)
    if label == LABEL_WER:
        return labels["wer"].astype(float) > WER_THRESHOLD
    raise WspecError(f"unknown label {label!r}; use {LABEL_FLAG!r} or {LABEL_WER!r}")


def _cells(
    results: pd.DataFrame,
    *,
    components: Sequence[str],
    metrics: Sequence[str],
    controls: Iterable[str],
    K: int,
) -> Iterator[tuple[tuple[str, str, str, str], pd.DataFrame]]:
    """(model, component, metric, control) cells of the results that are asked for; cells
    absent from the results (an older run, a metric without that null) are not invented."""
    sub = results[
        (results["K"] == K)
        & results["component"].isin(list(components))
        & results["metric"].isin(list(metrics))
        & results["control"].isin(list(controls))
    ]
    yield from sub.groupby(["model", "component", "metric", "control"], sort=True)


def clip_values(cell: pd.DataFrame, layer: int = LAYER_MEAN) -> pd.DataFrame:
    """`wspec.stats.stimulus_values` of one cell, each model input once (first by id)."""
    values = stimulus_values(cell, layer)
    return values.sort_values("stimulus_id").drop_duplicates("input_key").reset_index(drop=True)


def _row(key: dict[str, object], result: Contrast) -> dict[str, object]:
    return key | {
        "estimate": result.estimate,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "n_hallucinated": result.n_hallucinated,
        "n_other": result.n_other,
        "n_strata": result.n_strata,
        "n_clusters": result.n_clusters,
        "p_value": result.p_value,
    }


def _table(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(CONTRAST_COLUMNS))


# --------------------------------------------------------------------------- contrasts


def speech_contrasts(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    families: Sequence[str] = SPEECH_FAMILIES,
    label_names: Sequence[str] = (LABEL_FLAG, LABEL_WER),
    components: Sequence[str] = DECODER_COMPONENTS,
    metrics: Sequence[str] = METRICS,
    K: int = 10,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Hallucinated − not within family × condition level, per family and pooled.

    One row per model, family ("+"-joined when pooled), component, metric, reading and
    label (`CONTRAST_COLUMNS`); rows with no contributing stratum have NaN estimates and
    their counts, so a reader sees what was missing.
    """
    level = levels(manifest)
    family_sets = [[f] for f in families] + ([list(families)] if len(families) > 1 else [])
    rows = []
    cells = _cells(
        results,
        components=components,
        metrics=metrics,
        controls=DECODER_READINGS,
        K=K,
    )
    for (model, component, metric, control), cell in cells:
        lab = labels[labels["model"] == model].set_index("stimulus_id")
        values = clip_values(cell[cell["family"].isin(list(families))])
        values = values[values["stimulus_id"].isin(lab.index)]
        stratum = values["family"] + ": " + values["stimulus_id"].map(level).fillna("")
        for label in label_names:
            flag = hallucination_flag(lab.loc[values["stimulus_id"]], label).to_numpy()
            for fams in family_sets:
                inside = values["family"].isin(fams).to_numpy()
                name = "+".join(fams)
                result = stratified_contrast(
                    values["value"].to_numpy()[inside],
                    flag[inside],
                    stratum.to_numpy()[inside],
                    values["cluster"].to_numpy()[inside],
                    kind=delta_kind(metric),
                    n_boot=n_boot,
                    ci=ci,
                    seed=cell_seed(seed, model, component, metric, control, label, name),
                )
                key = {"model": model, "contrast": SPEECH_CONTRAST, "family": name}
                key |= {"component": component, "metric": metric, "control": control}
                key |= {"reading": DECODER_READINGS[control], "label": label}
                rows.append(_row(key | {"kind": delta_kind(metric)}, result))
    return _table(rows)


def attack_outcomes(attacks: pd.DataFrame) -> pd.DataFrame:
    """stimulus_id, family, outcome ("success", "failure", "control") and SNR level of
    attack-manifest rows (`wspec.attacks.build_attack_stimuli`), from their params."""
    params = attacks["params"].map(json.loads)
    outcome = [
        "control" if fam == GAUSS_FAMILY else ("success" if p["success"] else "failure")
        for fam, p in zip(attacks["family"], params, strict=True)
    ]
    return pd.DataFrame(
        {
            "stimulus_id": attacks["id"].to_numpy(),
            "family": attacks["family"].to_numpy(),
            "outcome": outcome,
            "level": [
                condition_level(f, p) for f, p in zip(attacks["family"], params, strict=True)
            ],
        }
    )


def attack_contrasts(
    results: pd.DataFrame,
    attacks: pd.DataFrame,
    *,
    components: Sequence[str] = DECODER_COMPONENTS,
    metrics: Sequence[str] = METRICS,
    K: int = 10,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Successful and failed attacks against the Gaussian control and each other, within
    (sentence, SNR budget): the noise energy and the words are the same on both sides.

    `attacks`: the attack manifests of the models (rows of every model's
    `build_attack_stimuli`, concatenated); a stimulus id names its model's attack.
    """
    outcome = attack_outcomes(attacks).set_index("stimulus_id")
    families = (*ATTACK_FAMILIES, GAUSS_FAMILY)
    rows = []
    cells = _cells(
        results,
        components=components,
        metrics=metrics,
        controls=DECODER_READINGS,
        K=K,
    )
    for (model, component, metric, control), cell in cells:
        values = clip_values(cell[cell["family"].isin(families)])
        values = values[values["stimulus_id"].isin(outcome.index)]
        known = outcome.loc[values["stimulus_id"]]
        what = known["outcome"].to_numpy()
        stratum = (values["source_id"] + " @ " + known["level"].to_numpy()).to_numpy()
        for name, one, other in ATTACK_CONTRASTS:
            inside = np.isin(what, [one, other])
            result = stratified_contrast(
                values["value"].to_numpy()[inside],
                what[inside] == one,
                stratum[inside],
                values["cluster"].to_numpy()[inside],
                kind=delta_kind(metric),
                n_boot=n_boot,
                ci=ci,
                seed=cell_seed(seed, model, component, metric, control, name),
            )
            key = {"model": model, "contrast": name, "family": "+".join(ATTACK_FAMILIES)}
            key |= {"component": component, "metric": metric, "control": control}
            key |= {"reading": DECODER_READINGS[control], "label": LABEL_ATTACK}
            rows.append(_row(key | {"kind": delta_kind(metric)}, result))
    return _table(rows)


def nonspeech_contrasts(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    manifest: pd.DataFrame,
    *,
    components: Sequence[str] = ENCODER_COMPONENTS,
    metrics: Sequence[str] = METRICS,
    control: str = ENCODER_CONTROL,
    K: int = 10,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Non-speech decodes with text − empty ones of the same generator kind, encoder side.

    The decoder of an empty decode ran one row, so decoder spectra exist only for the
    decodes with text and the contrast the question needs cannot be made there. The
    encoder sees every clip in full; a difference there is a difference of *input*.
    """
    level = levels(manifest)
    rows = []
    cells = _cells(results, components=components, metrics=metrics, controls=[control], K=K)
    for (model, component, metric, ctrl), cell in cells:
        lab = labels[labels["model"] == model].set_index("stimulus_id")
        values = clip_values(cell[cell["family"] == NONSPEECH_FAMILY])
        values = values[values["stimulus_id"].isin(lab.index)]
        result = stratified_contrast(
            values["value"].to_numpy(),
            hallucination_flag(lab.loc[values["stimulus_id"]], LABEL_TEXT).to_numpy(),
            values["stimulus_id"].map(level).fillna("").to_numpy(),
            values["cluster"].to_numpy(),
            kind=delta_kind(metric),
            n_boot=n_boot,
            ci=ci,
            seed=cell_seed(seed, model, component, metric, ctrl, NONSPEECH_CONTRAST),
        )
        key = {"model": model, "contrast": NONSPEECH_CONTRAST, "family": NONSPEECH_FAMILY}
        key |= {"component": component, "metric": metric, "control": ctrl}
        key |= {"reading": INPUT_SIDE, "label": LABEL_TEXT, "kind": delta_kind(metric)}
        rows.append(_row(key, result))
    return _table(rows)


def contrast_table(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    manifest: pd.DataFrame,
    attacks: pd.DataFrame | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every input-fixed contrast (speech, attacks when `attacks` is given, non-speech)."""
    common = {"n_boot": n_boot, "ci": ci, "seed": seed}
    parts = [speech_contrasts(results, labels, manifest, **common)]
    if attacks is not None and len(attacks):
        parts.append(attack_contrasts(results, attacks, **common))
    parts.append(nonspeech_contrasts(results, labels, manifest, **common))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- regression

REGRESSION_COLUMNS: tuple[str, ...] = (
    "model",
    "component",
    "metric",
    "control",
    "reading",
    "kind",
    "estimate",
    "ci_low",
    "ci_high",
    "p_value",
    "n",
    "n_hallucinated",
    "n_clusters",
    "n_families",
    "note",
)


def stressed_families(results: pd.DataFrame) -> list[str]:
    """Every family except clean speech (sentences, long and short utterances) and the
    Gaussian attack control: the clips on which a model can be stressed into hallucinating."""
    skip = {*CLEAN_FAMILIES, CLEAN_FAMILY, FORCED_CONTROL_FAMILY, *CONTROL_FAMILIES}
    return sorted(f for f in results["family"].astype(str).unique() if f not in skip)


def encoder_covariate(results: pd.DataFrame, model: str, K: int = 10) -> pd.Series:
    """n_eff of the last encoder layer's residual per stimulus (`ENCODER_CONTROL` frames).

    What the decoder reads: a summary of the input that no decode can have changed.
    """
    component, metric = ENCODER_COVARIATE
    cell = results[
        (results["model"] == model)
        & (results["component"] == component)
        & (results["metric"] == metric)
        & (results["control"] == ENCODER_CONTROL)
        & (results["K"] == K)
    ]
    if cell.empty:
        return pd.Series(dtype=float)
    values = stimulus_values(cell, int(cell["layer"].max()))
    return values.set_index("stimulus_id")["value"]


def regression_frame(
    cell: pd.DataFrame, labels: pd.DataFrame, encoder: pd.Series, families: Sequence[str]
) -> pd.DataFrame:
    """One row per stressed model input: value, hallucinated, family, log natural rows
    (generated tokens + the prompt row), encoder covariate and cluster; incomplete rows go."""
    values = clip_values(cell[cell["family"].isin(list(families))])
    lab = labels.set_index("stimulus_id")
    values = values[values["stimulus_id"].isin(lab.index)]
    ids = values["stimulus_id"]
    frame = pd.DataFrame(
        {
            "value": values["value"].to_numpy(float),
            "hallucinated": lab.loc[ids, "hallucinated"].astype(float).to_numpy(),
            "family": values["family"].to_numpy(),
            "log_rows": np.log(lab.loc[ids, "n_tokens"].to_numpy(float) + 1.0),
            "encoder": encoder.reindex(ids).to_numpy(float),
            "cluster": values["cluster"].to_numpy(),
        }
    )
    numeric = frame[["value", "hallucinated", "log_rows", "encoder"]].to_numpy()
    return frame[np.isfinite(numeric).all(axis=1)].reset_index(drop=True)


def design_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """Intercept, hallucinated, log_rows, encoder and one dummy per family but the first."""
    dummies = pd.get_dummies(frame["family"], prefix="family", drop_first=True, dtype=float)
    X = frame[["hallucinated", "log_rows", "encoder"]].astype(float).join(dummies)
    return sm.add_constant(X, has_constant="add")


def cluster_ols(y: np.ndarray, X: pd.DataFrame, groups: Sequence[object] | np.ndarray):
    """OLS with cluster-robust (CR1) covariance and t(G − 1) inference (statsmodels).

    Clips of one source are not independent draws: a naive standard error treats a sentence
    with five degraded versions as five sentences.
    """
    codes = pd.factorize(np.asarray(groups, dtype=object))[0]
    return sm.OLS(np.asarray(y, dtype=float), X).fit(
        cov_type="cluster", cov_kwds={"groups": codes}, use_t=True
    )


def _unfit(frame: pd.DataFrame, X: pd.DataFrame) -> str:
    """Why the hallucination coefficient cannot be estimated from `frame` ('' if it can)."""
    n_clusters = frame["cluster"].nunique()
    if frame["hallucinated"].nunique() < 2:
        return "hallucination does not vary"
    if n_clusters < 3:
        return f"{n_clusters} cluster(s)"
    if len(frame) <= X.shape[1] or np.linalg.matrix_rank(X.to_numpy()) < X.shape[1]:
        return "hallucination not separable from family and covariates"
    return ""


def fit_hallucination(frame: pd.DataFrame, kind: str, ci: float = 0.95) -> dict[str, object]:
    """The hallucination coefficient of `regression_frame` data with its cluster-robust CI.

    For rank-like metrics ("pct") the response is log(value) and the coefficient becomes
    100·(e^b − 1) %, a relative change comparable with ΔN_eff (%); else metric units.
    """
    if kind == "pct":
        frame = frame[frame["value"] > 0]
    counts = {
        "n": len(frame),
        "n_hallucinated": int(frame["hallucinated"].sum()),
        "n_clusters": int(frame["cluster"].nunique()),
        "n_families": int(frame["family"].nunique()),
    }
    empty = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    X = design_matrix(frame)
    reason = _unfit(frame, X)
    if reason:
        return empty | counts | {"note": reason}
    y = np.log(frame["value"]) if kind == "pct" else frame["value"]
    fit = cluster_ols(y.to_numpy(float), X, frame["cluster"])
    b = float(fit.params["hallucinated"])
    lo, hi = (float(v) for v in fit.conf_int(alpha=1.0 - ci).loc["hallucinated"])
    if kind == "pct":
        b, lo, hi = (100.0 * np.expm1(v) for v in (b, lo, hi))
    est = {"estimate": b, "ci_low": lo, "ci_high": hi}
    return est | {"p_value": float(fit.pvalues["hallucinated"])} | counts | {"note": ""}


def hallucination_regression(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    components: Sequence[str] = DECODER_COMPONENTS,
    metrics: Sequence[str] = ("n_eff", "alpha"),
    K: int = 10,
    ci: float = 0.95,
) -> pd.DataFrame:
    """metric ~ hallucinated + C(family) + log(natural rows) + encoder n_eff, per model,
    component, metric and reading, on every stressed clip (`stressed_families`).

    The family dummies absorb input type; the encoder covariate absorbs what the model
    heard within a family; log rows absorbs decode length. What is left on `hallucinated`
    is the part of the spectrum that goes with the failure itself.
    """
    families = stressed_families(results)
    encoders = {m: encoder_covariate(results, m, K) for m in results["model"].unique()}
    rows = []
    cells = _cells(
        results,
        components=components,
        metrics=metrics,
        controls=DECODER_READINGS,
        K=K,
    )
    for (model, component, metric, control), cell in cells:
        frame = regression_frame(cell, labels[labels["model"] == model], encoders[model], families)
        key = {"model": model, "component": component, "metric": metric, "control": control}
        key |= {"reading": DECODER_READINGS[control], "kind": delta_kind(metric)}
        rows.append(key | fit_hallucination(frame, delta_kind(metric), ci))
    return pd.DataFrame(rows, columns=list(REGRESSION_COLUMNS))


# --------------------------------------------------------------------------- layer profiles

PROFILE_COLUMNS: tuple[str, ...] = (
    "model",
    "component",
    "metric",
    "layer",
    "profile",
    "kind",
    "estimate",
    "ci_low",
    "ci_high",
    "n",
    "n_clusters",
)
PROFILE_DELTA = "hell − long clean"
PROFILE_HEALTHY = "healthy long clean"


def healthy_long(labels: pd.DataFrame) -> pd.DataFrame:
    """Long clean decodes that are healthy: no hallucination flag and WER ≤ the threshold."""
    long = labels[labels["family"] == CLEAN_FAMILY]
    ok = ~long["hallucinated"].astype(bool) & (long["wer"].astype(float) <= WER_THRESHOLD)
    return long[ok]


def layer_profiles(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    components: Sequence[str] = DECODER_COMPONENTS,
    metrics: Sequence[str] = ("n_eff", "alpha"),
    control: str = PRIMARY_CONTROL,
    K: int = 10,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per model, component, metric and decoder layer: the paper-protocol delta (kept hell
    clips against their own long sources, `wspec.protocol.protocol_table`) and the healthy
    baseline (the mean over healthy long clean decodes, cluster-bootstrap interval).

    A compression that is a response to failure shows in the delta while the baseline
    profile is unremarkable; one already in the baseline is a static property of the layer.
    """
    deltas = protocol_table(
        results,
        labels,
        control=control,
        K=K,
        components=components,
        metrics=metrics,
        n_boot=n_boot,
        n_perm=100,  # the profile shows intervals; its p-values are not used
        seed=seed,
        by_layer=True,
    )
    deltas = deltas[deltas["layer"] != LAYER_MEAN]
    rows = [
        {"model": r.model, "component": r.component, "metric": r.metric, "layer": r.layer}
        | {"profile": PROFILE_DELTA, "kind": r.kind, "estimate": r.estimate}
        | {"ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n_stressed}
        | {"n_clusters": r.n_clusters_clean}
        for r in deltas.itertuples(index=False)
    ]
    healthy = healthy_long(labels)
    sub = results[
        (results["control"] == control)
        & (results["K"] == K)
        & results["component"].isin(list(components))
        & results["metric"].isin(list(metrics))
        & (results["family"] == CLEAN_FAMILY)
    ]
    for (model, component, metric), cell in sub.groupby(["model", "component", "metric"]):
        ids = healthy.loc[healthy["model"] == model, "stimulus_id"]
        cell = cell[cell["stimulus_id"].isin(ids)]
        for layer in sorted(int(x) for x in cell["layer"].unique()):
            values = clip_values(cell, layer)
            mean = cluster_mean(
                values["value"],
                values["cluster"],
                n_boot=n_boot,
                ci=ci,
                seed=cell_seed(seed, model, component, metric, layer, PROFILE_HEALTHY),
            )
            rows.append(
                {"model": model, "component": component, "metric": metric, "layer": layer}
                | {"profile": PROFILE_HEALTHY, "kind": "level", "estimate": mean.estimate}
                | {"ci_low": mean.ci_low, "ci_high": mean.ci_high, "n": mean.n}
                | {"n_clusters": mean.n_clusters}
            )
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))
