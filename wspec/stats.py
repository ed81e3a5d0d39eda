"""Clean-vs-stressed deltas with bootstrap CIs, permutation tests and spectral KL tests.

Everything here is a pure function over arrays or the tidy results table (one row per model ×
stimulus × layer × component × control × metric × K). What is computed:

* **Deltas** (the paper's Table 1 quantities). ΔN_eff (%) = 100·(mean_stressed − mean_clean) /
  mean_clean; Δlog10 K_f and Δα are differences of means (``DELTA_KIND``).
* **Aggregation over layers**: per stimulus, the metric is first averaged over the layers of the
  component (a stimulus missing a layer or with a non-finite value in any layer is dropped), then
  the bootstrap resamples units (below). Per-layer cells use that layer's value directly.
* **Resampling units**: intervals and tests resample independent units, never single clips
  of a unit. The unit is the results' ``cluster`` column (`wspec.units.resampling_unit`: a
  source sentence with everything made from it, a non-speech generator kind, a syllable, a
  phrase); a table without it gets one cluster per stimulus. Clips that are the same model
  input (equal ``input_key``) count once per group, and a stressed clip that is a clean
  input to Whisper is not counted as stressed.
* **Pairing**: when every stressed stimulus has a ``source_id`` naming a clean stimulus in the
  same table (degraded or attacked speech), the design is paired and the bootstrap resamples
  the sources' clusters (a clean utterance with all stressed versions made from it), so the
  clean mean is weighted like the stressed one. Otherwise (e.g. non-speech stimuli) the
  bootstrap draws clusters with replacement within strata: clusters with clean clips only,
  with stressed clips only, and with both (kept whole, both sides together).
* **CIs**: percentile bootstrap (default) or BCa (bias-corrected and accelerated, jackknife over
  the resampling units), vectorised with multinomial resampling weights; seeded per cell from
  the cell's name, so adding a model never changes another cell's interval. Without cluster
  labels both use the very draws of ``scipy.stats.bootstrap`` from the same generator and give
  its intervals (checked in the tests).
* **Tests**: two-sided permutation test of the difference in means, whole units moved: a
  cluster's clips in one group are shuffled between groups as one block (sign flips of
  per-cluster differences when paired), p = (1 + #{|T*| ≥ |T|}) / (1 + n_perm); Holm or
  Benjamini–Hochberg across the cells of a table. Effect size: Cohen's d (pooled SD)
  unpaired, d_z (mean/SD of per-stimulus differences) paired.
* **KL divergence** between eigenvalue distributions with a permutation null (see
  ``spectral_kl_test``), the test the paper's authors promised in their rebuttal.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from wspec.errors import WspecError
from wspec.paper import COMPONENT_LABELS, METRIC_LABELS
from wspec.seqlen import null_control

#: ``layer`` value of a cell aggregated over layers (mean over layers per stimulus).
LAYER_MEAN = -1
#: Speech with a reference transcript: the synthesized sentences and a user's own recordings.
CLEAN_FAMILIES: tuple[str, ...] = ("clean", "user")
#: Families that are controls, not stress: excluded from the default stressed group.
CONTROL_FAMILIES: tuple[str, ...] = ("gauss_control",)
#: The paper-protocol families (see wspec.protocol): long utterances, their "Hell" versions
#: and the short clean utterances that control for forced rows.
PROTOCOL_FAMILIES: tuple[str, ...] = ("long_clean", "hell", "short_clean")
TABLE1_COMPONENTS: tuple[str, ...] = tuple(COMPONENT_LABELS)
TABLE1_METRICS: tuple[str, ...] = tuple(METRIC_LABELS)
#: "pct": 100·(stressed − clean)/clean; "diff": stressed − clean (both on group means).
DELTA_KIND: dict[str, str] = {"n_eff": "pct", "participation_ratio": "pct", "stable_rank": "pct"}

RESULT_COLUMNS = (
    "model",
    "stimulus_id",
    "family",
    "source_id",
    "layer",
    "component",
    "control",
    "metric",
    "K",
    "value",
)
#: Optional columns written by `wspec.pipeline` (from `wspec.units`): the resampling unit of
#: each stimulus and the hash of the 30 s window Whisper hears.
UNIT_COLUMNS: tuple[str, ...] = ("cluster", "input_key")


@dataclass(frozen=True)
class Delta:
    """A delta between two groups with its bootstrap interval.

    n_base / n_other count values (paired: n_base counts the clean sources used);
    n_clusters_base / n_clusters_other count the independent units the bootstrap drew.
    """

    estimate: float
    ci_low: float
    ci_high: float
    mean_base: float
    mean_other: float
    n_base: int
    n_other: int
    paired: bool
    kind: str
    ci_level: float
    n_boot: int
    method: str
    n_clusters_base: int
    n_clusters_other: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PermutationResult:
    """Two-sided permutation test of mean(other) − mean(base)."""

    statistic: float
    p_value: float
    n_perm: int
    paired: bool


def delta_kind(metric: str) -> str:
    """ "pct" for rank-like metrics (relative change), "diff" for the others."""
    return DELTA_KIND.get(metric, "diff")


def _stat(mean_base: np.ndarray | float, mean_other: np.ndarray | float, kind: str):
    if kind == "pct":
        return 100.0 * (mean_other - mean_base) / mean_base
    if kind == "diff":
        return mean_other - mean_base
    raise WspecError(f"unknown delta kind {kind!r}; use 'pct' or 'diff'")


def _as_finite(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size < 2:
        raise WspecError(f"{what} has {arr.size} value(s); a bootstrap needs at least 2")
    if not np.all(np.isfinite(arr)):
        raise WspecError(f"{what} contains non-finite values; drop them before comparing")
    return arr


#: Cluster labels, one per value (any hashable); None = every value is its own cluster.
Labels = Sequence[object] | np.ndarray | None


@dataclass(frozen=True)
class _Units:
    """A comparison reduced to its resampling units.

    Per unit: the sum and count of its base values and of its other values. The units of a
    stratum are drawn with replacement together, strata independently, so every resample has
    as many units of each kind as the data and neither group can vanish from it.
    """

    base_sum: np.ndarray
    base_n: np.ndarray
    other_sum: np.ndarray
    other_n: np.ndarray
    strata: tuple[np.ndarray, ...]

    @property
    def n_base_units(self) -> int:
        return int(np.count_nonzero(self.base_n))

    @property
    def n_other_units(self) -> int:
        return int(np.count_nonzero(self.other_n))


def _unit_of(
    base_clusters: Labels, other_clusters: Labels, n_base: int, n_other: int
) -> np.ndarray:
    """Unit index of every value (base values first), numbered by first appearance."""
    labels: list[object] = []
    for side, clusters, n in (("base", base_clusters, n_base), ("other", other_clusters, n_other)):
        if clusters is None:
            labels += [(None, side, i) for i in range(n)]  # a label no cluster has: own unit
            continue
        arr = list(clusters)
        if len(arr) != n:
            raise WspecError(f"{side} group has {len(arr)} cluster labels for {n} values")
        labels += arr
    return pd.factorize(pd.Series(labels, dtype=object))[0]


def cluster_units(
    unit: np.ndarray, in_second: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Counts per unit in the first and second group, and the strata for resampling them.

    `unit` is an integer unit index per value (0..U−1), `in_second` a boolean per value.
    Strata: units with values in the first group only, in the second only, and in both
    (each stratum's units in index order). Resampling units within strata keeps every group
    present in every resample; units on both sides are drawn whole, both sides together.
    """
    n = int(unit.max()) + 1
    first_n = np.bincount(unit[~in_second], minlength=n).astype(np.float64)
    second_n = np.bincount(unit[in_second], minlength=n).astype(np.float64)
    pattern = (first_n > 0) + 2 * (second_n > 0)
    strata = tuple(np.flatnonzero(pattern == p) for p in (1, 2, 3) if np.any(pattern == p))
    return first_n, second_n, strata


