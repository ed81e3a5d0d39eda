"""The exercise checkers accept independent correct answers and reject the usual mistakes.

Correct answers here are written with numpy alone (not wspec.spectra), so a pass means two
independent implementations agree within the checkers' tolerance (rtol 1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from wspec import assignments


def effective_rank(eigs):
    lam = np.asarray(eigs, dtype=np.float64)
    p = lam / lam.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(eigs):
    lam = np.asarray(eigs, dtype=np.float64)
    return float(lam.sum() ** 2 / (lam**2).sum())


def spectral_slope(eigs, k):
    lam = np.sort(np.asarray(eigs, dtype=np.float64))[::-1][:k]
    return float(-np.polyfit(np.log(np.arange(1, k + 1)), np.log(lam), 1)[0])


def gram_eigenvalues(x):
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    s = np.linalg.svd(xc, compute_uv=False) ** 2 / (len(x) - 1)
    out = np.zeros(min(x.shape))
    out[: s.size] = s
    return out


CORRECT = [
    (assignments.check_effective_rank, effective_rank),
    (assignments.check_participation_ratio, participation_ratio),
    (assignments.check_spectral_slope, spectral_slope),
    (assignments.check_gram_eigenvalues, gram_eigenvalues),
]


@pytest.mark.parametrize(("checker", "answer"), CORRECT)
def test_checkers_accept_correct_answers(checker, answer, capsys) -> None:
    report = checker(answer)
    assert report.passed
    assert "PASS" in capsys.readouterr().out


WRONG = [
    (
        assignments.check_effective_rank,
        lambda e: float(
            np.exp(-np.nansum(np.asarray(e) / np.sum(e) * np.log2(np.asarray(e) / np.sum(e))))
        ),
    ),  # log base 2
    (assignments.check_effective_rank, lambda e: float(np.count_nonzero(e))),  # plain rank
    (assignments.check_participation_ratio, lambda e: float(np.sum(e) / np.max(e))),  # stable rank
    (assignments.check_spectral_slope, lambda e, k: -spectral_slope(e, k)),  # sign flipped
    (assignments.check_spectral_slope, lambda e, k: spectral_slope(e, len(e))),  # ignores k
    (
        assignments.check_gram_eigenvalues,  # no centring
        lambda x: np.clip(
            np.linalg.svd(np.asarray(x), compute_uv=False) ** 2 / (len(x) - 1), 0, None
        ),
    ),
    (
        assignments.check_gram_eigenvalues,  # singular values instead of eigenvalues
        lambda x: np.linalg.svd(np.asarray(x) - np.mean(x, axis=0), compute_uv=False),
    ),
]


@pytest.mark.parametrize(("checker", "answer"), WRONG)
def test_checkers_reject_wrong_answers(checker, answer, capsys) -> None:
    with np.errstate(divide="ignore", invalid="ignore"):  # log2(0) in the base-2 answer
        report = checker(answer)
    assert not report.passed
    out = capsys.readouterr().out
    assert "FAIL" in out and "[XX]" in out


def test_a_raising_answer_is_reported_not_raised(capsys) -> None:
    def broken(eigs):
        raise ZeroDivisionError("oops")

    report = assignments.check_effective_rank(broken)
    assert not report.passed
    assert "raised ZeroDivisionError: oops" in capsys.readouterr().out


def test_length_bias_grows_with_rows_on_pure_noise() -> None:
    bias = assignments.length_bias(n_rows=(4, 16, 64), d=64, draws=10, seed=1)
    values = list(bias.values())
    # Centred, N rows have at most N - 1 nonzero eigenvalues: the ceiling is exact.
    assert all(v <= n - 1 + 1e-9 for n, v in bias.items())
    assert values[0] < values[1] < values[2]
    assert bias == assignments.length_bias(n_rows=(4, 16, 64), d=64, draws=10, seed=1)


def matched_effective_rank(x, t0, subsets=8, seed=0):
    """A correct length control: mean effective rank over random subsets of t0 rows."""
    if len(x) < t0:
        return float("nan")
    rng = np.random.default_rng(seed)
    return float(
        np.mean(
            [
                effective_rank(gram_eigenvalues(x[rng.choice(len(x), t0, replace=False)]))
                for _ in range(subsets)
            ]
        )
    )


def test_length_control_checker_accepts_matched_rows_and_rejects_raw_rank(capsys):
    assert assignments.check_length_control(matched_effective_rank).passed
    raw = assignments.check_length_control(lambda x, t0: effective_rank(gram_eigenvalues(x)))
    assert not raw.passed
    # the raw metric agrees at exactly t0 rows and fails every longer or shorter case
    assert [c.ok for c in raw.cases] == [True, False, False, False, False]
    first_rows = assignments.check_length_control(
        lambda x, t0: effective_rank(gram_eigenvalues(x[:t0])) if len(x) >= t0 else np.nan
    )
    assert first_rows.passed  # the first t0 rows are also a valid (budget-style) control
    assert "sequence-length control: FAIL" in capsys.readouterr().out


def kirchhoff_index(adjacency):
    """Independent answer: N · trace of the Laplacian's pseudo-inverse (no eigen-solver)."""
    a = np.asarray(adjacency, dtype=np.float64)
    lap = np.diag(a.sum(axis=1)) - a
    if np.linalg.matrix_rank(lap) != len(a) - 1:
        return float("nan")
    return float(len(a) * np.trace(np.linalg.pinv(lap)))


