"""The theorem's inequalities as checkable statements on concrete layer chains.

`wspec.theory` proves the identities; the theorem's content is three *inequalities*. For a
chain F_j = P_j + E_j, P_j = sigma_j u_j v_j^T (j = 1..L), injections G_0..G_L and
J_L = sum_k A_{L,k} G_k, write the decomposition J_L = u_L Psi^T + G_L + R with

    Psi^T = sum_{k<L} c_k v_{k+1}^T G_k,   c_k = prod_{j>k} sigma_j * prod_{k<j<L} kappa_j,

(the rank-one part of the chain, `theory.rank_one_product`) and R the rest. Then:

(B1) aligned term: if for a unit psi_0 and a gamma in (0, 1] every k < L satisfies
     projection     ||v_{k+1}^T G_k|| >= gamma ||G_k||_F,
     directionality |(v_{k+1}^T G_k) psi_0| >= ||v_{k+1}^T G_k|| / sqrt 2,
     sign           c_k (v_{k+1}^T G_k) psi_0 all of one sign,
     then ||Psi|| >= (gamma / sqrt 2) sum_{k<L} |c_k| ||G_k||_F =: `psi_bound`.
(B2) remainder: if ||E_j||_2 <= eta sigma_j, then
     ||R||_2 <= sum_{k<L} (prod_{j>k} sigma_j (1+eta) - prod_{j>k} sigma_j) ||G_k||_2
     =: `remainder_bound` (no coherence condition needed).
(B3) relative noise: under both, ||R|| / ||u_L Psi^T|| <= sqrt 2 xi_L / gamma with the
     project's definition (the paper names xi_L without defining it)
     xi_L := sum_k (prod sigma_j(1+eta) - prod sigma_j) ||G_k||_F / sum_k |c_k| ||G_k||_F,
     which for uniform layers and equal ||G_k||_F is `theory.spectral_purity`.

Ω(γL) growth is (B1) plus |c_k| >= sigma_L whenever every rho_j = sigma_j kappa_j >= 1 for
j < L (since |c_k| = sigma_L prod_{k<j<L} |rho_j|). This module builds random chains that meet
the conditions (`coherent_chain`) and chains that break exactly one (`break_condition`), so the
tests can show each bound holding and each condition being needed, or not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

CONDITIONS: tuple[str, ...] = (
    "projection",
    "directionality",
    "sign",
    "perturbation",
    "alignment",
    "gain",
)
"""Conditions that `break_condition` can violate one at a time."""

_SLACK = 1e-9
"""Relative float64 slack for checking a condition at its boundary (e.g. gamma_k = gamma)."""


@dataclass(frozen=True)
class Chain:
    """One instance: layers P_j + E_j (j = 1..L, list index j-1), injections G_0..G_L, psi_0."""

    sigma: np.ndarray  # (L,) gains sigma_j
    u: np.ndarray  # (L, d) output directions u_j
    v: np.ndarray  # (L, d) input directions v_j
    E: np.ndarray  # (L, d, d) perturbations E_j
    G: np.ndarray  # (L+1, d, p) injections G_0..G_L
    psi0: np.ndarray  # (p,) unit input direction

    @property
    def depth(self) -> int:
        return len(self.sigma)

    def layers(self) -> np.ndarray:
        """F_j = sigma_j u_j v_j^T + E_j, shape (L, d, d)."""
        return self.sigma[:, None, None] * self.u[:, :, None] * self.v[:, None, :] + self.E


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def _orthogonal_unit(rng: np.random.Generator, to: np.ndarray) -> np.ndarray:
    w = rng.standard_normal(to.shape[0])
    return _unit(w - (w @ to) * to)


def jacobian(chain: Chain) -> np.ndarray:
    """J_L = sum_{k=0}^{L} F_L ... F_{k+1} G_k (Horner form: J <- F_j J + G_j)."""
    F = chain.layers()
    J = chain.G[0].copy()
    for j in range(chain.depth):
        J = F[j] @ J + chain.G[j + 1]
    return J


def kappas(chain: Chain) -> np.ndarray:
    """kappa_j = v_{j+1}^T u_j for j = 1..L-1."""
    return np.einsum("jd,jd->j", chain.v[1:], chain.u[:-1])


def aligned_weights(chain: Chain) -> np.ndarray:
    """c_k = prod_{j=k+1}^{L} sigma_j prod_{j=k+1}^{L-1} kappa_j for k = 0..L-1."""
    L, kap = chain.depth, kappas(chain)
    return np.array([np.prod(chain.sigma[k:]) * np.prod(kap[k:]) for k in range(L)])


def psi(chain: Chain) -> np.ndarray:
    """Psi = sum_{k<L} c_k G_k^T v_{k+1}, the input direction of the aligned term."""
    c = aligned_weights(chain)
    return sum(c[k] * chain.G[k].T @ chain.v[k] for k in range(chain.depth))


def remainder(chain: Chain) -> np.ndarray:
    """R = J_L - u_L Psi^T - G_L."""
    return jacobian(chain) - np.outer(chain.u[-1], psi(chain)) - chain.G[-1]


def _envelope(chain: Chain, eta: float, norm: str) -> float:
    s = chain.sigma
    g = [np.linalg.norm(chain.G[k], norm) for k in range(chain.depth)]
    return float(sum((np.prod(s[k:] * (1 + eta)) - np.prod(s[k:])) * g[k] for k in range(len(g))))


def psi_bound(chain: Chain, gamma: float) -> float:
    """(B1): (gamma / sqrt 2) sum_{k<L} |c_k| ||G_k||_F."""
    c = aligned_weights(chain)
    g = np.array([np.linalg.norm(chain.G[k], "fro") for k in range(chain.depth)])
    return float(gamma / np.sqrt(2) * np.sum(np.abs(c) * g))


def remainder_bound(chain: Chain, eta: float) -> float:
    """(B2): sum_{k<L} (prod_{j>k} sigma_j (1+eta) - prod_{j>k} sigma_j) ||G_k||_2."""
    return _envelope(chain, eta, 2)


def relative_noise(chain: Chain, eta: float) -> float:
    """xi_L (B3): Frobenius remainder envelope over the aligned envelope sum |c_k| ||G_k||_F."""
    return _envelope(chain, eta, "fro") / psi_bound(chain, np.sqrt(2))


def condition_values(chain: Chain) -> dict[str, np.ndarray]:
    """Per-k measured coherence (gamma_k, direction ratio, signed term) and per-j eta_j."""
    c = aligned_weights(chain)
    a = np.stack([chain.G[k].T @ chain.v[k] for k in range(chain.depth)])  # v_{k+1}^T G_k
    g = np.array([np.linalg.norm(chain.G[k], "fro") for k in range(chain.depth)])
    an = np.linalg.norm(a, axis=1)
    return {
        "gamma_k": an / g,
        "direction_k": np.abs(a @ chain.psi0) / an,
        "signed_k": c * (a @ chain.psi0),
        "eta_j": np.linalg.norm(chain.E, 2, axis=(1, 2)) / chain.sigma,
    }


def conditions_hold(chain: Chain, gamma: float, eta: float) -> dict[str, bool]:
    """Which of projection (gamma), directionality, sign and perturbation (eta) hold."""
    val = condition_values(chain)
    signed = val["signed_k"]
    return {
        "projection": bool(np.all(val["gamma_k"] >= gamma * (1 - _SLACK))),
        "directionality": bool(np.all(val["direction_k"] >= (1 - _SLACK) / np.sqrt(2))),
        "sign": bool(np.all(signed > 0) or np.all(signed < 0)),
        "perturbation": bool(np.all(val["eta_j"] <= eta * (1 + _SLACK))),
    }


def coherent_chain(
    rng: np.random.Generator,
    depth: int,
    dim: int,
    p: int,
    *,
    sigma: tuple[float, float] = (0.5, 2.0),
    kappa: tuple[float, float] = (-1.0, 1.0),
    gamma: float = 0.5,
    eta: float = 0.2,
) -> Chain:
    """A random chain meeting all four conditions with the given gamma and eta.

    Gains and alignments are drawn uniformly from the ranges (kappa may be negative), the
    perturbation size eta_j uniformly in [0, eta], each layer's coherence gamma_k uniformly in
    [gamma, 1] and its angle to psi_0 uniformly in [0, 45 degrees]. v_{k+1}^T G_k = a_k^T is
    set directly, with the sign of c_k, and the rest of G_k lies orthogonal to v_{k+1}.
    """
    if dim < 2 or p < 2:
        raise ValueError("coherent_chain needs dim >= 2 and p >= 2 (directions need room)")
    sig = rng.uniform(*sigma, size=depth)
    u = np.stack([_unit(rng.standard_normal(dim)) for _ in range(depth)])
    v = [_unit(rng.standard_normal(dim))]
    for j in range(depth - 1):
        kap = rng.uniform(*kappa)
        w = _orthogonal_unit(rng, u[j])
        v.append(kap * u[j] + np.sqrt(max(0.0, 1.0 - kap**2)) * w)
    v = np.stack(v)
    E = rng.standard_normal((depth, dim, dim))
    E *= (rng.uniform(0, eta, size=depth) * sig / np.linalg.norm(E, 2, axis=(1, 2)))[:, None, None]
    psi0 = _unit(rng.standard_normal(p))
    chain = Chain(sig, u, v, E, np.zeros((depth + 1, dim, p)), psi0)
    c = aligned_weights(chain)
    G = rng.standard_normal((depth + 1, dim, p))  # G_L (k = L) stays unconstrained
    for k in range(depth):
        theta = rng.uniform(0, np.pi / 4)
        a = np.sign(c[k]) * (np.cos(theta) * psi0 + np.sin(theta) * _orthogonal_unit(rng, psi0))
        a *= rng.uniform(0.5, 2.0)
        B = rng.standard_normal((dim, p))
        B -= np.outer(v[k], v[k] @ B)
        g_k = rng.uniform(gamma, 1.0)
        B *= np.linalg.norm(a) * np.sqrt(1 / g_k**2 - 1) / np.linalg.norm(B)
        G[k] = np.outer(v[k], a) + B
    return replace(chain, G=G)


def omega_bound(chain: Chain, gamma: float) -> float:
    """Omega(gamma L) form of (B1): (gamma / sqrt 2) g sigma_L L, g = min_{k<L} ||G_k||_F.

    Valid when (B1)'s conditions hold and every rho_j = sigma_j kappa_j >= 1 (j < L), since
    then |c_k| = sigma_L prod_{k<j<L} |rho_j| >= sigma_L; no separate alignment floor is needed.
    """
    g = min(np.linalg.norm(chain.G[k], "fro") for k in range(chain.depth))
    return float(gamma / np.sqrt(2) * g * chain.sigma[-1] * chain.depth)


def break_condition(chain: Chain, condition: str, gamma: float, eta: float) -> Chain:
    """The same chain with exactly one condition of `CONDITIONS` violated (others kept).

    Injections are rebuilt as G_k = v_{k+1} a_k^T (gamma_k = 1) except under "projection":
    sign: c_k a_k = (-1)^k psi_0, so the terms cancel in Psi;
    directionality: c_k a_k = cos(80 deg) psi_0 + (-1)^k sin(80 deg) w, w orthogonal to psi_0
    (the psi_0 parts share one sign, the large orthogonal parts cancel);
    projection: the part of G_k orthogonal to v_{k+1} is inflated so gamma_k = gamma / 4;
    perturbation: kappa_j = 1 and E_j = 4 eta P_j, the worst case for (B2) with 4 eta;
    alignment: kappa_j = 0.3 with gains raised so rho_j >= 1 (tests Omega(gamma L));
    gain: kappa_j = 1 and sigma_j = 1/2 for j < L, so rho_j = 1/2 < 1 (tests Omega(gamma L)).
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose one of {', '.join(CONDITIONS)}")
    rng = np.random.default_rng(0)
    L = chain.depth
    if condition in ("perturbation", "alignment", "gain"):
        kap = 0.3 if condition == "alignment" else 1.0
        v = [chain.v[0]]
        for j in range(L - 1):
            w = _orthogonal_unit(rng, chain.u[j])
            v.append(kap * chain.u[j] + np.sqrt(1 - kap**2) * w)
        sig = {
            "perturbation": chain.sigma,
            "alignment": np.maximum(chain.sigma, 1 / kap),
            "gain": np.r_[np.full(L - 1, 0.5), chain.sigma[-1]],
        }[condition]
        out = replace(chain, sigma=sig, v=np.stack(v))
        P = out.layers() - out.E
        E = (
            4 * eta * P
            if condition == "perturbation"
            else out.E * (sig / chain.sigma)[:, None, None]
        )
        out = replace(out, E=E)
        return _rebuild(out, lambda k, c: np.sign(c) * out.psi0, gamma=1.0, rng=rng)
    if condition == "sign":
        return _rebuild(chain, lambda k, c: (-1) ** k * chain.psi0 / c, gamma=1.0, rng=rng)
    if condition == "directionality":
        w = _orthogonal_unit(rng, chain.psi0)
        th = np.deg2rad(80)
        return _rebuild(
            chain,
            lambda k, c: (np.cos(th) * chain.psi0 + (-1) ** k * np.sin(th) * w) / c,
            gamma=1.0,
            rng=rng,
        )
    return _rebuild(chain, lambda k, c: chain.G[k].T @ chain.v[k], gamma=gamma / 4, rng=rng)