def _unpaired_units(
    base: np.ndarray, other: np.ndarray, base_clusters: Labels, other_clusters: Labels
) -> _Units:
    """Units of the unpaired design: a cluster is drawn with all its values, on both sides.

    Strata as in `cluster_units`. Without labels every value is its own unit and the strata
    are the two groups, so this is the classic two-sample bootstrap (with the same random
    draws as resampling each group on its own). A cluster on both sides (a sentence and its
    noisy versions, compared unpaired because other stressed clips have no source) keeps its
    two sides together, so their covariance is kept too.
    """
    unit = _unit_of(base_clusters, other_clusters, base.size, other.size)
    base_n, other_n, strata = cluster_units(unit, np.arange(unit.size) >= base.size)
    ib, io = unit[: base.size], unit[base.size :]
    return _Units(
        np.bincount(ib, weights=base, minlength=base_n.size),
        base_n,
        np.bincount(io, weights=other, minlength=base_n.size),
        other_n,
        strata,
    )


def _paired_units(
    base: np.ndarray, other: np.ndarray, pairs: Sequence[int] | np.ndarray, base_clusters: Labels
) -> _Units:
    """Units of the paired design: the clusters of the clean sources.

    A source counts once per stressed version made from it (its base sum is value × count),
    so the clean mean is weighted like the stressed one. Sources sharing a cluster label form
    one unit; without labels each source is its own unit.
    """
    pairs = np.asarray(pairs, dtype=np.int64).ravel()
    if pairs.shape != other.shape:
        raise WspecError("pairs must give one base index per 'other' value")
    if pairs.min() < 0 or pairs.max() >= base.size:
        raise WspecError("pairs index outside the base values")
    sources, inverse = np.unique(pairs, return_inverse=True)
    count = np.bincount(inverse).astype(np.float64)
    other_sum = np.bincount(inverse, weights=other)
    source_unit = _unit_of(base_clusters, None, base.size, 0)[sources]
    unit = pd.factorize(source_unit)[0]
    n = int(unit.max()) + 1
    base_n = np.bincount(unit, weights=count, minlength=n)
    return _Units(
        np.bincount(unit, weights=base[sources] * count, minlength=n),
        base_n,
        np.bincount(unit, weights=other_sum, minlength=n),
        base_n,
        (np.arange(n),),
    )


def _design(
    base: np.ndarray,
    other: np.ndarray,
    pairs: Sequence[int] | np.ndarray | None,
    base_clusters: Labels,
    other_clusters: Labels,
) -> _Units:
    units = (
        _unpaired_units(base, other, base_clusters, other_clusters)
        if pairs is None
        else _paired_units(base, other, pairs, base_clusters)
    )
    if units.n_base_units < 2 or units.n_other_units < 2:
        raise WspecError(
            f"{units.n_base_units} base and {units.n_other_units} other resampling unit(s); "
            "an interval needs at least 2 independent units on each side"
        )
    return units


