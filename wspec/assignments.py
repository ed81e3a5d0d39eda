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
exceptions are the checkers whose answers involve the student's own random draws: the
length control compares averages within 3 % (`check_length_control`), the cluster bootstrap
compares interval widths within 25 % and coverage within ±0.07 (`check_cluster_bootstrap`).
The Kirchhoff-index checker compares with closed forms (complete graph, path, star, cycle).
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
    atol: float = ATOL

    @property
    def ok(self) -> bool:
        if self.error or self.got is None:
            return False
        got = np.asarray(self.got, dtype=np.float64)
        if got.shape != self.expected.shape:
            return False
        return bool(np.allclose(got, self.expected, rtol=self.rtol, atol=self.atol, equal_nan=True))


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
            if c.atol != ATOL:
                tol = f" (within ±{c.atol:g})"
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


def _graphs() -> dict[str, tuple[np.ndarray, float]]:
    """Adjacency matrices with a known Kirchhoff index: the closed forms for complete graphs,
    paths, stars and cycles, a weighted graph (wspec's reference on its Laplacian spectrum)
    and a disconnected graph (infinite resistance between its parts: NaN)."""

    def path(n: int) -> np.ndarray:
        return np.eye(n, k=1) + np.eye(n, k=-1)

    def star(n: int) -> np.ndarray:
        a = np.zeros((n, n))
        a[0, 1:] = a[1:, 0] = 1.0
        return a

    cycle = path(8)
    cycle[0, -1] = cycle[-1, 0] = 1.0
    rng = np.random.default_rng(3)
    weights = np.triu(rng.uniform(0.1, 1.0, (10, 10)), 1)
    weights += weights.T
    laplacian = np.diag(weights.sum(axis=1)) - weights
    weighted = float(spectra.kirchhoff_index(np.linalg.eigvalsh(laplacian)))
    two_edges = np.zeros((4, 4))
    two_edges[0, 1] = two_edges[1, 0] = two_edges[2, 3] = two_edges[3, 2] = 1.0
    return {
        "complete K_5: n − 1": (np.ones((5, 5)) - np.eye(5), 4.0),
        "complete K_12: n − 1": (np.ones((12, 12)) - np.eye(12), 11.0),
        "path P_6: (n³ − n)/6": (path(6), (6**3 - 6) / 6),
        "path P_12: (n³ − n)/6": (path(12), (12**3 - 12) / 6),
        "star S_9: (n − 1)²": (star(9), 8.0**2),
        "cycle C_8: (n³ − n)/12": (cycle, (8**3 - 8) / 12),
        "weighted complete graph, 10 nodes": (weights, weighted),
        "two separate edges: disconnected, NaN": (two_edges, float("nan")),
    }


def check_kirchhoff_index(student_fn: Callable[[np.ndarray], float]) -> CheckReport:
    """Check `student_fn(A) -> N · Σ 1/μ_i` over the nonzero Laplacian eigenvalues of the graph
    with adjacency matrix A (NaN if disconnected) on graphs whose index has a closed form."""
    report = CheckReport("Kirchhoff index")
    for name, (adjacency, value) in _graphs().items():
        got, error = _call(student_fn, adjacency.copy())
        report.cases.append(Case(name, np.array(value), got, error))
    return _print(report)


#: Cluster-bootstrap checker: 12 clusters of 8 values per group, cluster sd 1 and within-cluster
#: sd 0.3 (intra-cluster correlation 0.92), true difference 0.5, 200 seeded data sets.
#: Measured over 400 data sets (n_boot 1000): wspec's cluster bootstrap covers 0.94 of them, a
#: bootstrap of single values 0.52 (its interval is a third as wide). With 200 data sets a
#: correct answer's coverage has sd 0.017 from its own random draws, so ±0.07 around 0.95
#: fails a correct answer about once in a thousand seeds and passes no iid bootstrap.
COVERAGE_SETS = 200
COVERAGE_ATOL = 0.07
#: Interval width against wspec's (n_boot 2000) on single data sets: within 25 %; a correct
#: percentile interval from 1000 replicates varies by a few %, the iid one is 65 % narrower.
WIDTH_RTOL = 0.25
_TRUE_DIFF = 0.5


def clustered_groups(
    rng: np.random.Generator, clusters: int = 12, size: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two groups of `clusters` clusters × `size` values with a shared effect per cluster.

    Returns (a, b, clusters_a, clusters_b); mean(b) − mean(a) has expectation 0.5. Values of a
    cluster move together (intra-cluster correlation 0.92), so the independent unit is the
    cluster: a bootstrap of single values thinks it has 8× more information than it has.
    """
    ca = np.repeat(np.arange(clusters), size)
    cb = ca + clusters
    a = rng.normal(0.0, 1.0, clusters)[ca] + rng.normal(0.0, 0.3, ca.size)
    b = _TRUE_DIFF + rng.normal(0.0, 1.0, clusters)[ca] + rng.normal(0.0, 0.3, ca.size)
    return a, b, ca, cb


def check_cluster_bootstrap(student_fn: Callable[..., tuple[float, float]]) -> CheckReport:
    """Check `student_fn(a, b, clusters_a, clusters_b, n_boot, seed) -> (low, high)`, a 95 %
    interval for mean(b) − mean(a) that resamples whole clusters, by its width against
    `wspec.stats.bootstrap_delta` and its coverage of the true difference on data generated
    here."""
    from wspec import stats

    report = CheckReport("cluster bootstrap")
    rng = np.random.default_rng(29)
    for i in range(3):
        a, b, ca, cb = clustered_groups(rng)
        ref = stats.bootstrap_delta(a, b, base_clusters=ca, other_clusters=cb, n_boot=2000)
        got, error = _call(student_fn, a, b, ca, cb, 1000, i)
        width = None if got is None or got.shape != (2,) else np.array(got[1] - got[0])
        name = f"interval width, data set {i + 1}"
        report.cases.append(
            Case(name, np.array(ref.ci_high - ref.ci_low), width, error, WIDTH_RTOL)
        )
    hits, error = 0, ""
    for seed in range(COVERAGE_SETS):
        got, error = _call(student_fn, *clustered_groups(rng), 1000, seed)
        if got is None or got.shape != (2,):
            error = error or f"returned shape {None if got is None else got.shape}, not (low, high)"
            break
        hits += int(got[0] <= _TRUE_DIFF <= got[1])
    name = f"coverage of the true difference over {COVERAGE_SETS} data sets"
    coverage = None if error else np.array(hits / COVERAGE_SETS)
    report.cases.append(Case(name, np.array(0.95), coverage, error, 0.0, COVERAGE_ATOL))
    return _print(report)
