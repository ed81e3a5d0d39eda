"""The book's prose logic: numbers and verdict-like readings turned into sentences.

Chapters glue what these return; keeping the wording rules here means they are tested, and a
page cannot word the same situation two ways. Numbers are formatted by
`wspec.crossmodel.format_interval` (typographic minus, fixed digits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from wspec.crossmodel import format_interval
from wspec.numbers import format_number
from wspec.paper import COMPONENT_LABELS
from wspec.verdicts import CONFIRMED, INCONCLUSIVE, NOT_CONFIRMED, Verdict


def counted(n: int, one: str, many: str) -> str:
    """ "1 cluster", "4 clusters": a count with its noun in the right number."""
    return f"{n} {one if n == 1 else many}"


def estimate_text(estimate: float, ci_low: float, ci_high: float, kind: str = "") -> str:
    """Estimate [95 % CI] in the metric's unit (kind "pct": percent); an estimate from a single
    independent unit has no interval, and the sentence says so instead of inventing one."""
    unit = "%" if kind == "pct" else ""
    if math.isfinite(ci_low):
        return format_interval(estimate, ci_low, ci_high, unit=unit)
    value = format_number(estimate) + (f" {unit}" if unit else "")
    return f"{value} (one independent unit: no interval)"


def by_model(rows: Iterable, text: Callable[[Any], str], empty: str = "not estimable") -> str:
    """ "`tiny.en` …; `base` …": one clause per row (each with a ``model`` attribute), the
    book's one way of listing a number per model, or `empty` when there are no rows."""
    return "; ".join(f"`{r.model}` {text(r)}" for r in rows) or empty


def contrast_clause(rows: pd.DataFrame) -> str:
    """One clause per input-fixed contrast row (`wspec.contrasts`): model, reading, estimate,
    counts of decodes, strata and clusters, or why it could not be estimated."""
    parts = []
    for r in rows.itertuples():
        head = f"`{r.model}` ({r.reading})"
        if np.isfinite(r.estimate):
            parts.append(
                f"{head} {estimate_text(r.estimate, r.ci_low, r.ci_high, r.kind)} "
                f"(n = {r.n_hallucinated}/{r.n_other} in "
                f"{counted(r.n_strata, 'stratum', 'strata')}, "
                f"{counted(r.n_clusters, 'cluster', 'clusters')})"
            )
        else:
            parts.append(
                f"{head} not estimable: no stratum holds both kinds with a value "
                f"under `{r.control}`"
            )
    return "; ".join(parts) if parts else "no such decodes in this build"


def regression_clause(rows: pd.DataFrame) -> str:
    """One clause per row of `contrasts.hallucination_regression`: the flag's coefficient."""
    parts = []
    for r in rows.itertuples():
        head = f"`{r.model}` {COMPONENT_LABELS[r.component]} ({r.reading})"
        if np.isfinite(r.estimate):
            parts.append(
                f"{head} {estimate_text(r.estimate, r.ci_low, r.ci_high, r.kind)} "
                f"(n = {r.n}, {r.n_hallucinated} hallucinated, "
                f"{counted(r.n_clusters, 'cluster', 'clusters')}, "
                f"{counted(r.n_families, 'family', 'families')})"
            )
        else:
            parts.append(f"{head} not estimable ({r.note}; n = {r.n})")
    return "; ".join(parts) if parts else "no stressed decodes in this build"


def regression_reading(rows: pd.DataFrame) -> str:
    """What the hallucination coefficients of effective rank say together, from where their
    intervals lie relative to zero (below, above, across, or a mix)."""
    ok = rows[np.isfinite(rows["ci_low"])]
    if ok.empty:
        return "It could not be estimated in this build."
    below, above = int((ok["ci_high"] < 0).sum()), int((ok["ci_low"] > 0).sum())
    if below == len(ok):
        return (
            "Every estimable interval lies below zero: decodes that hallucinated have a "
            "lower effective rank than decodes of the same family, length and encoder "
            "input that did not."
        )
    if above == len(ok):
        return (
            "Every estimable interval lies above zero: decodes that hallucinated have a "
            "higher effective rank than comparable decodes that did not."
        )
    if below == above == 0:
        return (
            "Every estimable interval includes zero: once family, length and what the "
            "encoder heard are accounted for, this build cannot tell a hallucination "
            "from its input."
        )
    return (
        f"The readings disagree (of {len(ok)} estimable intervals: {below} below zero, "
        f"{above} above, {len(ok) - below - above} across it), so the sign depends on "
        "the model, component or control and is not settled here."
    )


def ablation_clause(rows: pd.DataFrame) -> str:
    """One clause per model of `wspec.causal.ablation_summary` rows (one group): the mean
    transcript change under targeted and random ablation and their difference."""
    parts = []
    for r in rows.itertuples():
        if not np.isfinite(r.diff):
            parts.append(f"`{r.model}` not estimable (no such clips)")
            continue
        parts.append(
            f"`{r.model}` targeted {r.targeted:.2f}, random {r.random:.2f}, difference "
            f"{estimate_text(r.diff, r.ci_low, r.ci_high)} "
            f"(n = {counted(r.n_clips, 'clip', 'clips')}, "
            f"{counted(r.n_clusters, 'cluster', 'clusters')})"
        )
    return "; ".join(parts) if parts else "no such clips in this build"


