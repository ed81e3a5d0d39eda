"""Computed verdicts on the paper's claims: "confirmed", "not confirmed" or "inconclusive".

Each claim is judged from confidence intervals, so a re-run on other models or stimuli can
change the verdict. The rules (also in each judge's docstring):

* Directional claim with a claimed range R (`judge_direction`), in this order:
  **not confirmed** if the CI lies entirely on the opposite side of 0; **confirmed** if the CI
  excludes 0 in the claimed direction and overlaps R; **not confirmed** if it excludes 0 in the
  claimed direction but misses R (right sign, wrong size); **not confirmed** if it includes 0
  and misses R (the data rule out the claimed size); otherwise **inconclusive** (the CI
  includes 0 and overlaps R).
* "Small / about zero" claim with range R (`judge_within`): confirmed if the CI lies inside
  R, not confirmed if it lies entirely outside R, inconclusive otherwise.
* A claim over several models is confirmed if every in-scope model confirms it, not confirmed
  if any in-scope model does not, inconclusive otherwise — and inconclusive ("not tested") if
  no model in the results falls in the claim's scope (e.g. no large model was run).

Claimed ranges are derived from the paper's own numbers (`wspec.paper`): for a claimed change
the range spans half the smallest to twice the largest published magnitude, so the verdict
asks "same sign and same order of magnitude", not "same digits" (our stimuli and spectra are
not the authors').
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from wspec.errors import WspecError
from wspec.paper import ABSTRACT, TABLE1, model_scale

CONFIRMED = "confirmed"
NOT_CONFIRMED = "not confirmed"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class ModelVerdict:
    """The verdict for one model, with the interval it rests on."""

    model: str
    verdict: str
    reason: str
    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Verdict:
    """A claim, its computed verdict, the rule applied and the evidence (per model)."""

    claim_id: str
    text: str
    source: str
    rule: str
    verdict: str
    reason: str
    per_model: tuple[ModelVerdict, ...] = ()
    evidence: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def glue_items(self) -> dict[str, object]:
        """Flat, glue-ready values: "<id>_verdict", "<id>_<model>_estimate|ci_low|ci_high", ..."""
        items: dict[str, object] = {f"{self.claim_id}_verdict": self.verdict}
        items[f"{self.claim_id}_reason"] = self.reason
        for mv in self.per_model:
            key = f"{self.claim_id}_{_key(mv.model)}"
            items[f"{key}_verdict"] = mv.verdict
            for name in ("estimate", "ci_low", "ci_high"):
                items[f"{key}_{name}"] = float(getattr(mv, name))
        for name, value in self.evidence.items():
            items[f"{self.claim_id}_{_key(name)}"] = float(value)
        return items


def _key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


# --------------------------------------------------------------------------- rules


def judge_direction(
    lo: float, hi: float, *, sign: int, claimed: tuple[float, float]
) -> tuple[str, str]:
    """Verdict for "the quantity moves in direction `sign` (+1/−1) by an amount in `claimed`"."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE, "no interval (missing data)"
    a, b = sorted(claimed)
    overlaps = lo <= b and hi >= a
    opposite = hi < 0 if sign > 0 else lo > 0
    excludes_zero = lo > 0 if sign > 0 else hi < 0
    if opposite:
        return NOT_CONFIRMED, "CI lies entirely on the opposite side of 0"
    if excludes_zero:
        if overlaps:
            return (
                CONFIRMED,
                "CI excludes 0 in the claimed direction and overlaps the claimed range",
            )
        return NOT_CONFIRMED, "claimed direction, but the CI excludes the claimed magnitude"
    if not overlaps:
        return NOT_CONFIRMED, "CI includes 0 and excludes the claimed range"
    return INCONCLUSIVE, "CI includes both 0 and the claimed range"


