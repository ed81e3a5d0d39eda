"""The book's one way of printing a number."""

from __future__ import annotations

import math

from wspec.crossmodel import format_interval
from wspec.numbers import format_number


def test_a_number_has_a_true_minus_and_a_dash_when_missing() -> None:
    assert format_number(-1.44, 1) == "−1.4"
    assert format_number(0.5) == "+0.50"
    assert format_number(0.5, sign=False) == "0.50"
    assert format_number(math.nan) == "—"
    assert "-" not in format_interval(-0.25, -0.5, -0.01)  # intervals use the same rule