def _rebuild(chain: Chain, a_of, gamma: float, rng: np.random.Generator) -> Chain:
    """G_k = v_{k+1} a_k^T + B_k with a_k = a_of(k, c_k) and B_k orthogonal to v_{k+1},
    sized so that gamma_k = gamma exactly (B_k = 0 when gamma = 1)."""
    c = aligned_weights(chain)
    G = chain.G.copy()
    for k in range(chain.depth):
        a = a_of(k, c[k])
        B = rng.standard_normal(G[k].shape)
        B -= np.outer(chain.v[k], chain.v[k] @ B)
        B *= np.linalg.norm(a) * np.sqrt(1 / gamma**2 - 1) / np.linalg.norm(B)
        G[k] = np.outer(chain.v[k], a) + B
    return replace(chain, G=G)


def _bound_of(condition: str) -> str:
    return {"perturbation": "B2", "alignment": "Omega", "gain": "Omega"}.get(condition, "B1")


def counterexample_table(base: Chain, gamma: float, eta: float) -> pd.DataFrame:
    """One row per condition: the chain breaking only it, the bound it threatens, and whether
    that bound still holds there (False = the condition is needed)."""
    rows = []
    for condition in CONDITIONS:
        broken = break_condition(base, condition, gamma, eta)
        bound = _bound_of(condition)
        if bound == "B2":
            actual, limit = np.linalg.norm(remainder(broken), 2), remainder_bound(broken, eta)
            holds = actual <= limit
        else:
            actual = np.linalg.norm(psi(broken))
            limit = psi_bound(broken, gamma) if bound == "B1" else omega_bound(broken, gamma)
            holds = actual >= limit
        rows.append(
            {
                "broken": condition,
                "bound": bound,
                "value": float(actual),
                "bound_value": float(limit),
                "bound_holds": bool(holds),
            }
        )
    return pd.DataFrame(rows)


