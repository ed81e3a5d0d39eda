"""The prose rules: plurals, intervals from one unit, and readings of several intervals."""

from __future__ import annotations

import math

import pandas as pd

from wspec import report


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