def _interval(
    boot: np.ndarray,
    estimate: float,
    jack: Sequence[np.ndarray] | None,
    ci: float,
    method: str,
) -> tuple[float, float]:
    """Percentile or BCa interval from bootstrap values.

    BCa's acceleration uses the leave-one-unit-out values of each stratum (`jack`), centred
    within their stratum: the multi-sample formula of Efron & Tibshirani (1993, §14.3), which
    is also scipy.stats.bootstrap's, so both give the same interval on the same draws.
    """
    alpha = (1.0 - ci) / 2.0
    quantiles = np.array([alpha, 1.0 - alpha])
    if method == "bca":
        if jack is None:
            raise WspecError("BCa needs jackknife values")
        # Bias correction: share of bootstrap values below the estimate (ties count half).
        below = np.mean(boot < estimate) + 0.5 * np.mean(boot == estimate)
        infl = [(j.size - 1) * (j.mean() - j) for j in jack]
        num = sum(np.sum(u**3) / u.size**3 for u in infl)
        den = sum(np.sum(u**2) / u.size**2 for u in infl)
        if 0.0 < below < 1.0 and den > 0:
            z0 = stats.norm.ppf(below)
            accel = num / (6.0 * den**1.5)
            z = stats.norm.ppf(quantiles)
            quantiles = stats.norm.cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
        # Degenerate bootstrap (all values equal or on one side): fall back to percentiles.
    elif method != "percentile":
        raise WspecError(f"unknown CI method {method!r}; use 'percentile' or 'bca'")
    lo, hi = np.quantile(boot, quantiles)
    return float(lo), float(hi)


def resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """Bootstrap resampling counts of n units, one row per replicate (each row sums to n).

    Drawn as n indices with replacement per replicate (the very draws scipy.stats.bootstrap
    makes from the same generator) and counted with one bincount (the same distribution as a
    multinomial, ~4× faster than numpy's multinomial sampler).
    """
    idx = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def stratified_counts(
    rng: np.random.Generator, strata: Sequence[np.ndarray], n_units: int, n_boot: int
) -> np.ndarray:
    """Resampling counts of every unit (n_boot × n_units): each stratum drawn on its own."""
    w = np.zeros((n_boot, n_units))
    for members in strata:
        w[:, members] = resample_counts(rng, members.size, n_boot)
    return w


def _jackknife(units: _Units, kind: str) -> list[np.ndarray]:
    """Leave-one-unit-out estimates, one array per stratum (for BCa's acceleration)."""
    loo_base = (units.base_sum.sum() - units.base_sum) / (units.base_n.sum() - units.base_n)
    loo_other = (units.other_sum.sum() - units.other_sum) / (units.other_n.sum() - units.other_n)
    loo = _stat(loo_base, loo_other, kind)
    return [loo[members] for members in units.strata]


def bootstrap_delta(
    base: Sequence[float] | np.ndarray,
    other: Sequence[float] | np.ndarray,
    *,
    pairs: Sequence[int] | np.ndarray | None = None,
    base_clusters: Labels = None,
    other_clusters: Labels = None,
    kind: str = "diff",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | Sequence[int] = 0,
    method: str = "percentile",
) -> Delta:
    """Delta of group means (`kind` "pct" or "diff") of `other` vs `base` with a bootstrap CI.

    The bootstrap draws independent units, never single clips of a unit: values sharing a
    cluster label (`base_clusters`, `other_clusters`: one label per value; None = each value
    its own cluster) are drawn together, with all their values.

    * Paired (`pairs[i]` = index in `base` of the clean source of `other[i]`): the units are
      the sources' clusters; each stressed value is compared with its own source, and the
      clean mean is weighted by each source's number of stressed versions. `other_clusters`
      is not used (a stressed clip belongs to its source's unit).
    * Unpaired: clusters are drawn with replacement within strata (clusters with base values
      only, other only, both), see `_unpaired_units`.

    Raises if either side has fewer than 2 units: no interval can come from one unit.
    """
    base = _as_finite(base, "base group")
    other = _as_finite(other, "other group")
    if not 0.0 < ci < 1.0:
        raise WspecError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 100:
        raise WspecError(f"n_boot={n_boot} is too small for a CI; use at least 100")
    units = _design(base, other, pairs, base_clusters, other_clusters)
    w = stratified_counts(np.random.default_rng(seed), units.strata, units.base_n.size, n_boot)
    boot = _stat(
        w @ units.base_sum / (w @ units.base_n), w @ units.other_sum / (w @ units.other_n), kind
    )
    mean_base = float(units.base_sum.sum() / units.base_n.sum())
    mean_other = float(units.other_sum.sum() / units.other_n.sum())
    estimate = float(_stat(mean_base, mean_other, kind))
    lo, hi = _interval(np.asarray(boot), estimate, _jackknife(units, kind), ci, method)
    n_base = np.unique(pairs).size if pairs is not None else base.size
    return Delta(
        estimate=estimate,
        ci_low=lo,
        ci_high=hi,
        mean_base=mean_base,
        mean_other=mean_other,
        n_base=int(n_base),
        n_other=int(other.size),
        paired=pairs is not None,
        kind=kind,
        ci_level=ci,
        n_boot=n_boot,
        method=method,
        n_clusters_base=units.n_base_units,
        n_clusters_other=units.n_other_units,
    )


def _abs_p(t_obs: float, null: np.ndarray) -> float:
    """p = (1 + #{|T*| ≥ |T|}) / (1 + n_perm); permuted values equal to T up to rounding
    count as extreme."""
    tol = 1e-12 * max(1.0, abs(t_obs))
    return float((1.0 + np.sum(np.abs(null) >= abs(t_obs) - tol)) / (1.0 + null.size))


