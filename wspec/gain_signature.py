"""Does a clip's measured gain–alignment ratio predict its spectral signature?

The circularity critique: the paper infers ρ > 1 (attraction) from the very spectra it
explains — a clip "collapsed", so its ρ "must" have been above 1. Measuring ρ per clip
(`wspec.jacobian`) breaks the circle only if the measured ρ predicts, clip by clip, the
signature it is meant to explain: the cross-attention N_eff drop and α rise. Here:

* `gain_alignment_table`: per model × group (clean, stressed) the clip-level means of ρ̄,
  σ₁, κ and κ_sub over their nulls, the share of ρ_j ≥ 1 and the partial-product factor,
  each with a cluster-bootstrap interval. The unit is the clip (its layers and steps share
  one audio and one decode); clips made from one source are drawn together (`clip_units`).
* `clip_signature`: per model × clip, the layer-mean cross-attention N_eff change (%) and α
  change against the clip's own clean source where the results hold it, else against the
  model's clean mean, under one sequence-length control (`signature_control`: the primary
  ``natural_T`` where it is defined, else the control named there, so the prose can say it).
* `rank_correlation`: Spearman's correlation with a cluster-bootstrap percentile interval;
  each replicate is the exact Spearman correlation of the resampled (duplicated) clips,
  computed from weighted mid-ranks so the bootstrap needs no loop.
* `circularity_table`: that correlation of clip ρ̄ (and of each layer's ρ_j) with each part
  of the signature, over all clips and over the stressed clips alone (within the stressed
  group the input type is fixed, so a correlation there is not the clean/stressed split
  again); `reading` and `correlation_sentence` put it in words for the prose.

Intervals need at least `MIN_UNITS` units; with fewer, estimates are reported without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from wspec.errors import WspecError
from wspec.jacobian import CLIP_COLUMNS, clip_means
from wspec.numbers import format_number
from wspec.protocol import CLEAN_FAMILY as LONG_CLEAN_FAMILY
from wspec.stats import (
    CLEAN_FAMILIES,
    CONTROL_FAMILIES,
    LAYER_MEAN,
    cell_seed,
    resample_counts,
    select_results,
    stimulus_values,
)

#: Clean speech: the paper's long utterances (Hell's sources, long enough for natural_T)
#: first, then the short sentences.
CLEAN_GROUP: tuple[str, ...] = (LONG_CLEAN_FAMILY, *CLEAN_FAMILIES)
#: Stressed families whose decodes run long (Hell loops or rambles, repeated syllables
#: repeat), so that five decoding steps and the primary control exist: drawn first.
LONG_DECODE_FAMILIES: tuple[str, ...] = ("hell", "repeated_syllables")
#: Controls for the signature, in order of preference: the first T₀ natural rows (primary;
#: undefined for decodes shorter than T₀), then the whole natural decode.
SIGNATURE_CONTROLS: tuple[str, ...] = ("natural_T", "raw")
SIGNATURE_COMPONENT = "dec_cross_attn"
#: The two parts of the signature and the sign of their correlation with ρ that the theory
#: predicts (collapse: N_eff falls and α rises as ρ grows).
TARGETS: dict[str, int] = {"d_n_eff_pct": -1, "d_alpha": +1}
#: Fewer resampling units than this give no interval (a bootstrap of 3 units is not one).
MIN_UNITS = 6
#: How the per-clip columns of `jacobian.clip_means` are shown: name and whether the
#: mean is taken on log scale (then reported as a geometric mean).
QUANTITIES: dict[str, tuple[str, bool]] = {
    "log_rho": ("rho", True),
    "log_sigma1": ("sigma1", True),
    "kappa_ratio": ("kappa_ratio", False),
    "kappa_sub_ratio": ("kappa_sub_ratio", False),
    "frac_rho_ge_1": ("frac_rho_ge_1", False),
    "log_partial_factor": ("partial_factor", True),
}


def clip_group(family: str) -> str | None:
    """ "clean" for clean speech (`CLEAN_GROUP`), None for controls, else "stressed"."""
    if family in CLEAN_GROUP:
        return "clean"
    return None if family in CONTROL_FAMILIES else "stressed"


def clip_units(rows: pd.DataFrame) -> pd.Series:
    """The resampling unit of each manifest row (`wspec.units.resampling_unit`), by position.

    Rows without source/params columns (a hand-made table) are each their own unit.
    """
    from wspec.units import resampling_unit

    if not {"source_id", "params"} <= set(rows.columns):
        return rows["id"].astype(str).map(lambda sid: f"source:{sid}")
    units = [
        resampling_unit(str(r.family), str(r.id), str(r.source_id or ""), r.params or "{}")
        for r in rows.itertuples()
    ]
    return pd.Series(units, index=rows.index)


# --------------------------------------------------------------------------- bootstrap


def _unit_weights(units: Sequence[object], n_boot: int, seed: Sequence[int]) -> np.ndarray:
    """Bootstrap weights (n_boot × n rows): how often each row's unit was drawn."""
    codes = pd.factorize(pd.Series(list(units), dtype=object))[0]
    rng = np.random.default_rng(list(seed))
    return resample_counts(rng, int(codes.max()) + 1, n_boot)[:, codes]