def ablation_reading(hallucinated: pd.DataFrame, survived: pd.DataFrame) -> str:
    """What the targeted − random differences say: specific to hallucination, general, or
    no more than random heads (intervals relative to zero, per group)."""
    ok_h = hallucinated[np.isfinite(hallucinated["ci_low"])]
    if ok_h.empty:
        return "This build has too few independent clips for an interval."
    if not (ok_h["ci_low"] > 0).all():
        return (
            "For at least one model the interval of the hallucinated clips reaches zero or "
            "below: this build cannot show that the heads picked by their spectral change "
            "alter the hallucinated transcripts more than as many random heads do, so it "
            "gives no causal support for reading the spectral change as the place where "
            "the hallucination is made."
        )
    ok_s = survived[np.isfinite(survived["ci_low"])]
    if not ok_s.empty and (ok_s["ci_low"] > 0).all():
        return (
            "The heads picked by their spectral change alter the transcripts more than random "
            "heads, but on the survived clips as well: they are important heads in general, "
            "not heads specific to hallucination."
        )
    return (
        "The heads picked by their spectral change alter the hallucinated transcripts more "
        "than random heads, and the survived clips show no such interval above zero: the "
        "spectral change points at heads that carry the hallucination."
    )


def ablation_mode_reading(modes: pd.DataFrame) -> str:
    """Whether zero and mean ablation agree on the hallucinated clips: per model, is the
    targeted − random interval above zero under both, under neither, or under one only."""
    parts = []
    for model, rows in modes.groupby("model", sort=True):
        ok = rows[np.isfinite(rows["ci_low"])]
        if ok["ablation"].nunique() < 2:
            parts.append(f"`{model}`: too few independent clips to compare the two")
            continue
        above = sorted(ok.loc[ok["ci_low"] > 0, "ablation"])
        if len(above) == len(ok):
            parts.append(f"`{model}`: both ablations put the interval above zero")
        elif not above:
            parts.append(f"`{model}`: neither ablation puts the interval above zero")
        else:
            parts.append(
                f"`{model}`: only {' and '.join(above)} ablation puts the interval above zero, "
                "so the causal reading depends on how a head is removed"
            )
    return "; ".join(parts) + "." if parts else "No hallucinated clips in this build."


def precision_reading(metrics: pd.DataFrame, detectors: Iterable[str], target: float) -> str:
    """Per model, the widest AUROC interval half-width of `detectors` on the set `metrics`
    holds, against the `target` the comparison needs: a gain of a few hundredths can only be
    told from 0 when the detectors' own intervals are about that narrow."""
    rows = metrics[metrics["detector"].isin(list(detectors))]
    half = ((rows["auroc_high"] - rows["auroc_low"]) / 2).groupby(rows["model"], sort=False).max()
    if half.empty:
        return "No hallucinated cases in this build."
    widths = "; ".join(f"`{m}` ±{h:.2f}" for m, h in half.items())
    wide = [f"`{m}`" for m, h in half.items() if not h < target]
    if not wide:
        return f"{widths}: every one within the ±{target:.2f} the comparison needs."
    return (
        f"{widths}: wider than ±{target:.2f} for {', '.join(wide)}, too few hallucinating "
        'clusters for that precision (the full stimulus set, with more "hell" and attacked '
        "sentences, is sized for it)."
    )


#: C6 in words, per model verdict: what a reader may conclude about the spectrum as a detector.
C6_READINGS: dict[str, str] = {
    CONFIRMED: "the spectrum adds to what Whisper reports where Whisper is weakest",
    NOT_CONFIRMED: "the spectrum does not detect hallucinations better than the numbers "
    "Whisper prints for free",
    INCONCLUSIVE: "the intervals are too wide to say whether the spectrum adds to Whisper's "
    "signals",
}


def c6_reading(c6: Verdict) -> str:
    """C6 in plain words, per model where the models disagree: a claim-level "inconclusive"
    that hides one model's confirmation would tell the reader less than the data do."""
    groups: dict[str, list[str]] = {}
    for mv in c6.per_model:
        groups.setdefault(mv.verdict, []).append(f"`{mv.model}`")
    if len(groups) <= 1:
        reading = C6_READINGS[c6.verdict]
        tail = "." if c6.verdict == CONFIRMED else ": C6 is not confirmed."
        return f"In this build {reading}{tail}"
    clauses = "; ".join(
        f"for {', '.join(models)} {C6_READINGS[v]}"
        for v in (CONFIRMED, NOT_CONFIRMED, INCONCLUSIVE)
        if (models := groups.get(v))
    )
    return (
        f"In this build the models differ: {clauses}. A claim is confirmed only where every "
        f"model confirms it, so C6 as a whole is {c6.verdict}."
    )