def permutation_test(
    base: Sequence[float] | np.ndarray,
    other: Sequence[float] | np.ndarray,
    *,
    pairs: Sequence[int] | np.ndarray | None = None,
    base_clusters: Labels = None,
    other_clusters: Labels = None,
    n_perm: int = 5000,
    seed: int | Sequence[int] = 0,
) -> PermutationResult:
    """Two-sided permutation test of H0 "same distribution" with T = mean(other) − mean(base).

    Whole units move, never single clips of a unit:

    * Paired (`pairs` as in `bootstrap_delta`): the sign of each unit's summed differences
      (its stressed values minus their sources' values) is flipped.
    * Unpaired: each cluster's part on one side (all its values in that group) is one unit,
      and these parts are shuffled between the groups, keeping each group's number of parts.
      With clusters nested in groups this permutes cluster labels between groups; a cluster
      on both sides has its two parts moved independently, which ignores their (typically
      positive) covariance and so errs towards larger p. Without labels: the classic test.
    """
    base = _as_finite(base, "base group")
    other = _as_finite(other, "other group")
    units = _design(base, other, pairs, base_clusters, other_clusters)
    rng = np.random.default_rng(seed)
    chunk = 1000  # bounds memory: chunk × units at a time
    null = []
    if pairs is not None:
        diff = units.other_sum - units.base_sum
        total = units.other_n.sum()
        t_obs = diff.sum() / total
        for start in range(0, n_perm, chunk):
            size = min(chunk, n_perm - start)
            signs = rng.choice(np.array([-1.0, 1.0]), size=(size, diff.size))
            null.append(signs @ diff / total)
    else:
        has_b, has_o = units.base_n > 0, units.other_n > 0
        sums = np.concatenate([units.base_sum[has_b], units.other_sum[has_o]])
        counts = np.concatenate([units.base_n[has_b], units.other_n[has_o]])
        k = int(has_o.sum())  # parts in the other group
        t_obs = units.other_sum.sum() / units.other_n.sum() - units.base_sum.sum() / (
            units.base_n.sum()
        )
        for start in range(0, n_perm, chunk):
            size = min(chunk, n_perm - start)
            perm = rng.permuted(np.tile(np.arange(sums.size), (size, 1)), axis=1)
            s_other, n_other = sums[perm[:, :k]].sum(axis=1), counts[perm[:, :k]].sum(axis=1)
            null.append(s_other / n_other - (sums.sum() - s_other) / (counts.sum() - n_other))
    p = _abs_p(float(t_obs), np.concatenate(null))
    return PermutationResult(float(t_obs), p, int(n_perm), pairs is not None)


def effect_size(
    base: Sequence[float] | np.ndarray,
    other: Sequence[float] | np.ndarray,
    *,
    pairs: Sequence[int] | np.ndarray | None = None,
) -> float:
    """Cohen's d = (mean_other − mean_base)/pooled SD, or paired d_z = mean(diff)/SD(diff)."""
    base = _as_finite(base, "base group")
    other = _as_finite(other, "other group")
    if pairs is not None:
        diff = other - base[np.asarray(pairs, dtype=np.int64)]
        sd = diff.std(ddof=1)
        return float(diff.mean() / sd) if sd > 0 else float("nan")
    pooled = ((base.size - 1) * base.var(ddof=1) + (other.size - 1) * other.var(ddof=1)) / (
        base.size + other.size - 2
    )
    return float((other.mean() - base.mean()) / np.sqrt(pooled)) if pooled > 0 else float("nan")


