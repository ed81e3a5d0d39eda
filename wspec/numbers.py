"""How the book writes one number: fixed digits and a true minus sign (U+2212), so that
every page, table and verdict prints "−0.12" the same way and "—" where there is no value."""

from __future__ import annotations

import math


def format_number(x: float, digits: int = 2, *, sign: bool = True) -> str:
    """ "+0.12" / "−0.12" (`sign`: a "+" on positive values, for changes), or "0.12" for levels
    such as an AUROC; "—" for a missing value."""
    if not math.isfinite(x):
        return "—"
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", "−")