def worst_ratios(n: int, gamma: float, eta: float, seed: int = 0) -> dict[str, float]:
    """Largest ratio of each side to its bound over n random chains meeting all conditions.

    Values <= 1 mean every case obeyed the bound: B1 is bound/||Psi||, B2 is ||R||/bound,
    B3 is (||R||/||Psi||)/(sqrt 2 xi_L/gamma). Depth 1-8, dim 3-10, p 2-5, by seed.
    """
    worst = {"B1": 0.0, "B2": 0.0, "B3": 0.0}
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        chain = coherent_chain(
            rng,
            int(rng.integers(1, 9)),
            int(rng.integers(3, 11)),
            int(rng.integers(2, 6)),
            gamma=gamma,
            eta=eta,
        )
        p_norm, r_norm = np.linalg.norm(psi(chain)), np.linalg.norm(remainder(chain), 2)
        b2 = remainder_bound(chain, eta)
        worst["B1"] = max(worst["B1"], psi_bound(chain, gamma) / p_norm)
        worst["B2"] = max(worst["B2"], r_norm / b2 if b2 > 0 else 0.0)
        b3 = np.sqrt(2) * relative_noise(chain, eta) / gamma
        worst["B3"] = max(worst["B3"], (r_norm / p_norm) / b3 if b3 > 0 else 0.0)
    return worst