def adjust_pvalues(p_values: Sequence[float] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Holm (family-wise error) or Benjamini–Hochberg ("bh", false discovery rate) adjustment.

    NaN p-values are left NaN and do not count towards the number of tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0 or method == "none":
        return np.where(ok, p, np.nan)
    vals = p[ok]
    order = np.argsort(vals, kind="stable")
    ranked = vals[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "bh":
        adj = np.minimum.accumulate(m / np.arange(m, 0, -1) * ranked[::-1])[::-1]
    else:
        raise WspecError(f"unknown correction {method!r}; use 'holm', 'bh' or 'none'")
    result = np.empty(m)
    result[order] = np.minimum(adj, 1.0)
    out[ok] = result
    return out


# --------------------------------------------------------------------------- tables


def check_results(results: pd.DataFrame) -> None:
    """Raise a WspecError naming the missing columns if `results` is not a results table."""
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise WspecError(
            f"results table lacks columns {missing}; pass the tidy table written by `wspec run`"
        )


#: The pseudo-control "each metric under its own null control" (`seqlen.null_control`): the
#: whole natural decode, normalised by Gaussian rows of its shape. It needs no common length,
#: so it is the length-robust reading of comparisons whose clips decode to fewer than T0 rows.
NULL_CONTROL = "null"


def select_results(results: pd.DataFrame, *, control: str, K: int) -> pd.DataFrame:
    """Rows of one sequence-length control and K, after checking both exist in `results`.

    `control` = `NULL_CONTROL` selects each metric's own null control (null_ratio or
    null_diff), so one call reads every metric length-robustly.
    """
    check_results(results)
    controls = sorted(results["control"].astype(str).unique())
    if control == NULL_CONTROL:
        wanted = results["metric"].astype(str).map(null_control)
        if not wanted.isin(controls).any():
            raise WspecError(f"no null-normalised rows in the results; available: {controls}")
        sub = results[results["control"].astype(str) == wanted]
    elif control not in controls:
        raise WspecError(f"control {control!r} not in the results; available: {controls}")
    else:
        sub = results[results["control"] == control]
    ks = sorted(int(k) for k in sub["K"].unique())
    if int(K) not in ks:
        raise WspecError(f"K={K} not in the results for control {control!r}; available: {ks}")
    return sub[sub["K"] == int(K)]


def unit_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """`cluster` and `input_key` per stimulus_id of results rows (index: stimulus_id).

    Both come from `wspec.units` via the results table; a table written before they existed
    (or a row without them) gets its stimulus id for both, i.e. one cluster per stimulus and
    no two stimuli counted as the same input (the design such a table was analysed with).
    """
    first = rows.drop_duplicates("stimulus_id").set_index("stimulus_id")
    own = first.index.astype(str).to_series(index=first.index)
    out = pd.DataFrame(index=first.index)
    for column in UNIT_COLUMNS:
        given = first[column] if column in first.columns else pd.Series(np.nan, index=first.index)
        known = given.notna() & given.astype(str).ne("")
        out[column] = given.astype(str).where(known, own)
    return out


def stimulus_values(cell: pd.DataFrame, layer: int = LAYER_MEAN) -> pd.DataFrame:
    """One value per stimulus of one (model, component, metric) cell: a layer or the layer mean.

    Returns columns stimulus_id, family, source_id, cluster, input_key (`unit_columns`),
    value. For the layer mean, stimuli with a missing or non-finite value in any layer of the
    cell are dropped (mixing layer sets would compare different averages).
    """
    first = cell.drop_duplicates("stimulus_id").set_index("stimulus_id")
    meta = first[["family", "source_id"]].join(unit_columns(cell))
    if layer != LAYER_MEAN:
        sub = cell[cell["layer"] == layer]
        vals = sub.groupby("stimulus_id")["value"].mean()
    else:
        wide = cell.pivot_table(
            index="stimulus_id", columns="layer", values="value", aggfunc="mean"
        )
        wide = wide.reindex(columns=sorted(cell["layer"].unique()))
        vals = wide[np.isfinite(wide).all(axis=1)].mean(axis=1)
    vals = vals[np.isfinite(vals)]
    out = meta.loc[vals.index].assign(value=vals.to_numpy()).reset_index()
    out["source_id"] = out["source_id"].fillna("").astype(str)
    return out


def _n_units(labels: np.ndarray | None, n: int) -> int:
    return n if labels is None else len(pd.unique(np.asarray(labels, dtype=object)))


@dataclass(frozen=True)
class Groups:
    """Base and other values of one comparison, with the pairing and cluster labels (if any).

    Cluster labels are per value (None = each value its own cluster); see `bootstrap_delta`.
    """

    base: np.ndarray
    other: np.ndarray
    pairs: np.ndarray | None
    base_clusters: np.ndarray | None = None
    other_clusters: np.ndarray | None = None

    @property
    def n_clusters(self) -> tuple[int, int]:
        """Independent units on the clean and the stressed side.

        Paired designs resample the sources' clusters, so five attacks on one sentence are
        one unit, on both sides; unpaired designs count each side's distinct clusters.
        """
        if self.pairs is None:
            return (
                _n_units(self.base_clusters, self.base.size),
                _n_units(self.other_clusters, self.other.size),
            )
        sources = np.unique(self.pairs)
        labels = None if self.base_clusters is None else self.base_clusters[sources]
        n = _n_units(labels, sources.size)
        return (n, n)


PAIR_MODES: tuple[str, ...] = ("auto", "always", "never", "drop")


def _make_groups(clean: pd.DataFrame, stressed: pd.DataFrame, pair: str) -> Groups:
    """`Groups` from two `stimulus_values` frames, counting each model input once.

    Within a group, stimuli with the same input_key are one input (digital silence of 1 s
    and of 31 s: Whisper sees the same zero-padded window) and the first (by stimulus id) is
    kept; a stressed stimulus whose input equals a clean one's is dropped (speech followed by
    silence inside the 30 s window *is* its clean source to Whisper), and a stressed clip
    made from a dropped clean duplicate is paired with the clean stimulus that was kept.
    """
    if pair not in PAIR_MODES:
        raise WspecError(f"unknown pair mode {pair!r}; use one of {list(PAIR_MODES)}")
    kept_id = clean.groupby("input_key", sort=False)["stimulus_id"].transform("first")
    alias = dict(zip(clean["stimulus_id"], kept_id, strict=True))
    clean = clean[clean["stimulus_id"].eq(kept_id)]
    stressed = stressed.drop_duplicates("input_key")
    stressed = stressed[~stressed["input_key"].isin(clean["input_key"])]
    stressed = stressed.assign(source_id=[alias.get(s, s) for s in stressed["source_id"]])
    position = pd.Series(np.arange(len(clean)), index=clean["stimulus_id"].to_numpy())
    if pair == "drop":
        stressed = stressed[stressed["source_id"].isin(position.index)]
    pairable = bool(len(stressed)) and stressed["source_id"].isin(position.index).all()
    if pair == "always" and not pairable:
        raise WspecError("pair='always' but some stressed stimuli have no clean source here")
    pairs = None
    if pairable and pair != "never":
        pairs = position.loc[stressed["source_id"].to_numpy()].to_numpy()
    return Groups(
        clean["value"].to_numpy(float),
        stressed["value"].to_numpy(float),
        pairs,
        clean["cluster"].to_numpy(object),
        stressed["cluster"].to_numpy(object),
    )


def split_groups(
    values: pd.DataFrame,
    *,
    clean_families: Sequence[str] = CLEAN_FAMILIES,
    stress_families: Sequence[str],
    pair: str = "auto",
) -> Groups:
    """Clean (base) and stressed (other) values from `stimulus_values` output, paired if possible.

    pair="auto" pairs when every stressed stimulus's source_id is a clean stimulus present here;
    "never" forces the unpaired design; "always" raises if pairing is impossible; "drop" pairs
    and leaves out the stressed stimuli whose source has no value here (a source too short
    for the control), so one missing source cannot turn a paired design into an unpaired one.
    Identical model inputs are counted once (`_make_groups`); each value carries its cluster.
    """
    clean = values[values["family"].isin(list(clean_families))]
    stressed = values[values["family"].isin(list(stress_families))]
    return _make_groups(clean, stressed, pair)


def default_stress_families(results: pd.DataFrame) -> list[str]:
    """Every family present except the clean, control and paper-protocol families (the
    long utterances, their "Hell" versions and the short-utterance control are compared
    only in `wspec.protocol`)."""
    skip = set(CLEAN_FAMILIES) | set(CONTROL_FAMILIES) | set(PROTOCOL_FAMILIES)
    return sorted(f for f in results["family"].astype(str).unique() if f not in skip)


def cell_seed(seed: int, *key: object) -> list[int]:
    """A seed sequence for one table cell: the user seed plus a CRC of the cell's name."""
    return [int(seed), zlib.crc32("|".join(map(str, key)).encode())]


def compare(
    groups: Groups,
    *,
    kind: str,
    n_boot: int = 2000,
    n_perm: int = 2000,
    ci: float = 0.95,
    seed: int | Sequence[int] = 0,
    method: str = "percentile",
) -> dict[str, object]:
    """Delta + CI, permutation p-value and effect size of one comparison, as a flat record.

    Bootstrap and permutation both resample the groups' clusters (see `bootstrap_delta`).
    """
    design = {
        "pairs": groups.pairs,
        "base_clusters": groups.base_clusters,
        "other_clusters": groups.other_clusters,
    }
    delta = bootstrap_delta(
        groups.base,
        groups.other,
        kind=kind,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
        method=method,
        **design,
    )
    perm = permutation_test(groups.base, groups.other, n_perm=n_perm, seed=seed, **design)
    return {
        "kind": kind,
        "estimate": delta.estimate,
        "ci_low": delta.ci_low,
        "ci_high": delta.ci_high,
        "mean_clean": delta.mean_base,
        "mean_stressed": delta.mean_other,
        "n_clean": delta.n_base,
        "n_stressed": delta.n_other,
        "n_clusters_clean": delta.n_clusters_base,
        "n_clusters_stressed": delta.n_clusters_other,
        "paired": delta.paired,
        "effect_size": effect_size(groups.base, groups.other, pairs=groups.pairs),
        "p_value": perm.p_value,
    }


def delta_table(
    results: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    components: Sequence[str] = TABLE1_COMPONENTS,
    metrics: Sequence[str] = TABLE1_METRICS,
    K: int = 10,
    control: str = "matched_T",
    stress_families: Sequence[str] | None = None,
    clean_families: Sequence[str] = CLEAN_FAMILIES,
    by_family: bool = False,
    by_layer: bool = False,
    pair: str = "auto",
    n_boot: int = 2000,
    n_perm: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
    correction: str = "holm",
) -> pd.DataFrame:
    """Clean-vs-stressed deltas for every model × component × metric (× family) (× layer).

    One row per cell: model, component, metric, family ("+"-joined when pooled), layer
    (``LAYER_MEAN`` = mean over layers per stimulus), kind, estimate, ci_low, ci_high,
    mean_clean, mean_stressed, n_clean, n_stressed, n_clusters_clean, n_clusters_stressed,
    paired, effect_size, p_value and p_adj (`correction` applied across all cells of the
    returned table). The resampling unit is the results' ``cluster`` column (one cluster per
    stimulus if the table has none), and identical model inputs (``input_key``) count once
    (`split_groups`). Cells with fewer than two clusters on either side are omitted: no
    interval can be drawn from one unit.
    """
    sub = select_results(results, control=control, K=K)
    sub = sub[sub["component"].isin(list(components)) & sub["metric"].isin(list(metrics))]
    if models is not None:
        unknown = sorted(set(models) - set(sub["model"].unique()))
        if unknown:
            have = sorted(results["model"].unique())
            raise WspecError(f"models {unknown} not in the results; available: {have}")
        sub = sub[sub["model"].isin(list(models))]
    families = list(stress_families) if stress_families else default_stress_families(sub)
    if not families:
        raise WspecError("no stressed families in the results; run the stress set first")
    family_groups = [[f] for f in families] if by_family else [families]
    rows: list[dict[str, object]] = []
    for (model, component, metric), cell in sub.groupby(["model", "component", "metric"]):
        layers = [LAYER_MEAN] + (sorted(int(x) for x in cell["layer"].unique()) if by_layer else [])
        for layer in layers:
            values = stimulus_values(cell, layer)
            for fams in family_groups:
                groups = split_groups(
                    values, clean_families=clean_families, stress_families=fams, pair=pair
                )
                if min(groups.n_clusters) < 2:
                    continue
                label = "+".join(fams)
                record = compare(
                    groups,
                    kind=delta_kind(str(metric)),
                    n_boot=n_boot,
                    n_perm=n_perm,
                    ci=ci,
                    seed=cell_seed(seed, model, component, metric, layer, label),
                    method=method,
                )
                rows.append(
                    {"model": model, "component": component, "metric": metric}
                    | {"family": label, "layer": layer}
                    | record
                )
    columns = ["model", "component", "metric", "family", "layer", "kind", "estimate", "ci_low"]
    columns += ["ci_high", "mean_clean", "mean_stressed", "n_clean", "n_stressed"]
    columns += ["n_clusters_clean", "n_clusters_stressed", "paired"]
    columns += ["effect_size", "p_value", "p_adj"]
    table = pd.DataFrame(rows, columns=columns)
    table["p_adj"] = adjust_pvalues(table["p_value"].to_numpy(float), correction)
    return table


def baseline_comparison(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    model: str,
    component: str,
    metric: str = "n_eff",
    K: int = 10,
    control: str = "matched_T",
    stress_families: Sequence[str] | None = None,
    reference: pd.DataFrame | None = None,
    reference_model: str | None = None,
    label_column: str = "hallucinated",
    max_wer: float | None = None,
    n_boot: int = 2000,
    n_perm: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Healthy-baseline comparisons for the referee's comment 1 (is Regime II static?).

    "Healthy" = clean stimuli the model transcribed without hallucinating (and, if `max_wer`
    is given, with WER ≤ max_wer). Rows (layer mean, as in `delta_table`):

    * ``hallucinated vs healthy``: stressed stimuli the model hallucinated on vs healthy clean;
    * ``not hallucinated vs healthy``: stressed stimuli it survived vs healthy clean;
    * ``healthy vs reference`` (if `reference` results are given, e.g. an untrained
      ``random:`` model or another scale on the same stimuli): healthy clean of `model` vs the
      reference model's values on the same stimulus ids (paired by stimulus id). A large change
      here means the compression is already present in normal operation (static).

    Resampling units and identical inputs are handled as in `delta_table`: clusters are
    resampled, and a stressed clip that is a clean clip to Whisper (same input_key) is not
    counted as stressed. Comparisons with fewer than 2 clusters on a side get counts only.
    """
    sub = select_results(results, control=control, K=K)
    cell = sub[
        (sub["model"] == model) & (sub["component"] == component) & (sub["metric"] == metric)
    ]
    if cell.empty:
        raise WspecError(f"no {component}/{metric} rows for model {model!r} at K={K}, {control}")
    need = {"model", "stimulus_id", label_column}
    if not need <= set(labels.columns):
        raise WspecError(f"label table lacks {sorted(need - set(labels.columns))}")
    lab = labels[labels["model"] == model].set_index("stimulus_id")
    values = stimulus_values(cell)
    values = values[values["stimulus_id"].isin(lab.index)]
    flag = lab.loc[values["stimulus_id"], label_column].astype(bool).to_numpy()
    clean_mask = values["family"].isin(list(CLEAN_FAMILIES)).to_numpy()
    healthy_mask = clean_mask & ~flag
    if max_wer is not None and "wer" in lab.columns:
        wer = lab.loc[values["stimulus_id"], "wer"].to_numpy(float)
        healthy_mask &= np.nan_to_num(wer, nan=np.inf) <= max_wer
    families = list(stress_families) if stress_families else default_stress_families(cell)
    same_as_clean = values["input_key"].isin(values.loc[clean_mask, "input_key"]).to_numpy()
    stressed_mask = values["family"].isin(families).to_numpy() & ~same_as_clean
    healthy = values[healthy_mask].drop_duplicates("input_key")
    kind = delta_kind(metric)
    rows = [
        (name, _make_groups(healthy, values[mask], "auto"))
        for name, mask in (
            ("hallucinated vs healthy", stressed_mask & flag),
            ("not hallucinated vs healthy", stressed_mask & ~flag),
        )
    ]
    if reference is not None:
        ref_model = reference_model or str(reference["model"].iloc[0])
        ref_sub = select_results(reference, control=control, K=K)
        ref_cell = ref_sub[
            (ref_sub["model"] == ref_model)
            & (ref_sub["component"] == component)
            & (ref_sub["metric"] == metric)
        ]
        ref_vals = stimulus_values(ref_cell) if not ref_cell.empty else values.iloc[:0]
        ref_vals = ref_vals[ref_vals["stimulus_id"].isin(healthy["stimulus_id"])]
        position = pd.Series(np.arange(len(ref_vals)), index=ref_vals["stimulus_id"].to_numpy())
        other = healthy[healthy["stimulus_id"].isin(position.index)]
        pairs = position.loc[other["stimulus_id"].to_numpy()].to_numpy()
        groups = Groups(
            ref_vals["value"].to_numpy(float),
            other["value"].to_numpy(float),
            pairs,
            ref_vals["cluster"].to_numpy(object),
            other["cluster"].to_numpy(object),
        )
        rows.append((f"healthy vs reference ({ref_model})", groups))
    out = []
    for name, groups in rows:
        record: dict[str, object] = {"comparison": name, "model": model, "component": component}
        record["metric"] = metric
        if min(groups.n_clusters) >= 2:
            record |= compare(
                groups,
                kind=kind,
                n_boot=n_boot,
                n_perm=n_perm,
                ci=ci,
                seed=cell_seed(seed, model, component, metric, name),
            )
        else:
            record |= {"n_clean": int(groups.base.size), "n_stressed": int(groups.other.size)}
            record |= dict(
                zip(("n_clusters_clean", "n_clusters_stressed"), groups.n_clusters, strict=True)
            )
        out.append(record)
    frame = pd.DataFrame(out)
    return frame.rename(columns={"mean_clean": "mean_base", "mean_stressed": "mean_other"})


# --------------------------------------------------------------------------- spectra and KL

#: Default histogram of log10(λ/λ_1): 24 bins of a quarter decade over [-6, 0].
LOG_EIG_BINS = np.linspace(-6.0, 0.0, 25)


def normalized_spectrum(eigenvalues: Sequence[float] | np.ndarray, K: int = 10) -> np.ndarray:
    """Top-K eigenvalues (descending, clamped at 0) divided by their sum: a distribution over rank.

    A spectrum with fewer than K eigenvalues is padded with zeros (no variance in those modes).
    """
    lam = np.sort(np.clip(np.asarray(eigenvalues, dtype=np.float64).ravel(), 0.0, None))[::-1]
    if lam.size == 0 or not np.all(np.isfinite(lam)) or lam.sum() <= 0:
        raise WspecError("spectrum is empty, non-finite or all zero; cannot normalise it")
    top = np.zeros(K)
    top[: min(K, lam.size)] = lam[:K]
    return top / top.sum()


def log_eigenvalue_histogram(
    eigenvalues: Sequence[float] | np.ndarray, bins: np.ndarray = LOG_EIG_BINS
) -> np.ndarray:
    """Share of eigenvalues per bin of log10(λ/λ_1) (scale-free); values below the range clip in.

    Zero eigenvalues (below numerical rank) are dropped: their logarithm is undefined.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).ravel()
    lam = lam[np.isfinite(lam) & (lam > 0)]
    if lam.size == 0:
        raise WspecError("spectrum has no positive eigenvalue; cannot build a histogram")
    logs = np.clip(np.log10(lam / lam.max()), bins[0], bins[-1])
    counts, _ = np.histogram(logs, bins=bins)
    return counts / counts.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray, smoothing: float = 1e-3) -> float:
    """KL(p ‖ q) in nats after mixing both with the uniform distribution (weight `smoothing`).

    The mixture keeps KL finite when q has empty bins (e.g. a short decode with fewer than K
    non-zero eigenvalues) and changes KL of well-populated distributions by O(smoothing).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise WspecError(f"distributions differ in shape: {p.shape} vs {q.shape}")
    k = p.shape[-1]
    p = (1.0 - smoothing) * p / p.sum(-1, keepdims=True) + smoothing / k
    q = (1.0 - smoothing) * q / q.sum(-1, keepdims=True) + smoothing / k
    return special.rel_entr(p, q).sum(-1)


@dataclass(frozen=True)
class KLTest:
    """KL(stressed ‖ clean) between group-mean spectral distributions with a permutation null."""

    kl: float
    p_value: float
    null_median: float
    null_q95: float
    n_clean: int
    n_stressed: int
    representation: str
    n_perm: int


def spectral_kl_test(
    clean_spectra: Sequence[np.ndarray],
    stressed_spectra: Sequence[np.ndarray],
    *,
    representation: str = "rank",
    K: int = 10,
    bins: np.ndarray = LOG_EIG_BINS,
    smoothing: float = 1e-3,
    n_perm: int = 2000,
    seed: int = 0,
) -> KLTest:
    """Is the stressed eigenvalue distribution different from the clean one?

    Each stimulus's spectrum becomes a distribution: ``"rank"`` = `normalized_spectrum` (share
    of variance in each of the top-K modes), ``"hist"`` = `log_eigenvalue_histogram`. A group's
    distribution is the mean over its stimuli; the statistic is KL(stressed ‖ clean) with
    uniform smoothing. The null shuffles group labels across stimuli (n_perm, seeded); p is
    the share of permuted KLs ≥ the observed one, (1 + #)/(1 + n_perm).
    """
    if representation == "rank":
        rows = [normalized_spectrum(s, K) for s in (*clean_spectra, *stressed_spectra)]
    elif representation == "hist":
        rows = [log_eigenvalue_histogram(s, bins) for s in (*clean_spectra, *stressed_spectra)]
    else:
        raise WspecError(f"unknown representation {representation!r}; use 'rank' or 'hist'")
    dist = np.vstack(rows)
    n_clean, n_total = len(clean_spectra), dist.shape[0]
    n_stressed = n_total - n_clean
    if n_clean < 2 or n_stressed < 2:
        raise WspecError("KL test needs at least 2 spectra per group")
    observed = float(kl_divergence(dist[n_clean:].mean(0), dist[:n_clean].mean(0), smoothing))
    rng = np.random.default_rng(seed)
    perm = rng.permuted(np.tile(np.arange(n_total), (n_perm, 1)), axis=1)
    mask = np.zeros((n_perm, n_total))
    np.put_along_axis(mask, perm[:, :n_stressed], 1.0, axis=1)
    stressed_mean = mask @ dist / n_stressed
    clean_mean = (1.0 - mask) @ dist / n_clean
    null = kl_divergence(stressed_mean, clean_mean, smoothing)
    p = (1.0 + np.sum(null >= observed - 1e-15)) / (1.0 + n_perm)
    return KLTest(
        observed,
        float(p),
        float(np.median(null)),
        float(np.quantile(null, 0.95)),
        n_clean,
        n_stressed,
        representation,
        n_perm,
    )
