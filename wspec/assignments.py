"""Checkers for the book's exercises: run a student's function against wspec's reference.

Each ``check_*`` function calls the student's implementation on a fixed, seeded set of
spectra or matrices (rank one, flat, power law, random Gaussian activations, unsorted input,
a zero tail, a batch), compares with the reference in `wspec.spectra`, prints one line per
case and returns a `CheckReport` (``report.passed``). A case whose call raises counts as a
failure and shows the exception, so students see *why*.

Tolerance: relative 1e-6 (absolute 1e-9 near zero). Every reference here is a closed-form
float64 computation; an independent correct implementation (different summation order,
np.linalg instead of torch) agrees to ~1e-12, while any conceptual slip (log base, forgetting
to normalise, singular values instead of eigenvalues, no centring) is off by far more. The
one exception is the length-control checker, whose answers involve the student's own random
row subsets: it compares averages with a stated 3 % tolerance (see `check_length_control`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from wspec import spectra

RTOL = 1e-6
ATOL = 1e-9


@dataclass(frozen=True)
class Case:
    """One comparison: what was passed, what the reference gives, what the student gave."""

    name: str
    expected: np.ndarray
    got: np.ndarray | None
    error: str = ""
    rtol: float = RTOL

    @property
    def ok(self) -> bool:
        if self.error or self.got is None:
            return False
        got = np.asarray(self.got, dtype=np.float64)
        if got.shape != self.expected.shape:
            return False
        return bool(np.allclose(got, self.expected, rtol=self.rtol, atol=ATOL, equal_nan=True))


@dataclass
class CheckReport:
    """All cases of one checker; `passed` only if every case agrees with the reference."""

    exercise: str
    cases: list[Case] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)

    def __str__(self) -> str:
        lines = [f"{self.exercise}: {'PASS' if self.passed else 'FAIL'}"]
        for c in self.cases:
            if c.error:
                detail = f"raised {c.error}"
            else:
                detail = f"expected {_fmt(c.expected)}, got {_fmt(c.got)}"
            tol = f" (rtol {c.rtol:g})" if c.rtol != RTOL else ""
            lines.append(f"  [{'ok' if c.ok else 'XX'}] {c.name}: {detail}{tol}")
        n_ok = sum(c.ok for c in self.cases)
        lines.append(f"  {n_ok}/{len(self.cases)} cases agree (rtol {RTOL:g}, atol {ATOL:g})")
        return "\n".join(lines)


def _fmt(x: np.ndarray | None) -> str:
    if x is None:
        return "None"
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        return f"{float(arr):.6g}"
    shown = np.array2string(arr.ravel()[:4], precision=5, separator=", ")
    return f"array{arr.shape} {shown}{' ...' if arr.size > 4 else ''}"


def _call(fn: Callable, *args) -> tuple[np.ndarray | None, str]:
    """The student's answer as float64, or the exception it raised (reported, not re-raised)."""
    try:
        out = fn(*args)
        if hasattr(out, "detach"):  # torch tensors
            out = out.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float64), ""
    except Exception as err:  # noqa: BLE001 - a checker reports any student error as a failure
        return None, f"{type(err).__name__}: {err}"


def _spectra_cases() -> dict[str, np.ndarray]:
    """Seeded eigenvalue spectra covering the edge cases the metrics must get right."""
    rng = np.random.default_rng(20240601)
    i = np.arange(1, 65, dtype=np.float64)
    gauss = np.asarray(spectra.gram_eigenvalues(rng.standard_normal((40, 24))))
    return {
        "rank one [5, 0, 0, 0]": np.array([5.0, 0.0, 0.0, 0.0]),
        "flat, 8 equal eigenvalues": np.full(8, 0.25),
        "power law λ_i = i^-1.5 (64 modes)": i**-1.5,
        "Gaussian 40x24 activations": gauss,
        "unsorted [1, 4, 2, 3]": np.array([1.0, 4.0, 2.0, 3.0]),
        "scaled by 1e6 (scale invariance)": 1e6 * i[:16] ** -0.8,
    }


def _check_metric(exercise: str, student: Callable, reference: Callable) -> CheckReport:
    report = CheckReport(exercise)
    for name, eigs in _spectra_cases().items():
        expected = np.asarray(reference(eigs.copy()), dtype=np.float64)
        got, error = _call(student, eigs.copy())
        report.cases.append(Case(name, expected, got, error))
    return report


def _print(report: CheckReport) -> CheckReport:
    print(report)
    return report


