"""The prose rules: plurals, intervals from one unit, and readings of several intervals."""

from __future__ import annotations

import math

import pandas as pd

from wspec import report
from wspec.verdicts import judge_c6


def test_counts_take_the_right_number() -> None:
    assert report.counted(1, "stratum", "strata") == "1 stratum"
    assert report.counted(0, "stratum", "strata") == "0 strata"
    assert report.counted(4, "cluster", "clusters") == "4 clusters"


def test_an_estimate_from_one_unit_says_it_has_no_interval() -> None:
    assert report.estimate_text(-9.35, math.nan, math.nan, "pct") == (
        "−9.35 % (one independent unit: no interval)"
    )
    assert report.estimate_text(0.62, 0.48, 0.77) == "+0.62 [+0.48, +0.77]"


def _rows(*intervals: tuple[float, float]) -> pd.DataFrame:
    return pd.DataFrame([{"ci_low": lo, "ci_high": hi} for lo, hi in intervals])


def test_regression_reading_names_each_pattern_of_intervals() -> None:
    assert report.regression_reading(_rows((-3, -1), (-2, -0.5))).startswith(
        "Every estimable interval lies below"
    )
    assert "above zero" in report.regression_reading(_rows((1, 3)))
    assert "includes zero" in report.regression_reading(_rows((-1, 1), (-2, 2)))
    mixed = report.regression_reading(_rows((-3, -1), (1, 2), (-1, 1), (math.nan, math.nan)))
    assert "of 3 estimable intervals: 1 below zero, 1 above, 1 across it" in mixed
    assert report.regression_reading(_rows((math.nan, math.nan))).startswith("It could not")


def test_clauses_say_why_a_contrast_is_missing() -> None:
    row = {"model": "tiny.en", "reading": "primary", "kind": "pct", "control": "natural_T"}
    missing = pd.DataFrame([row | {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan}])
    assert "not estimable: no stratum holds both kinds with a value under `natural_T`" in (
        report.contrast_clause(missing)
    )
    found = pd.DataFrame(
        [
            row
            | {"estimate": -5.0, "ci_low": -8.0, "ci_high": -2.0, "n_hallucinated": 3}
            | {"n_other": 9, "n_strata": 1, "n_clusters": 6}
        ]
    )
    assert report.contrast_clause(found) == (
        "`tiny.en` (primary) −5.00 % [−8.00, −2.00] (n = 3/9 in 1 stratum, 6 clusters)"
    )
    assert report.contrast_clause(found.iloc[:0]) == "no such decodes in this build"


def _ablation(diff: float, lo: float, hi: float, model: str = "tiny.en") -> dict:
    return {
        "model": model,
        "targeted": 0.5,
        "random": 0.5 - diff,
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "n_clips": 6,
        "n_clusters": 1 if math.isnan(lo) else 4,
    }


def test_ablation_clause_counts_clips_and_clusters() -> None:
    rows = pd.DataFrame([_ablation(0.25, 0.1, 0.4), _ablation(0.1, math.nan, math.nan, "base")])
    text = report.ablation_clause(rows)
    assert "`tiny.en` targeted 0.50, random 0.25, difference +0.25 [+0.10, +0.40]" in text
    assert "(n = 6 clips, 4 clusters)" in text
    assert "`base`" in text and "one independent unit: no interval" in text
    assert report.ablation_clause(rows.iloc[:0]) == "no such clips in this build"


def test_ablation_reading_separates_specific_general_and_null() -> None:
    above = pd.DataFrame([_ablation(0.3, 0.1, 0.5)])
    across = pd.DataFrame([_ablation(0.05, -0.1, 0.2)])
    assert "carry the hallucination" in report.ablation_reading(above, across)
    assert "not heads specific" in report.ablation_reading(above, above)
    assert "cannot show" in report.ablation_reading(across, above)
    none = pd.DataFrame([_ablation(0.3, math.nan, math.nan)])
    assert "too few" in report.ablation_reading(none, none)


def test_ablation_mode_reading_says_when_the_choice_matters() -> None:
    def rows(model: str, zero_low: float, mean_low: float) -> pd.DataFrame:
        return pd.DataFrame(
            {"model": model, "ablation": ["zero", "mean"], "ci_low": [zero_low, mean_low]}
        )

    text = report.ablation_mode_reading(
        pd.concat([rows("a", 0.1, 0.2), rows("b", -0.1, 0.01), rows("c", -0.2, -0.1)])
    )
    assert "`a`: both" in text
    assert "`b`: only mean ablation" in text and "depends on how" in text
    assert "`c`: neither" in text
    assert "too few" in report.ablation_mode_reading(rows("d", math.nan, math.nan))


def test_by_model_lists_one_clause_per_model_or_says_none() -> None:
    rows = pd.DataFrame({"model": ["tiny.en", "base"], "x": [0.25, 0.5]})
    assert (
        report.by_model(rows.itertuples(), lambda r: f"{r.x:.2f}") == "`tiny.en` 0.25; `base` 0.50"
    )
    assert report.by_model(rows.iloc[:0].itertuples(), str) == "not estimable"
    assert report.by_model([], str, empty="none here") == "none here"


def test_precision_reading_takes_the_widest_interval_of_the_named_detectors() -> None:
    metrics = pd.DataFrame(
        {
            "model": ["tiny.en", "tiny.en", "tiny.en", "base"],
            "detector": ["(a)", "(c)", "(z) not compared", "(a)"],
            "auroc_low": [0.85, 0.80, 0.0, 0.6],
            "auroc_high": [0.95, 0.96, 1.0, 0.9],
        }
    )
    text = report.precision_reading(metrics, ["(a)", "(c)"], target=0.1)
    # tiny.en: (c) is widest at ±0.08, and (z) is not one of the compared detectors
    assert text.startswith("`tiny.en` ±0.08; `base` ±0.15: wider than ±0.10 for `base`,")
    assert "every one within" in report.precision_reading(metrics.iloc[:2], ["(a)", "(c)"], 0.1)
    assert "No hallucinated" in report.precision_reading(metrics.iloc[:0], ["(a)"], 0.1)


def _c6(rows: list[tuple[str, float, float, float]]):
    """judge_c6 on one speech-derived (e) − (a) gain per model: (model, gain, low, high)."""
    return judge_c6(
        pd.DataFrame(
            [
                {
                    "model": m,
                    "set": "speech-derived",
                    "comparison": "(e) − (a)",
                    "gain": g,
                    "gain_low": lo,
                    "gain_high": hi,
                }
                for m, g, lo, hi in rows
            ]
        )
    )


def test_c6_reading_names_each_model_when_the_models_disagree() -> None:
    mixed = _c6([("base", 0.02, 0.01, 0.03), ("tiny.en", 0.01, -0.02, 0.03)])
    assert mixed.verdict == "inconclusive"
    text = report.c6_reading(mixed)
    assert "for `base` the spectrum adds" in text
    assert "for `tiny.en` the intervals are too wide" in text
    assert text.endswith("C6 as a whole is inconclusive.")
    agreed = report.c6_reading(_c6([("base", 0.0, -0.02, 0.03), ("tiny.en", 0.01, -0.01, 0.04)]))
    assert agreed == (
        "In this build the intervals are too wide to say whether the spectrum adds to "
        "Whisper's signals: C6 is not confirmed."
    )
    confirmed = report.c6_reading(_c6([("base", 0.05, 0.03, 0.07)]))
    assert confirmed == (
        "In this build the spectrum adds to what Whisper reports where Whisper is weakest."
    )