def _percentile(boot: np.ndarray, ci: float) -> tuple[float, float]:
    finite = boot[np.isfinite(boot)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def gain_alignment_table(
    jacobian: pd.DataFrame,
    *,
    units: pd.Series | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    min_units: int = MIN_UNITS,
) -> pd.DataFrame:
    """Clip-level gain and alignment per model × group with cluster-bootstrap intervals.

    `jacobian`: rows of `wspec.jacobian.measure_clips` (decoder stack used). `units`: the
    resampling unit per stimulus_id (default: the table's ``cluster`` column, else each
    clip). One row per model × group × quantity: estimate (mean over clips; geometric for ρ̄,
    σ₁ and the partial-product factor), ci_low, ci_high, n_clips, n_units, and `null`, the
    value that means chance alignment (1 for the κ ratios) where there is one. A cell with
    fewer than `min_units` units gets no interval (NaN bounds).
    """
    clips = clip_means(jacobian)
    units = _units_of(jacobian, units)
    clips["unit"] = clips["stimulus_id"].map(units)
    clips["group"] = clips["family"].map(clip_group)
    rows = []
    for (model, group), cell in clips.dropna(subset=["group"]).groupby(["model", "group"]):
        for column in CLIP_COLUMNS:
            name, on_log = QUANTITIES[column]
            ok = cell[np.isfinite(cell[column])]
            if ok.empty:
                continue
            x = ok[column].to_numpy(float)
            lo = hi = float("nan")
            if ok["unit"].nunique() >= min_units:
                w = _unit_weights(ok["unit"], n_boot, cell_seed(seed, model, group, column))
                lo, hi = _percentile((w @ x) / w.sum(axis=1), ci)
            back = np.exp if on_log else float
            rows.append(
                {
                    "model": model,
                    "group": group,
                    "quantity": name,
                    "estimate": float(back(x.mean())),
                    "ci_low": float(back(lo)),
                    "ci_high": float(back(hi)),
                    "null": 1.0 if name.startswith("kappa") else np.nan,
                    "n_clips": len(ok),
                    "n_units": ok["unit"].nunique(),
                }
            )
    return pd.DataFrame(rows)


def _units_of(jacobian: pd.DataFrame, units: pd.Series | None) -> pd.Series:
    """stimulus_id -> unit: given, else the table's cluster column, else the clip itself."""
    if units is not None:
        return units
    first = jacobian.drop_duplicates("stimulus_id").set_index("stimulus_id")
    if "cluster" in first.columns:
        return first["cluster"].astype(str)
    return first.index.to_series().astype(str)


# --------------------------------------------------------------------------- signature


def _signature_values(results: pd.DataFrame, control: str, K: int) -> pd.DataFrame:
    """Layer-mean cross-attention N_eff and α per model × stimulus under `control`."""
    frames = []
    for metric in ("n_eff", "alpha"):
        sub = select_results(results, control=control, K=K)
        sub = sub[(sub["component"] == SIGNATURE_COMPONENT) & (sub["metric"] == metric)]
        for model, cell in sub.groupby("model"):
            values = stimulus_values(cell, LAYER_MEAN)
            frames.append(values.assign(model=model, metric=metric))
    if not frames:
        raise WspecError(f"no {SIGNATURE_COMPONENT} N_eff/alpha rows under control {control!r}")
    return pd.concat(frames, ignore_index=True)


def clip_signature(results: pd.DataFrame, *, control: str, K: int = 10) -> pd.DataFrame:
    """Per model × clip: its cross-attention N_eff change (%) and α change under `control`.

    The reference is the clip's own clean source when the results hold the source's value
    (a Hell clip against its long utterance, a noisy clip against its sentence), else the
    mean of the model's clean clips (`CLEAN_GROUP`) under the same control, so a clean clip
    shows how far it sits from the other clean clips. Columns model, stimulus_id, family,
    cluster, control, n_eff, alpha, reference ("source" or "clean mean"), d_n_eff_pct =
    100 (N_eff − ref) / ref and d_alpha = α − ref (NaN where a value is undefined).
    """
    values = _signature_values(results, control, K)
    out = []
    for model, cell in values.groupby("model"):
        wide = cell.pivot_table(index="stimulus_id", columns="metric", values="value")
        wide = wide.reindex(columns=["n_eff", "alpha"])
        meta = cell.drop_duplicates("stimulus_id").set_index("stimulus_id")
        clean = wide[meta.loc[wide.index, "family"].isin(CLEAN_GROUP).to_numpy()].mean()
        for sid, now in wide.iterrows():
            own = str(meta.at[sid, "source_id"]) in wide.index
            ref = wide.loc[str(meta.at[sid, "source_id"])] if own else clean
            out.append(
                {
                    "model": model,
                    "stimulus_id": sid,
                    "family": meta.at[sid, "family"],
                    "cluster": meta.at[sid, "cluster"],
                    "control": control,
                    "n_eff": now["n_eff"],
                    "alpha": now["alpha"],
                    "reference": "source" if own else "clean mean",
                    "d_n_eff_pct": 100 * (now["n_eff"] - ref["n_eff"]) / ref["n_eff"],
                    "d_alpha": now["alpha"] - ref["alpha"],
                }
            )
    return pd.DataFrame(out)


def signature_control(
    results: pd.DataFrame, preference: Sequence[str] = SIGNATURE_CONTROLS, K: int = 10
) -> str:
    """The first control of `preference` with finite cross-attention N_eff in the results.

    The primary control natural_T comes first; a results table without it (written before
    it existed) falls back to the whole natural decode, and the chapter names the control.
    """
    cell = results[(results["component"] == SIGNATURE_COMPONENT) & (results["K"] == K)]
    for control in preference:
        rows = cell[(cell["control"] == control) & (cell["metric"] == "n_eff")]
        if np.isfinite(rows["value"]).any():
            return control
    raise WspecError(f"no finite {SIGNATURE_COMPONENT} N_eff under any of {list(preference)}")


def defined_clips(signature: pd.DataFrame, models: Sequence[str]) -> list[str]:
    """Stimulus ids whose whole signature is finite for every one of `models`."""
    sub = signature[signature["model"].isin(list(models))]
    ok = np.isfinite(sub[list(TARGETS)]).all(axis=1)
    counts = sub[ok].groupby("stimulus_id")["model"].nunique()
    return sorted(counts.index[counts == len(set(models))])


# --------------------------------------------------------------------------- correlation


def _midranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of x in the sample that repeats x_i weights[b, i] times (per row b).

    Tied values share the mean of the ranks they occupy (scipy's "average" method), so a
    row's Pearson correlation of mid-ranks is Spearman's correlation of its expanded sample.
    """
    values, inverse = np.unique(x, return_inverse=True)
    onehot = np.zeros((x.size, values.size))
    onehot[np.arange(x.size), inverse] = 1.0
    per_value = weights @ onehot  # copies of each distinct value
    rank = np.cumsum(per_value, axis=1) - (per_value - 1) / 2
    return rank[:, inverse]


def weighted_spearman(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman's correlation of each row's expanded sample (row b repeats pair i w[b, i]
    times); NaN where either side has no spread."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    rx, ry = _midranks(np.asarray(x, float), w), _midranks(np.asarray(y, float), w)
    total = w.sum(axis=1, keepdims=True)
    dx = rx - (w * rx).sum(axis=1, keepdims=True) / total
    dy = ry - (w * ry).sum(axis=1, keepdims=True) / total
    cov = (w * dx * dy).sum(axis=1)
    var = (w * dx**2).sum(axis=1) * (w * dy**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 1e-12, cov / np.sqrt(var), np.nan)


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's correlation with its cluster-bootstrap interval (NaN with too few units)."""

    spearman: float
    ci_low: float
    ci_high: float
    n: int
    n_units: int


def rank_correlation(
    x: Sequence[float],
    y: Sequence[float],
    units: Sequence[object] | None = None,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | Sequence[int] = 0,
    min_units: int = MIN_UNITS,
) -> RankCorrelation:
    """Spearman's correlation of x and y; percentile interval from resampling whole units.

    `units` labels each pair's resampling unit (None: every pair its own). Replicates where
    x or y has no spread are left out of the interval. Fewer than `min_units` units give
    the estimate without an interval.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    labels = np.arange(x.size) if units is None else np.asarray(list(units), dtype=object)
    x, y, labels = x[ok], y[ok], labels[ok]
    n_units = len(pd.unique(pd.Series(labels, dtype=object)))
    if x.size < 3:
        return RankCorrelation(float("nan"), float("nan"), float("nan"), int(x.size), n_units)
    estimate = float(weighted_spearman(x, y, np.ones(x.size))[0])
    lo = hi = float("nan")
    if n_units >= min_units:
        seeds = [seed] if isinstance(seed, int) else list(seed)
        boot = weighted_spearman(x, y, _unit_weights(labels, n_boot, seeds))
        lo, hi = _percentile(boot, ci)
    return RankCorrelation(estimate, lo, hi, int(x.size), n_units)


def circularity_table(
    jacobian: pd.DataFrame,
    signature: pd.DataFrame,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    units: pd.Series | None = None,
    min_units: int = MIN_UNITS,
) -> pd.DataFrame:
    """Spearman's correlation of measured ρ with the spectral signature, clip by clip.

    Predictors: the clip's mean log ρ over layers and steps ("mean") and, per layer j, its
    mean log ρ_j over steps ("layer j"). Targets: `TARGETS`, the clip's layer-mean signature
    (`clip_signature`). Clip sets: all clips of the model, and the stressed clips alone.
    `units`: as in `gain_alignment_table` (clips made from one source are drawn together).
    One row per model × clips × predictor × target, with `RankCorrelation`'s fields and
    `expected` (the sign the theory predicts).
    """
    per_clip = clip_means(jacobian).assign(predictor="mean")
    per_layer = clip_means(jacobian, per_layer=True)
    per_layer["predictor"] = "layer " + per_layer["layer"].astype(int).astype(str)
    rho = pd.concat([per_clip, per_layer], ignore_index=True)
    joined = rho.merge(
        signature[["model", "stimulus_id", *TARGETS]], on=["model", "stimulus_id"], how="inner"
    )
    joined["unit"] = joined["stimulus_id"].map(_units_of(jacobian, units))
    joined["group"] = joined["family"].map(clip_group)
    rows = []
    for (model, predictor), cell in joined.groupby(["model", "predictor"], sort=True):
        for clips in ("all", "stressed"):
            sub = cell if clips == "all" else cell[cell["group"] == "stressed"]
            for target, sign in TARGETS.items():
                key = cell_seed(seed, model, clips, predictor, target)
                corr = rank_correlation(
                    sub["log_rho"],
                    sub[target],
                    sub["unit"],
                    n_boot=n_boot,
                    ci=ci,
                    seed=key,
                    min_units=min_units,
                )
                rows.append(
                    {"model": model, "clips": clips, "predictor": predictor, "target": target}
                    | asdict(corr)
                    | {"expected": sign}
                )
    return pd.DataFrame(rows)


def format_estimate(
    estimate: float, lo: float, hi: float, *, sign: bool = False, missing: str = " (no interval)"
) -> str:
    """ "0.19 [0.18, 0.20]" (`crossmodel.format_interval`), or "0.19" + `missing` without one."""
    from wspec.crossmodel import format_interval

    if not np.isfinite(estimate) or (np.isfinite(lo) and np.isfinite(hi)):
        return format_interval(estimate, lo, hi, sign=sign)
    return format_number(estimate, sign=sign) + missing


def correlation_reading(
    ci_low: float, ci_high: float, expected: int, predictor: str, what: str
) -> str:
    """One clause on a rank correlation's interval against the sign the theory predicts
    (`expected`, ±1): the one rule for every "does measured X predict Y" in the book."""
    if not np.isfinite(ci_low):
        return f"too few independent units to say whether {predictor} predicts {what}"
    if ci_low > 0 or ci_high < 0:
        agrees = (1 if ci_low > 0 else -1) == expected
        direction = "as the theory predicts" if agrees else "against the theory's direction"
        return f"{predictor} predicts {what} ({direction}: the interval excludes 0)"
    return f"the interval covers 0: {predictor} does not detectably predict {what} here"


def reading(row: pd.Series | dict) -> str:
    """One clause on a `circularity_table` row: does ρ predict the signature, and how?"""
    r = dict(row)
    what = {"d_n_eff_pct": "the N_eff drop", "d_alpha": "the α rise"}[r["target"]]
    return correlation_reading(r["ci_low"], r["ci_high"], r["expected"], "measured ρ", what)


def correlation_sentence(table: pd.DataFrame, model: str, clips: str = "all") -> str:
    """The mean-ρ rows of one model in `circularity_table` as one sentence for the prose."""
    rows = table[
        (table["model"] == model) & (table["predictor"] == "mean") & (table["clips"] == clips)
    ]
    if rows.empty:
        return f"`{model}`: no measured clip with a defined signature"
    labels = {"d_n_eff_pct": "ΔN_eff", "d_alpha": "Δα"}
    first = rows.iloc[0]
    head = f"`{model}` ({first['n']} clips, {first['n_units']} units): "
    if not np.isfinite(rows["spearman"]).any():
        return head + "too few clips for a rank correlation"
    if not np.isfinite(rows["ci_low"]).any():
        values = ", ".join(
            f"Spearman(ρ̄, {labels[r['target']]}) = "
            + format_estimate(r["spearman"], np.nan, np.nan, sign=True, missing="")
            for _, r in rows.iterrows()
        )
        return (
            f"{head}{values}, but with fewer than {MIN_UNITS} independent units there is no "
            "interval, so these clips cannot say whether measured ρ predicts the signature"
        )
    parts = [
        f"Spearman(ρ̄, {labels[r['target']]}) = "
        f"{format_estimate(r['spearman'], r['ci_low'], r['ci_high'], sign=True)}: {reading(r)}"
        for _, r in rows.iterrows()
    ]
    return head + "; ".join(parts)


def chance_reading(lo: float, hi: float, null: float = 1.0) -> str:
    """Where an alignment ratio's interval lies against chance (ratio 1: a random direction)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    if lo > null:
        return "above chance"
    if hi < null:
        return "below chance"
    return "indistinguishable from chance"