def autograde(checker: Callable[[Callable], CheckReport], student_fn: Callable) -> None:
    """Run `checker` silently; raise AssertionError listing every case unless all pass.

    This is the test an autograder runs (`wspec.student`): a grader records the exception's
    message, so the student sees which case failed and why, while a passing run prints nothing.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        report = checker(student_fn)
    if not report.passed:
        raise AssertionError(str(report))


def check_effective_rank(student_fn: Callable[[np.ndarray], float]) -> CheckReport:
    """Check `student_fn(eigs) -> exp(entropy of eigs/sum(eigs))` against wspec.spectra."""
    return _print(_check_metric("effective rank", student_fn, spectra.effective_rank))


def check_participation_ratio(student_fn: Callable[[np.ndarray], float]) -> CheckReport:
    """Check `student_fn(eigs) -> (Σλ)² / Σλ²` against wspec.spectra."""
    return _print(_check_metric("participation ratio", student_fn, spectra.participation_ratio))


def check_spectral_slope(student_fn: Callable[[np.ndarray, int], float]) -> CheckReport:
    """Check `student_fn(eigs, k) -> α`, minus the OLS slope of ln λ_i on ln i, i = 1..k."""
    report = CheckReport("spectral slope")
    rng = np.random.default_rng(7)
    i = np.arange(1, 101, dtype=np.float64)
    cases = {
        "exact power law i^-1.0, k=10": (i**-1.0, 10),
        "exact power law i^-2.5, k=50": (i**-2.5, 50),
        "noisy power law i^-1.2, k=20": (i**-1.2 * np.exp(0.1 * rng.standard_normal(100)), 20),
        "exponential decay e^-i/5, k=30": (np.exp(-i / 5), 30),
        "unsorted input, k=4": (np.array([0.5, 2.0, 1.0, 0.25, 0.125]), 4),
    }
    for name, (eigs, k) in cases.items():
        expected = np.asarray(spectra.spectral_slope(eigs.copy(), k), dtype=np.float64)
        got, error = _call(student_fn, eigs.copy(), k)
        report.cases.append(Case(name, expected, got, error))
    return _print(report)


def check_gram_eigenvalues(student_fn: Callable[[np.ndarray], np.ndarray]) -> CheckReport:
    """Check `student_fn(X) -> eigenvalues of cov(centred X)`, descending, min(N, d) values."""
    report = CheckReport("Gram eigenvalues")
    rng = np.random.default_rng(11)
    low_rank = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 12))
    cases = {
        "wide 6x20 (N < d)": rng.standard_normal((6, 20)),
        "tall 50x8 (N > d)": rng.standard_normal((50, 8)),
        "rank 2 plus offset 30x12": low_rank + 3.0,
        "constant rows 5x4": np.ones((5, 4)),
    }
    for name, x in cases.items():
        expected = np.asarray(spectra.gram_eigenvalues(x.copy()), dtype=np.float64)
        got, error = _call(student_fn, x.copy())
        if got is not None and got.shape == expected.shape:
            # Eigen-solvers round differently; compare on the scale of the top eigenvalue.
            scale = max(float(expected[0]), 1.0)
            got = np.where(np.abs(got - expected) <= 1e-9 * scale, expected, got)
        report.cases.append(Case(name, expected, got, error))
    return _print(report)


def length_bias(
    n_rows: tuple[int, ...] = (4, 8, 16, 32, 64, 128), d: int = 64, draws: int = 20, seed: int = 0
) -> dict[int, float]:
    """Mean effective rank of iid Gaussian N×d activations for each N (no structure at all).

    The sequence-length exercise: a metric that grows with N on pure noise will call a short
    decode 'collapsed' whatever the model does, so raw comparisons need a length control.
    """
    rng = np.random.default_rng(seed)
    out: dict[int, float] = {}
    for n in n_rows:
        x = rng.standard_normal((draws, n, d))
        eigs = np.asarray(spectra.gram_eigenvalues(x))
        out[n] = float(np.mean(spectra.effective_rank(eigs)))
    return out


#: Length-control checker: averages over seeded Gaussian draws agree within 3 %. With T0 = 12
#: rows in d = 64 the effective rank of one draw has sd 1.6 % (measured over 2000 draws), so a
#: 20-draw mean varies by about 0.35 %; the uncontrolled metric on 8·T0 rows is 4.5× larger.
LENGTH_RTOL = 0.03


def check_length_control(student_fn: Callable[[np.ndarray, int], float]) -> CheckReport:
    """Check `student_fn(X, t0) -> effective rank of X measured at t0 rows` (the matched_T idea).

    Any scheme that measures every matrix at t0 rows passes: with exactly t0 rows it must equal
    the plain effective rank of the covariance; with fewer it must return NaN (no control can
    invent rows); on pure Gaussian noise its average must not grow with the row count.
    """
    report = CheckReport("sequence-length control")
    rng = np.random.default_rng(5)
    t0, d, draws = 12, 64, 20

    def reference(x: np.ndarray) -> np.ndarray:
        return np.asarray(spectra.effective_rank(np.asarray(spectra.gram_eigenvalues(x))))

    exact = rng.standard_normal((t0, d))
    got, error = _call(student_fn, exact.copy(), t0)
    report.cases.append(Case(f"exactly t0 = {t0} rows", reference(exact), got, error))
    short = rng.standard_normal((t0 - 4, d))
    got, error = _call(student_fn, short.copy(), t0)
    report.cases.append(Case(f"{t0 - 4} rows < t0: NaN", np.array(np.nan), got, error))
    noise_level = float(np.mean(reference(rng.standard_normal((200, t0, d)))))
    for n in (2 * t0, 4 * t0, 8 * t0):
        values = []
        for x in rng.standard_normal((draws, n, d)):
            got, error = _call(student_fn, x, t0)
            if got is None:
                break
            values.append(float(got))
        mean = np.array(np.mean(values)) if not error else None
        name = f"Gaussian noise, {n} rows: mean over {draws} draws stays at the t0 level"
        report.cases.append(Case(name, np.array(noise_level), mean, error, LENGTH_RTOL))
    return _print(report)