def _laplacian_sum(adjacency, n_factor=True, drop_zero=True):
    a = np.asarray(adjacency, dtype=np.float64)
    mu = np.linalg.eigvalsh(np.diag(a.sum(axis=1)) - a)
    mu = mu[mu > 1e-9 * mu.max()] if drop_zero else mu
    return float((len(a) if n_factor else 1) * np.sum(1 / mu))


def test_kirchhoff_checker_accepts_pseudo_inverse_and_rejects_slips(capsys) -> None:
    assert assignments.check_kirchhoff_index(kirchhoff_index).passed
    no_n = assignments.check_kirchhoff_index(lambda a: _laplacian_sum(a, n_factor=False))
    assert not no_n.passed  # forgot the factor N
    # the eigenvalue rule without a connectivity test: right on connected graphs only
    no_nan = assignments.check_kirchhoff_index(_laplacian_sum)
    assert [c.ok for c in no_nan.cases] == [True] * (len(no_nan.cases) - 1) + [False]
    out = capsys.readouterr().out
    assert "[XX] two separate edges: disconnected, NaN" in out


def test_kirchhoff_checker_closed_forms_match_wspec_reference() -> None:
    """The checker's closed forms are what wspec.spectra.kirchhoff_index gives (rtol 1e-9:
    an 12-node eigen-solve in float64 is exact to ~1e-13)."""
    from wspec.spectra import kirchhoff_index as reference

    for name, (adjacency, value) in assignments._graphs().items():
        mu = np.linalg.eigvalsh(np.diag(adjacency.sum(axis=1)) - adjacency)
        np.testing.assert_allclose(reference(mu), value, rtol=1e-9, err_msg=name)


def cluster_bootstrap_ci(a, b, clusters_a, clusters_b, n_boot, seed):
    """Independent answer: multinomial cluster counts per replicate (not index draws), with
    other random numbers than the chapter's or wspec's."""
    rng = np.random.default_rng(seed + 12345)
    means = []
    for x, labels in ((a, clusters_a), (b, clusters_b)):
        x, labels = np.asarray(x, dtype=np.float64), np.asarray(labels)
        ids = np.unique(labels)
        member = labels[None, :] == ids[:, None]  # cluster × value
        counts = rng.multinomial(ids.size, np.full(ids.size, 1 / ids.size), size=n_boot)
        means.append((counts @ (member @ x)) / (counts @ member.sum(axis=1)))
    return tuple(np.quantile(means[1] - means[0], [0.025, 0.975]))


def test_cluster_bootstrap_checker_accepts_cluster_draws_rejects_single_values(capsys) -> None:
    assert assignments.check_cluster_bootstrap(cluster_bootstrap_ci).passed
    single = assignments.check_cluster_bootstrap(
        lambda a, b, ca, cb, n, s: cluster_bootstrap_ci(
            a, b, np.arange(a.size), np.arange(b.size), n, s
        )
    )
    assert not any(c.ok for c in single.cases)  # too narrow everywhere, coverage far below 0.95
    flipped = assignments.check_cluster_bootstrap(
        lambda a, b, ca, cb, n, s: tuple(-v for v in cluster_bootstrap_ci(b, a, cb, ca, n, s))[::-1]
    )
    assert flipped.passed  # mean(a) − mean(b), negated: the same interval
    wrong_sign = assignments.check_cluster_bootstrap(
        lambda a, b, ca, cb, n, s: cluster_bootstrap_ci(b, a, cb, ca, n, s)
    )
    assert not wrong_sign.cases[-1].ok  # covers −0.5, not the true difference
    assert "coverage of the true difference" in capsys.readouterr().out