def judge_within(lo: float, hi: float, *, claimed: tuple[float, float]) -> tuple[str, str]:
    """Verdict for "the quantity is small: inside `claimed`"."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE, "no interval (missing data)"
    a, b = sorted(claimed)
    if a <= lo and hi <= b:
        return CONFIRMED, "CI lies inside the claimed range"
    if hi < a or lo > b:
        return NOT_CONFIRMED, "CI lies entirely outside the claimed range"
    return INCONCLUSIVE, "CI straddles a bound of the claimed range"


def combine(per_model: Sequence[ModelVerdict]) -> tuple[str, str]:
    """Claim-level verdict: all confirm → confirmed; any not → not confirmed; else inconclusive."""
    if not per_model:
        return INCONCLUSIVE, "not tested: no model in the claim's scope in these results"
    verdicts = [mv.verdict for mv in per_model]
    names = ", ".join(f"{mv.model}: {mv.verdict}" for mv in per_model)
    if NOT_CONFIRMED in verdicts:
        return NOT_CONFIRMED, names
    if all(v == CONFIRMED for v in verdicts):
        return CONFIRMED, names
    return INCONCLUSIVE, names


# --------------------------------------------------------------------------- claims


def _paper_values(component: str, stem: str, scale: str | None = None) -> list[float]:
    scale_of = {"Tiny": "intermediate", "Small": "intermediate", "Large": "large"}
    return [
        getattr(r, stem)
        for r in TABLE1
        if r.component == component
        and math.isfinite(getattr(r, stem))
        and (scale is None or scale_of[r.paper_model] == scale)
    ]


def claimed_change_range(values: Sequence[float]) -> tuple[float, float]:
    """Same-sign range from half the smallest to twice the largest published magnitude."""
    mags = np.abs(np.asarray(values, dtype=float))
    sign = float(np.sign(np.mean(values)))
    lo, hi = sign * mags.min() / 2.0, sign * mags.max() * 2.0
    return (min(lo, hi), max(lo, hi))


_ABS = {c.key: c.d_neff_pct for c in ABSTRACT}
C1_RANGE = claimed_change_range(
    _paper_values("dec_cross_attn", "d_neff_pct", "intermediate") + [_ABS["cross_attn_collapse"]]
)
#: "≈ 0 or slightly negative": down to twice the abstract's −2.34 %, up to +1 % (Table 1's
#: self-attention rows all lie within ±0.76 %, so +1 % is the tolerance for "≈ 0").
C2_RANGE = (2.0 * _ABS["self_attn_compression"], 1.0)
C3_RANGE = claimed_change_range(_paper_values("dec_cross_attn", "d_alpha"))
#: C4: a dynamic compression must exceed 1 % in N_eff (below that we call it negligible).
C4_MARGIN_PCT = 1.0
#: C5: the uniform-gain model must get every partial product Π_{j≥k} ρ_j right within a
#: factor 2 (the threshold of `wspec.jacobian.summarize_gain_alignment`).
C5_MAX_FACTOR = 2.0
#: C6: an AUROC CI entirely below this rules out a useful detector.
C6_USEFUL_AUROC = 0.6

CLAIMS: dict[str, str] = {
    "C1": "Under stress, decoder cross-attention effective rank drops in small/intermediate "
    "models (Regime I, 'Structural Disintegration').",
    "C2": "In large models, decoder self-attention effective rank changes little under stress "
    "(about 0 or slightly negative: the 'Compression-Seeking Attractor').",
    "C3": "The spectral slope of decoder cross-attention hardens under stress (Δα > 0).",
    "C4": "The compression is a dynamic response to stress, not present in healthy operation.",
    "C5": "The gain–alignment ratio λ is stable across layers (uniform-gain assumption).",
    "C6": "Spectral features detect hallucinations without a transcript (AUROC > 0.5).",
}

SOURCES: dict[str, str] = {
    "C1": "Table 1 (Dec Cross-Attn Tiny −7.56 %, Small −9.54 %); abstract: 13.4 % collapse",
    "C2": "Table 1 (Dec Self-Attn Large +0.04 %); abstract: −2.34 %",
    "C3": "Table 1 (Dec Cross-Attn Δα +0.25, +0.24, +0.17); abstract: 'hardens the spectral slope'",
    "C4": "referee comment 1 and the authors' rebuttal (baseline on healthy transcriptions)",
    "C5": "referee comment 3 (Eq. 3.2–3.3 assume uniform layer-wise gain)",
    "C6": "pith summary: 'monitoring the spectral slope ... detect hallucinations without "
    "needing a ground-truth transcript'",
}


def _pooled_rows(deltas: pd.DataFrame, family: str | None) -> pd.DataFrame:
    rows = deltas[deltas["layer"] == -1] if "layer" in deltas.columns else deltas
    families = sorted(rows["family"].unique()) if "family" in rows.columns else []
    if family is not None:
        rows = rows[rows["family"] == family]
    elif len(families) > 1:
        raise WspecError(f"deltas hold several stress families {families}; pass family=...")
    return rows


def _per_model(
    deltas: pd.DataFrame,
    *,
    component: str,
    metric: str,
    scale: str | None,
    judge,
) -> tuple[ModelVerdict, ...]:
    out = []
    cell = deltas[(deltas["component"] == component) & (deltas["metric"] == metric)]
    for _, r in cell.sort_values("model").iterrows():
        if scale is not None and model_scale(str(r["model"])) != scale:
            continue
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        verdict, reason = judge(lo, hi)
        out.append(ModelVerdict(str(r["model"]), verdict, reason, float(r["estimate"]), lo, hi))
    return tuple(out)


def _verdict(claim_id: str, rule: str, per_model, evidence=None) -> Verdict:
    verdict, reason = combine(per_model)
    return Verdict(
        claim_id,
        CLAIMS[claim_id],
        SOURCES[claim_id],
        rule,
        verdict,
        reason,
        tuple(per_model),
        dict(evidence or {}),
    )


def judge_c1(deltas: pd.DataFrame, family: str | None = None) -> Verdict:
    """C1 from `stats.delta_table` rows (layer mean): ΔN_eff of dec_cross_attn < 0, in C1_RANGE."""
    per_model = _per_model(
        _pooled_rows(deltas, family),
        component="dec_cross_attn",
        metric="n_eff",
        scale="intermediate",
        judge=lambda lo, hi: judge_direction(lo, hi, sign=-1, claimed=C1_RANGE),
    )
    rule = f"judge_direction(sign=−1, claimed ΔN_eff range {C1_RANGE[0]:.2f}..{C1_RANGE[1]:.2f} %)"
    return _verdict("C1", rule, per_model)


def judge_c2(deltas: pd.DataFrame, family: str | None = None) -> Verdict:
    """C2: ΔN_eff of dec_self_attn in large models inside C2_RANGE."""
    per_model = _per_model(
        _pooled_rows(deltas, family),
        component="dec_self_attn",
        metric="n_eff",
        scale="large",
        judge=lambda lo, hi: judge_within(lo, hi, claimed=C2_RANGE),
    )
    rule = f"judge_within(claimed ΔN_eff range {C2_RANGE[0]:.2f}..{C2_RANGE[1]:.2f} %)"
    return _verdict("C2", rule, per_model)


def judge_c3(deltas: pd.DataFrame, family: str | None = None) -> Verdict:
    """C3: Δα of dec_cross_attn > 0, in C3_RANGE, for every model."""
    per_model = _per_model(
        _pooled_rows(deltas, family),
        component="dec_cross_attn",
        metric="alpha",
        scale=None,
        judge=lambda lo, hi: judge_direction(lo, hi, sign=+1, claimed=C3_RANGE),
    )
    rule = f"judge_direction(sign=+1, claimed Δα range {C3_RANGE[0]:.3f}..{C3_RANGE[1]:.3f})"
    return _verdict("C3", rule, per_model)


def judge_c4(baselines: pd.DataFrame) -> Verdict:
    """C4 from `stats.baseline_comparison` rows (one or more models).

    The component judged is the one where the paper places each model's compression:
    dec_cross_attn for intermediate models, dec_self_attn for large ones. Rule:
    judge_direction(sign=−1, claimed = (−∞, −C4_MARGIN_PCT]) on ΔN_eff (%) of "hallucinated
    vs healthy": confirmed = a drop beyond the margin that healthy decoding does not show.
    "healthy vs reference" rows (if present) are reported as evidence of static compression.
    """
    needed = {"comparison", "model", "component", "metric", "ci_low", "ci_high", "estimate"}
    if not needed <= set(baselines.columns):
        raise WspecError(f"baseline table lacks {sorted(needed - set(baselines.columns))}")
    per_model, evidence = [], {}
    claimed = (-math.inf, -C4_MARGIN_PCT)
    for _, r in baselines[baselines["metric"] == "n_eff"].sort_values("model").iterrows():
        model = str(r["model"])
        expected = "dec_self_attn" if model_scale(model) == "large" else "dec_cross_attn"
        if r["component"] != expected:
            continue
        if r["comparison"] == "hallucinated vs healthy":
            lo, hi = float(r["ci_low"]), float(r["ci_high"])
            verdict, reason = judge_direction(lo, hi, sign=-1, claimed=claimed)
            per_model.append(ModelVerdict(model, verdict, reason, float(r["estimate"]), lo, hi))
        elif str(r["comparison"]).startswith("healthy vs reference"):
            for name in ("estimate", "ci_low", "ci_high"):
                evidence[f"{model} static {name}"] = float(r[name])
    rule = (
        f"judge_direction(sign=−1, claimed ΔN_eff ≤ −{C4_MARGIN_PCT} %) on hallucinated "
        "stressed vs healthy clean, component by scale"
    )
    return _verdict("C4", rule, per_model, evidence)


def _partial_factor(log_rho: np.ndarray) -> float:
    """max_k exp|Σ_{j≥k} (log ρ_j − mean log ρ)|: worst miss of ρ̄^{L−k} on a partial product."""
    dev = log_rho - log_rho.mean()
    return float(np.exp(np.abs(np.cumsum(dev[::-1])).max()))


def gain_stability(
    jacobian: pd.DataFrame,
    *,
    stack: str = "decoder",
    value_column: str = "rho",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """How far the uniform-gain model misses the measured λ = ρ_j per model, with a CI.

    Input: the Jacobian table of `wspec.jacobian` (columns model, layer, `value_column`, and
    whichever of stimulus_id / stack / position / step it has). A *unit* is one measured
    position (stimulus × stack × position/step) with λ at ≥ 2 layers; rows of other stacks
    than `stack` are dropped (the claim is about the decoder). Per unit: the partial-product
    factor max_k exp|Σ_{j≥k} log(ρ_j/ρ̄)| (ρ̄ the geometric mean; the criterion of
    `wspec.jacobian.summarize_gain_alignment`), the CV of ρ across layers, and whether all ρ_j
    lie on the same side of 1. Per model: the median factor with a percentile-bootstrap CI
    over units (seeded), the median CV and the same-side share.
    """
    needed = {"model", "layer", value_column}
    if not needed <= set(jacobian.columns):
        raise WspecError(f"Jacobian table lacks {sorted(needed - set(jacobian.columns))}")
    d = jacobian
    if "stack" in d.columns:
        d = d[d["stack"] == stack]
    d = d[np.isfinite(d[value_column]) & (d[value_column] > 0)]
    unit_cols = [c for c in ("stimulus_id", "stack", "position", "step") if c in d.columns]
    if not unit_cols:
        raise WspecError("Jacobian table needs a step or position column to define units")
    alpha = (1.0 - ci) / 2.0
    rows = []
    for model, sub in d.groupby("model"):
        factors, cvs, same = [], [], []
        for _, unit in sub.groupby(unit_cols):
            rho = unit.sort_values("layer")[value_column].to_numpy(float)
            if rho.size < 2:
                continue
            factors.append(_partial_factor(np.log(rho)))
            cvs.append(rho.std(ddof=0) / rho.mean())
            same.append(bool(np.all(rho >= 1) or np.all(rho < 1)))
        if len(factors) < 2:
            raise WspecError(f"model {model}: need ≥ 2 measured positions with ≥ 2 layers")
        f = np.asarray(factors)
        idx = np.random.default_rng(seed).integers(0, f.size, size=(n_boot, f.size))
        lo, hi = np.quantile(np.median(f[idx], axis=1), [alpha, 1.0 - alpha])
        rows.append(
            {
                "model": model,
                "n_units": int(f.size),
                "factor": float(np.median(f)),
                "ci_low": float(lo),
                "ci_high": float(hi),
                "cv_layers": float(np.median(cvs)),
                "frac_same_side": float(np.mean(same)),
            }
        )
    return pd.DataFrame(rows)


def judge_c5(jacobian: pd.DataFrame, *, value_column: str = "rho", seed: int = 0) -> Verdict:
    """C5: judge_within(CI of the median partial-product factor, [1, C5_MAX_FACTOR]).

    Confirmed if the whole CI says the uniform model ρ̄^{L−k} gets every partial product of
    the measured λ right within a factor C5_MAX_FACTOR; not confirmed if the CI lies above it;
    inconclusive otherwise. The across-layer CV and the same-side-of-1 share are evidence.
    """
    table = gain_stability(jacobian, value_column=value_column, seed=seed)
    per_model, evidence = [], {}
    for _, r in table.iterrows():
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        verdict, reason = judge_within(lo, hi, claimed=(1.0, C5_MAX_FACTOR))
        model = str(r["model"])
        per_model.append(ModelVerdict(model, verdict, reason, float(r["factor"]), lo, hi))
        evidence[f"{model} cv_layers"] = float(r["cv_layers"])
        evidence[f"{model} frac_same_side"] = float(r["frac_same_side"])
    rule = f"judge_within(median partial-product factor of λ in [1, {C5_MAX_FACTOR}])"
    return _verdict("C5", rule, per_model, evidence)


def judge_c6(detection: pd.DataFrame, feature: str = "dec_cross_attn/alpha") -> Verdict:
    """C6 from `detection.detection_table` rows: the pre-specified spectral feature's AUROC.

    Confirmed if the CI's lower bound exceeds 0.5; not confirmed if its upper bound is below
    C6_USEFUL_AUROC (a useful detector is ruled out); inconclusive otherwise. The feature is
    fixed in advance (default: cross-attention slope, the quantity the paper says hardens) so
    that choosing the best of many features cannot inflate the verdict.
    """
    rows = detection[detection["feature"] == feature]
    per_model = []
    for _, r in rows.sort_values("model").iterrows():
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            verdict, reason = INCONCLUSIVE, "no interval (missing data)"
        elif lo > 0.5:
            verdict, reason = CONFIRMED, "AUROC CI lies above 0.5"
        elif hi < C6_USEFUL_AUROC:
            verdict, reason = NOT_CONFIRMED, f"AUROC CI lies below {C6_USEFUL_AUROC}"
        else:
            verdict, reason = INCONCLUSIVE, "AUROC CI includes 0.5 and useful values"
        per_model.append(ModelVerdict(str(r["model"]), verdict, reason, float(r["auroc"]), lo, hi))
    rule = f"AUROC of {feature}: CI > 0.5 confirmed; CI < {C6_USEFUL_AUROC} not confirmed"
    return _verdict("C6", rule, per_model)


def evaluate_claims(
    deltas: pd.DataFrame,
    *,
    family: str | None = None,
    baselines: pd.DataFrame | None = None,
    jacobian: pd.DataFrame | None = None,
    detection: pd.DataFrame | None = None,
) -> list[Verdict]:
    """All claims whose inputs are given (C1–C3 from deltas; C4, C5, C6 when their tables are)."""
    verdicts = [judge_c1(deltas, family), judge_c2(deltas, family), judge_c3(deltas, family)]
    verdicts.append(judge_c4(baselines) if baselines is not None else _missing("C4", "baselines"))
    verdicts.append(judge_c5(jacobian) if jacobian is not None else _missing("C5", "jacobian"))
    verdicts.append(judge_c6(detection) if detection is not None else _missing("C6", "detection"))
    return verdicts


def _missing(claim_id: str, what: str) -> Verdict:
    return Verdict(
        claim_id,
        CLAIMS[claim_id],
        SOURCES[claim_id],
        "",
        INCONCLUSIVE,
        f"not tested: no {what} table given",
    )


def verdict_table(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """One row per claim: claim_id, text, verdict, reason, rule, source."""
    return pd.DataFrame(
        [
            {
                "claim_id": v.claim_id,
                "text": v.text,
                "verdict": v.verdict,
                "reason": v.reason,
                "rule": v.rule,
                "source": v.source,
            }
            for v in verdicts
        ]
    )
