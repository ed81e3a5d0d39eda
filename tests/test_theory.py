"""Every identity of the Spectral Sensitivity Theorem holds exactly (SymPy), and wrong ones fail."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from wspec import theory


@pytest.mark.parametrize("ident", theory.identities(), ids=lambda i: i.key)
def test_identity_holds_exactly(ident: theory.Identity) -> None:
    assert ident.holds(), f"{ident.title}: lhs - rhs = {ident.difference()}"


def test_chain_rule_order_matters() -> None:
    """Negative control: A_{L,k} = F_L ... F_{k+1}; the reversed product is not the Jacobian."""
    ident = theory.chain_rule_matrix(depth=2, dim=2)
    # Rebuild the right side with the product reversed (F_{k+1} ... F_L) and expect failure.
    wrong = theory.Identity("wrong", "reversed", ident.lhs, ident.rhs.T)
    assert not wrong.holds()


def test_rank_one_product_without_alignment_is_wrong() -> None:
    """Dropping the alignment factors breaks the identity: alignment is load-bearing."""
    ident = theory.rank_one_product(n=3, dim=2)
    sig = sp.symbols("sigma1:4", positive=True)
    us = sp.Matrix(sp.symbols("u3_1:3"))
    vs = sp.Matrix(sp.symbols("v1_1:3"))
    wrong = theory.Identity("wrong", "no kappa", ident.lhs, sig[0] * sig[1] * sig[2] * us * vs.T)
    assert not wrong.holds()


def test_new_bound_identities_have_teeth() -> None:
    """Negative controls: dropping the '- prod p' term, or the kappa in xi_L, breaks them."""
    pe = theory.perturbation_expansion(depth=3)
    p = sp.symbols("p1:4", positive=True)
    assert not theory.Identity("wrong", "no -prod p", pe.lhs, pe.rhs + sp.Mul(*p)).holds()
    xi = theory.relative_noise_uniform()
    assert not theory.Identity("wrong", "no kappa", xi.lhs, xi.rhs / theory.kappa).holds()
    fac = theory.aligned_weight_factorisation(depth=3)
    assert not theory.Identity("wrong", "all sigmas", fac.lhs, fac.rhs * fac.rhs.args[0]).holds()


def test_supercritical_coefficients_nonnegative() -> None:
    """S_L(1+t) - L has non-negative coefficients and no constant term: S_L(rho) >= L."""
    for depth in (2, 5, 9):
        poly, ident = theory.supercritical_excess(depth)
        coeffs = poly.all_coeffs()
        assert ident.holds()
        assert all(c >= 0 for c in coeffs) and coeffs[-1] == 0
        assert poly.degree() == depth  # top term t^L: exponential growth once rho > 1


def test_geometric_sum_matches_explicit_sums() -> None:
    """Closed form equals the explicit sum for concrete depths and rho values (exact rationals)."""
    closed = theory.geometric_closed_form()
    for depth in range(1, 8):
        for r in (sp.Rational(1, 3), sp.Rational(7, 5), sp.Integer(3)):
            explicit = sum(r ** (depth - kk) for kk in range(depth))
            assert closed.subs({theory.rho: r, theory.L: depth}) == explicit


def test_psi_bound_linear_at_critical_point() -> None:
    """The Omega(gamma L) bound at rho = 1: doubling the depth doubles the bound."""
    bound = theory.psi_critical().rhs
    ratio = sp.simplify(bound.subs(theory.L, 2 * theory.L) / bound)
    assert ratio == 2


def test_dispersion_counterexample_grows_numerically() -> None:
    """rho = 0 yet ||F^L|| = (sigma eps)^{L/2} grows: rho < 1 alone does not give decay."""
    sig, eps = 4.0, 0.5  # relative perturbation eps/sigma = 0.125
    F = np.array([[0.0, sig], [eps, 0.0]])
    kappa = np.array([0.0, 1.0]) @ np.array([1.0, 0.0])  # v_{j+1}^T u_j with u=e1, v=e2
    assert sig * kappa == 0.0
    norms = [np.linalg.norm(np.linalg.matrix_power(F, n), 2) for n in (2, 8, 16)]
    # exact up to float rounding of small integers: (sigma*eps)^(n/2) = 2^(n/2)
    np.testing.assert_allclose(norms, [2.0, 16.0, 256.0], rtol=1e-12)


def test_noise_bound_holds_for_random_perturbations() -> None:
    """||prod(P+E) - prod P|| <= prod(||P||+||E||) - prod ||P|| on seeded random matrices."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        d, n = 6, 5
        Ps = [rng.standard_normal((d, d)) for _ in range(n)]
        Es = [0.1 * rng.standard_normal((d, d)) for _ in range(n)]
        full, clean = np.eye(d), np.eye(d)
        for P, E in zip(Ps, Es, strict=True):
            full, clean = (P + E) @ full, P @ clean
        lhs = np.linalg.norm(full - clean, 2)
        a = np.prod([np.linalg.norm(P, 2) for P in Ps])
        b = np.prod(
            [np.linalg.norm(P, 2) + np.linalg.norm(E, 2) for P, E in zip(Ps, Es, strict=True)]
        )
        assert lhs <= b - a + 1e-9  # 1e-9: float64 rounding of products of O(10) norms


def test_assumptions_table_is_complete() -> None:
    rows = theory.assumptions_table()
    keys = {r["key"] for r in rows}
    assert {"uniform_gain", "omega_gamma_L", "purity", "dispersion"} <= keys
    assert all(r["paper"] and r["proved_version"] and r["why"] for r in rows)


def _unit(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.standard_normal(d)
    return v / np.linalg.norm(v)


def _product(mats: list[np.ndarray]) -> np.ndarray:
    out = np.eye(mats[0].shape[0])
    for m in mats:  # F_L ... F_1: later layers multiply from the left
        out = m @ out
    return out


def test_perturbation_lemma_behind_the_noise_bound_holds_on_random_chains() -> None:
    """||prod(P_j + E_j) - prod P_j|| <= (sigma(1+eta))^L - sigma^L, the inequality that
    `noise_bound_sum` sums over injection depths, on seeded random rank-one chains with the
    largest allowed perturbation ||E_j|| = eta sigma; and it is attained when every E_j is
    aligned with P_j and kappa = 1. Tolerance: relative 1e-10 (float64 products of <= 8
    matrices of norm <= 2.6 lose far less)."""
    d, sig, et = 12, 1.3, 0.25
    worst = 0.0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        depth = 3 + seed % 6
        P, E = [], []
        for _ in range(depth):
            P.append(sig * np.outer(_unit(rng, d), _unit(rng, d)))
            noise = rng.standard_normal((d, d))
            E.append(et * sig * noise / np.linalg.norm(noise, 2))
        gap = np.linalg.norm(_product([p + e for p, e in zip(P, E, strict=True)]) - _product(P), 2)
        bound = (sig * (1 + et)) ** depth - sig**depth
        assert gap <= bound * (1 + 1e-10)
        worst = max(worst, gap / bound)
    assert worst < 1.0  # random perturbations stay below the worst case
    # tight case: kappa = 1 (v_{j+1} = u_j) and E_j = eta P_j
    rng = np.random.default_rng(0)
    u = [_unit(rng, d) for _ in range(6)]
    P = [sig * np.outer(u[j + 1], u[j]) for j in range(5)]
    gap = np.linalg.norm(_product([(1 + et) * p for p in P]) - _product(P), 2)
    assert gap == pytest.approx((sig * (1 + et)) ** 5 - sig**5, rel=1e-10)
