"""The theorem's three inequalities hold on random chains that meet their conditions, and each
condition is shown to be needed (or not) by a chain that breaks exactly that one."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from wspec import bounds

#: float64 slack for an inequality between two computed numbers: products of <= 8 matrices of
#: norm <= 2.4 and a few sums lose far less than 1e-9 relatively.
REL = 1e-9

PROPERTY = settings(derandomize=True, max_examples=300, deadline=None)


@st.composite
def chains(draw) -> tuple[bounds.Chain, float, float]:
    """A random chain meeting every condition of (B1)-(B3) with its gamma and eta."""
    gamma = draw(st.floats(0.05, 1.0))
    eta = draw(st.floats(0.0, 0.5))
    lo = draw(st.floats(0.3, 1.5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    chain = bounds.coherent_chain(
        rng,
        depth=draw(st.integers(1, 8)),
        dim=draw(st.integers(2, 10)),
        p=draw(st.integers(2, 6)),
        sigma=(lo, lo + draw(st.floats(0.0, 0.9))),
        gamma=gamma,
        eta=eta,
    )
    return chain, gamma, eta


@PROPERTY
@given(chains())
def test_instances_meet_the_conditions(case) -> None:
    """The generator is honest: every condition holds (else the properties below prove nothing)."""
    chain, gamma, eta = case
    assert all(bounds.conditions_hold(chain, gamma, eta).values())
    # J_L (Horner form) equals the chain-rule sum computed term by term
    F = chain.layers()
    slow = sum(
        np.linalg.multi_dot([*F[k:][::-1], chain.G[k]]) if k < chain.depth else chain.G[k]
        for k in range(chain.depth + 1)
    )
    # Two summation orders of the same float64 products: entries that cancel to near zero
    # differ by round-off of the largest entries (~1e-16 × depth), so the absolute tolerance
    # scales with them; BLAS threading may change the order between runs.
    scale = float(np.abs(slow).max())
    np.testing.assert_allclose(bounds.jacobian(chain), slow, rtol=1e-9, atol=1e-12 * scale)


@PROPERTY
@given(chains())
def test_aligned_term_bound(case) -> None:
    """(B1): ||Psi|| >= (gamma/sqrt 2) sum_k |c_k| ||G_k||_F."""
    chain, gamma, _ = case
    assert np.linalg.norm(bounds.psi(chain)) >= bounds.psi_bound(chain, gamma) * (1 - REL)


@PROPERTY
@given(chains())
def test_remainder_bound(case) -> None:
    """(B2): ||R||_2 <= sum_k (prod sigma_j(1+eta) - prod sigma_j) ||G_k||_2."""
    chain, _, eta = case
    r_norm = np.linalg.norm(bounds.remainder(chain), 2)
    assert r_norm <= bounds.remainder_bound(chain, eta) * (1 + REL) + 1e-12


@PROPERTY
@given(chains())
def test_relative_noise_bound(case) -> None:
    """(B3): ||R|| / ||u_L Psi^T|| <= sqrt 2 xi_L / gamma."""
    chain, gamma, eta = case
    ratio = np.linalg.norm(bounds.remainder(chain), 2) / np.linalg.norm(bounds.psi(chain))
    assert ratio <= np.sqrt(2) * bounds.relative_noise(chain, eta) / gamma * (1 + REL) + 1e-12


@PROPERTY
@given(chains())
def test_omega_gamma_L_when_rho_at_least_one(case) -> None:
    """Every rho_j >= 1 (gains raised to 1/|kappa_j|): ||Psi|| >= gamma g sigma_L L / sqrt 2."""
    chain, gamma, _ = case
    kap = np.abs(bounds.kappas(chain))
    assume(np.all(kap > 1e-3))  # kappa_j ~ 0 needs an unbounded gain for rho_j >= 1
    sig = chain.sigma.copy()
    sig[:-1] = np.maximum(sig[:-1], 1 / kap)
    # raising gains keeps the signs of c_k, so the coherence conditions still hold
    lifted = replace(chain, sigma=sig, E=chain.E * (sig / chain.sigma)[:, None, None])
    assert np.all(sig[:-1] * kap >= 1 - REL)
    assert all(bounds.conditions_hold(lifted, gamma, 1.0).values())
    assert np.linalg.norm(bounds.psi(lifted)) >= bounds.omega_bound(lifted, gamma) * (1 - REL)


BASE = bounds.coherent_chain(
    np.random.default_rng(1), depth=6, dim=8, p=4, sigma=(1.0, 2.0), gamma=0.5, eta=0.2
)


@pytest.mark.parametrize("condition", ["projection", "directionality", "sign"])
def test_each_coherence_condition_is_needed(condition: str) -> None:
    """Breaking exactly one coherence condition makes (B1) fail."""
    broken = bounds.break_condition(BASE, condition, gamma=0.5, eta=0.2)
    held = bounds.conditions_hold(broken, 0.5, 0.2)
    assert [k for k, ok in held.items() if not ok] == [condition]
    assert np.linalg.norm(bounds.psi(broken)) < bounds.psi_bound(broken, 0.5)


def test_perturbation_size_is_needed() -> None:
    """||E_j|| = 4 eta sigma_j aligned with P_j (kappa = 1): (B2) at eta fails."""
    broken = bounds.break_condition(BASE, "perturbation", gamma=0.5, eta=0.2)
    held = bounds.conditions_hold(broken, 0.5, 0.2)
    assert [k for k, ok in held.items() if not ok] == ["perturbation"]
    r_norm = np.linalg.norm(bounds.remainder(broken), 2)
    assert r_norm > bounds.remainder_bound(broken, 0.2)
    assert r_norm <= bounds.remainder_bound(broken, 0.8) * (1 + REL)  # its own size: attained
    assert r_norm == pytest.approx(bounds.remainder_bound(broken, 0.8), rel=1e-9)


def test_alignment_floor_is_not_needed_for_omega_gamma_L() -> None:
    """kappa_j = 0.3 (far from 1) with rho_j >= 1: Omega(gamma L) still holds (a finding)."""
    broken = bounds.break_condition(BASE, "alignment", gamma=0.5, eta=0.2)
    assert np.all(np.abs(bounds.kappas(broken)) == pytest.approx(0.3))
    assert all(bounds.conditions_hold(broken, 0.5, 0.2).values())
    assert np.linalg.norm(bounds.psi(broken)) >= bounds.omega_bound(broken, 0.5)


def test_gain_is_needed_for_omega_gamma_L() -> None:
    """rho_j = 1/2: the aligned term stays below the linear-in-L bound; deeper is worse."""
    for depth in (6, 24):
        base = bounds.coherent_chain(
            np.random.default_rng(1), depth=depth, dim=8, p=4, sigma=(1.0, 2.0), gamma=0.5
        )
        broken = bounds.break_condition(base, "gain", gamma=0.5, eta=0.2)
        assert all(bounds.conditions_hold(broken, 0.5, 0.2).values())
        ratio = np.linalg.norm(bounds.psi(broken)) / bounds.omega_bound(broken, 0.5)
        assert ratio < 4 * np.sqrt(2) / depth + 1e-9  # ||Psi|| < 2 sigma_L: bounded in L


def test_unknown_condition_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        bounds.break_condition(BASE, "purity", gamma=0.5, eta=0.2)


def _inf_norm(m: list[list[Fraction]]) -> Fraction:
    return max(sum(abs(x) for x in row) for row in m)


def _matmul(a: list[list[Fraction]], b: list[list[Fraction]]) -> list[list[Fraction]]:
    return [
        [sum(a[i][t] * b[t][j] for t in range(len(b))) for j in range(len(b[0]))]
        for i in range(len(a))
    ]


small_rationals = st.builds(Fraction, st.integers(-9, 9), st.integers(1, 4))


@settings(derandomize=True, max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.data())
def test_perturbation_lemma_in_exact_rationals(depth: int, d: int, data) -> None:
    """The lemma behind (B2), ||prod(P+E) - prod P|| <= prod(||P||+||E||) - prod ||P||, holds
    exactly for the max-row-sum norm (rational, submultiplicative) on rational matrices."""
    mat = st.lists(st.lists(small_rationals, min_size=d, max_size=d), min_size=d, max_size=d)
    P = [data.draw(mat) for _ in range(depth)]
    E = [data.draw(mat) for _ in range(depth)]
    full = clean = [[Fraction(int(i == j)) for j in range(d)] for i in range(d)]
    for p, e in zip(P, E, strict=True):
        pe = [[p[i][j] + e[i][j] for j in range(d)] for i in range(d)]
        full, clean = _matmul(pe, full), _matmul(p, clean)
    gap = _inf_norm([[full[i][j] - clean[i][j] for j in range(d)] for i in range(d)])
    bound = np.prod([_inf_norm(p) + _inf_norm(e) for p, e in zip(P, E, strict=True)]) - np.prod(
        [_inf_norm(p) for p in P]
    )
    assert gap <= bound


def test_counterexample_table_reads_the_findings() -> None:
    """Only the alignment floor is dispensable; deeper gain-breaking chains fail by more."""
    table = bounds.counterexample_table(BASE, gamma=0.5, eta=0.2).set_index("broken")
    assert list(table.index) == list(bounds.CONDITIONS)
    assert table["bound_holds"].to_dict() == {c: c == "alignment" for c in bounds.CONDITIONS}


def test_worst_ratios_stay_below_one() -> None:
    worst = bounds.worst_ratios(60, gamma=0.3, eta=0.3, seed=5)
    assert set(worst) == {"B1", "B2", "B3"}
    assert all(0 < w <= 1 + REL for w in worst.values())
