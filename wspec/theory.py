"""The Spectral Sensitivity Theorem, derived in SymPy so every step can be checked exactly.

The paper states its theorem in prose (Section 2). Here each step is an `Identity`
(left side, right side, the assumptions it needs) whose `holds()` does the exact check
`simplify(lhs - rhs) == 0`. The chapter prints these identities and the tests assert them.

Notation (one decoder position, depth L):
    h_0 = f_0(x),  h_l = f_l(h_{l-1}, x)           layer recursion, x = injected input
    F_l = df_l/dh  (state Jacobian),  G_l = df_l/dx  (injection Jacobian)
    J_L = dh_L/dx = sum_{k=0}^{L} A_{L,k} G_k,  A_{L,k} = F_L F_{L-1} ... F_{k+1}  (A_{L,L} = I)
    Rank-one-plus-perturbation model: F_j = sigma_j u_j v_j^T + E_j, ||u_j|| = ||v_j|| = 1,
    alignment kappa_j = v_{j+1}^T u_j, gain-alignment ratio rho_j = sigma_j kappa_j.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

# Shared symbols: positive where the theorem needs it, so SymPy can simplify powers.
L = sp.Symbol("L", integer=True, positive=True)
k = sp.Symbol("k", integer=True, nonnegative=True)
m = sp.Symbol("m", integer=True, positive=True)
sigma = sp.Symbol("sigma", positive=True)
kappa = sp.Symbol("kappa", positive=True)
rho = sp.Symbol("rho", positive=True)
gamma = sp.Symbol("gamma", positive=True)
eta = sp.Symbol("eta", positive=True)
g = sp.Symbol("g", positive=True)
t = sp.Symbol("t", positive=True)
tau = sp.Symbol("tau", positive=True)
eps = sp.Symbol("epsilon", positive=True)


@dataclass(frozen=True)
class Identity:
    """One exact statement `lhs == rhs` of the derivation, with what it assumes."""

    key: str
    title: str
    lhs: sp.Basic
    rhs: sp.Basic
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    def difference(self) -> sp.Basic:
        """`lhs - rhs`, simplified (a zero matrix or 0 when the identity holds)."""
        diff = self.lhs - self.rhs
        if isinstance(diff, sp.MatrixBase):
            return diff.applyfunc(lambda e: sp.simplify(sp.expand(e)))
        return sp.simplify(diff)

    def holds(self) -> bool:
        """Exact check: the simplified difference is identically zero."""
        diff = self.difference()
        if isinstance(diff, sp.MatrixBase):
            return diff.is_zero_matrix is True
        return diff == 0


@dataclass(frozen=True)
class Assumption:
    """A condition of the theorem: what the paper says and the version proved here."""

    key: str
    paper: str
    proved_version: str
    why: str


def rho_of(sig: sp.Expr = sigma, kap: sp.Expr = kappa) -> sp.Expr:
    """Gain-alignment ratio rho = sigma * kappa (the paper's lambda)."""
    return sig * kap


def _product(factors: list[sp.Basic], dim: int) -> sp.Basic:
    """Left-to-right matrix product F_L ... F_{k+1}, identity for an empty list."""
    out: sp.Basic = sp.eye(dim)
    for f in factors:
        out = out * f
    return out


def chain_rule_scalar(depth: int = 4) -> Identity:
    """dh_L/dx = sum_k A_{L,k} G_k for arbitrary (undefined) scalar layer functions f_l(h, x).

    Undefined SymPy functions make this the general statement, not an example: nothing
    about f_l is assumed except differentiability.
    """
    x = sp.Symbol("x")
    s, u = sp.symbols("s u")
    fs = [sp.Function(f"f_{i}") for i in range(depth + 1)]
    h = [fs[0](x)]
    for i in range(1, depth + 1):
        h.append(fs[i](h[-1], x))

    def at(expr: sp.Basic, layer: int) -> sp.Basic:
        return sp.Subs(expr, (s, u), (h[layer - 1], x))

    layers = range(1, depth + 1)
    state = [None] + [at(sp.Derivative(fs[i](s, u), s), i) for i in layers]
    inject = [sp.diff(h[0], x)] + [at(sp.Derivative(fs[i](s, u), u), i) for i in layers]
    rhs = sp.Add(*[sp.Mul(*state[kk + 1 :][::-1]) * inject[kk] for kk in range(depth + 1)])
    return Identity(
        key="chain_rule_scalar",
        title=f"Chain rule, scalar layers, L={depth}",
        lhs=sp.diff(h[-1], x).doit(),
        rhs=rhs.doit(),
        assumptions=("each f_l differentiable",),
    )


def chain_rule_matrix(depth: int = 3, dim: int = 2) -> Identity:
    """J_L = sum_k A_{L,k} G_k for arbitrary vector layers f_l: R^d x R^d -> R^d.

    The order of the product matters for matrices: A_{L,k} = F_L F_{L-1} ... F_{k+1}.
    """
    x = sp.Matrix(sp.symbols(f"x1:{dim + 1}"))
    S = sp.symbols(f"s1:{dim + 1}")
    T = sp.symbols(f"t1:{dim + 1}")
    fs = [[sp.Function(f"f_{i}_{c}") for c in range(dim)] for i in range(depth + 1)]
    h = [sp.Matrix([fs[0][c](*x) for c in range(dim)])]
    for i in range(1, depth + 1):
        h.append(sp.Matrix([fs[i][c](*h[-1], *x) for c in range(dim)]))

    def jac(layer: int, wrt: tuple[sp.Symbol, ...]) -> sp.Matrix:
        return sp.Matrix(
            dim,
            dim,
            lambda r, c: sp.Subs(
                sp.Derivative(fs[layer][r](*S, *T), wrt[c]), (*S, *T), (*h[layer - 1], *x)
            ),
        )

    state = {i: jac(i, S) for i in range(1, depth + 1)}
    inject = {0: h[0].jacobian(x), **{i: jac(i, T) for i in range(1, depth + 1)}}
    rhs = sp.zeros(dim, dim)
    for kk in range(depth + 1):
        rhs += _product([state[j] for j in range(depth, kk, -1)], dim) * inject[kk]
    return Identity(
        key="chain_rule_matrix",
        title=f"Chain rule, {dim}-dimensional layers, L={depth}",
        lhs=h[-1].jacobian(x).doit(),
        rhs=rhs.doit(),
        assumptions=("each f_l differentiable",),
    )


def rank_one_product(n: int = 3, dim: int = 3) -> Identity:
    """prod_j sigma_j u_j v_j^T = (prod sigma_j)(prod_{j<n} v_{j+1}^T u_j) u_n v_1^T.

    With symbolic vectors (not unit-normalised: the identity is purely algebraic), the
    product of rank-one layer Jacobians is rank one and its scale is gains times alignments.
    """
    sig = sp.symbols(f"sigma1:{n + 1}", positive=True)
    us = [sp.Matrix(sp.symbols(f"u{j}_1:{dim + 1}")) for j in range(1, n + 1)]
    vs = [sp.Matrix(sp.symbols(f"v{j}_1:{dim + 1}")) for j in range(1, n + 1)]
    layers = [sig[j] * us[j] * vs[j].T for j in range(n)]
    lhs = _product(layers[::-1], dim)
    kappas = [(vs[j + 1].T * us[j])[0, 0] for j in range(n - 1)]
    rhs = sp.Mul(*sig) * sp.Mul(*kappas) * us[-1] * vs[0].T
    return Identity(
        key="rank_one_product",
        title=f"Product of {n} rank-one layer Jacobians",
        lhs=lhs,
        rhs=rhs,
        assumptions=("E_j = 0 (pure rank-one layers)",),
    )


def aligned_coefficient(n: int = 5) -> Identity:
    """Uniform layers: c_{L,k} = sigma^{L-k} kappa^{L-k-1} = rho^{L-k} / kappa, n = L-k.

    The weight with which injection G_k reaches the output along u_L: n gains, n-1 alignments.
    """
    return Identity(
        key="aligned_coefficient",
        title="Aligned weight of an injection n layers deep",
        lhs=sigma**n * kappa ** (n - 1),
        rhs=rho_of() ** n / kappa,
        assumptions=("uniform sigma_j = sigma, kappa_j = kappa",),
    )


def _generic_branch(expr: sp.Expr) -> sp.Expr:
    """The `True` branch of SymPy's Piecewise answers (the generic case, e.g. rho != 1)."""
    return expr.replace(
        lambda e: isinstance(e, sp.Piecewise),
        lambda e: next(b for b, c in e.args if c == True),  # noqa: E712
    )


def geometric_closed_form(r: sp.Expr = rho, depth: sp.Expr = L) -> sp.Expr:
    """r (r^L - 1)/(r - 1): the closed form of S_L(r) for r != 1."""
    return r * (r**depth - 1) / (r - 1)


def accumulated_injection() -> Identity:
    """sum_{k=0}^{L-1} rho^{L-k} = rho (rho^L - 1)/(rho - 1) for rho != 1, any depth L."""
    total = _generic_branch(sp.summation(rho ** (L - k), (k, 0, L - 1)))
    return Identity(
        key="accumulated_injection",
        title="Geometric sum of aligned injections (rho != 1)",
        lhs=total,
        rhs=geometric_closed_form(),
        assumptions=("uniform rho", "rho != 1"),
    )


def injection_sum(r: sp.Expr = rho, depth: sp.Expr = L) -> sp.Expr:
    """S_L(r) = sum_{n=1}^{L} r^n, the accumulated aligned injection (unevaluated-safe)."""
    return sp.summation(r**m, (m, 1, depth))


def critical_sum() -> Identity:
    """At rho = 1 the accumulated injection is linear in depth: lim_{rho->1} S_L(rho) = L."""
    return Identity(
        key="critical_sum",
        title="Critical point rho = 1: linear growth",
        lhs=sp.limit(geometric_closed_form(), rho, 1),
        rhs=L,
        assumptions=("rho = 1 exactly",),
    )


def supercritical_excess(depth: int = 6) -> tuple[sp.Poly, Identity]:
    """For rho = 1 + t, t > 0: S_L(rho) - L is a polynomial in t with non-negative coefficients.

    Hence S_L(rho) >= L for every rho >= 1 (the linear lower bound), and its top term
    t^L makes the growth exponential in L once rho > 1. Returned: the polynomial and the
    identity closed_form(1+t) - L == sum_n ((1+t)^n - 1).
    """
    excess = sp.cancel(geometric_closed_form(1 + t, depth) - depth)
    poly = sp.Poly(sp.expand(excess), t)
    ident = Identity(
        key="supercritical_excess",
        title=f"Supercritical excess over linear growth, L={depth}",
        lhs=excess,
        rhs=sp.expand(sum((1 + t) ** n - 1 for n in range(1, depth + 1))),
        assumptions=("rho = 1 + t >= 1",),
    )
    return poly, ident


def dispersive_limits() -> tuple[Identity, Identity]:
    """rho = 1/(1+t) < 1: rho^L -> 0 and S_L(rho) -> rho/(1-rho) = 1/t as L -> infinity.

    The first is the geometric decay of an injection made L layers below the output; the
    second says the total aligned response stays finite (bounded by the last few layers).
    """
    r = 1 / (1 + t)
    decay = Identity(
        key="dispersive_decay",
        title="Dispersive regime: deep injections vanish",
        lhs=sp.limit(r**L, L, sp.oo),
        rhs=sp.Integer(0),
        assumptions=("rho < 1",),
    )
    total = sp.limit(r * (r**L - 1) / (r - 1), L, sp.oo)
    finite = Identity(
        key="dispersive_total",
        title="Dispersive regime: bounded total aligned response",
        lhs=total,
        rhs=r / (1 - r),
        assumptions=("rho < 1",),
    )
    return decay, finite


def psi_lower_bound() -> sp.Expr:
    """Lower bound on ||Psi||, uniform layers: (gamma g / (sqrt 2 kappa)) S_L(rho).

    From Psi^T psi_0 = sum_k c_{L,k} (v_{k+1}^T G_k) psi_0 with every term of one sign
    (sign consistency), |(v^T G_k) psi_0| >= ||v^T G_k|| / sqrt 2 (directionality),
    ||v^T G_k|| >= gamma ||G_k||_F >= gamma g (projection bound, g = min_k ||G_k||_F).
    """
    return gamma * g / (sp.sqrt(2) * kappa) * injection_sum(rho, L)


def psi_critical() -> Identity:
    """At rho = 1 the bound is gamma g L / (sqrt 2 kappa) = Omega(gamma L)."""
    return Identity(
        key="psi_critical",
        title="||Psi|| = Omega(gamma L) at rho = 1",
        lhs=psi_lower_bound().subs(rho, 1),
        rhs=gamma * g * L / (sp.sqrt(2) * kappa),
        assumptions=("rho = 1", "sign consistency", "directionality", "projection bound"),
    )


def noise_bound_sum(depth: int = 6) -> Identity:
    """Remainder bound: sum_{n=1}^{L} sigma^n ((1+eta)^n - 1) = S_L(sigma(1+eta)) - S_L(sigma).

    From ||prod(P_j + E_j) - prod P_j|| <= prod(||P_j|| + ||E_j||) - prod ||P_j|| with
    ||P_j|| = sigma and ||E_j|| <= eta sigma (relative perturbation eta), summed over the
    injection depths with ||G_k||_F <= g.
    """
    lhs = sum(sigma**n * ((1 + eta) ** n - 1) for n in range(1, depth + 1))
    rhs = injection_sum(sigma * (1 + eta), depth) - injection_sum(sigma, depth)
    return Identity(
        key="noise_bound_sum",
        title=f"Accumulated perturbation bound, L={depth}",
        lhs=sp.expand(lhs),
        rhs=sp.expand(rhs),
        assumptions=("||E_j|| <= eta sigma_j",),
    )


def spectral_purity(depth: sp.Expr = L) -> sp.Expr:
    """xi_L = kappa (S_L(sigma(1+eta)) - S_L(sigma)) / S_L(sigma kappa).

    The paper names xi_L but does not define it; this is the definition for which
    ||R_Sigma|| / ||u_L Psi^T|| <= sqrt(2) xi_L / gamma follows from the two bounds above
    (take ||G_k||_F = g for every k).
    """
    return (
        kappa
        * (injection_sum(sigma * (1 + eta), depth) - injection_sum(sigma, depth))
        / injection_sum(sigma * kappa, depth)
    )


def perturbation_expansion(depth: int = 4) -> Identity:
    """The lemma behind the remainder bound, for non-commuting P_j, E_j.

    Expand prod_j (P_j + E_j) - prod_j P_j into words; replace each word by the product of
    its factors' norms (p_j = ||P_j||, e_j = ||E_j||). The result is exactly
    prod (p_j + e_j) - prod p_j: every word of the remainder holds at least one E, and the
    triangle inequality plus submultiplicativity bound it word by word. So
    ||prod(P+E) - prod P|| <= prod(||P|| + ||E||) - prod ||P|| in any submultiplicative norm.
    """
    P = sp.symbols(f"P1:{depth + 1}", commutative=False)
    E = sp.symbols(f"E1:{depth + 1}", commutative=False)
    p = sp.symbols(f"p1:{depth + 1}", positive=True)
    e = sp.symbols(f"e1:{depth + 1}", positive=True)
    norm_of = {**dict(zip(P, p, strict=True)), **dict(zip(E, e, strict=True))}
    words = sp.expand(sp.Mul(*[P[j] + E[j] for j in range(depth)][::-1]) - sp.Mul(*P[::-1]))
    image = sp.Add(*[sp.Mul(*[norm_of[f] for f in w.args]) for w in sp.Add.make_args(words)])
    return Identity(
        key="perturbation_expansion",
        title=f"Remainder words have norm image prod(p+e) - prod p, L={depth}",
        lhs=image,
        rhs=sp.Mul(*[p[j] + e[j] for j in range(depth)]) - sp.Mul(*p),
        assumptions=("non-commuting layers", "submultiplicative norm"),
    )


def aligned_weight_factorisation(depth: int = 5) -> Identity:
    """c_0 = prod_{j=1}^{L} sigma_j prod_{j=1}^{L-1} kappa_j = sigma_L prod_{j<L} rho_j.

    Hence rho_j >= 1 for j < L gives |c_k| >= sigma_L for every k: the Omega(gamma L) growth
    needs the gain-alignment ratios and the last gain, not a separate alignment floor.
    """
    sig = sp.symbols(f"sigma1:{depth + 1}", positive=True)
    kap = sp.symbols(f"kappa1:{depth}", positive=True)
    return Identity(
        key="aligned_weight_factorisation",
        title=f"Aligned weight as a product of rho_j, L={depth}",
        lhs=sp.Mul(*sig) * sp.Mul(*kap),
        rhs=sig[-1] * sp.Mul(*[rho_of(sig[j], kap[j]) for j in range(depth - 1)]),
        assumptions=("rank-one layers",),
    )


def relative_noise_uniform() -> Identity:
    """The project's xi_L for uniform layers and equal ||G_k||_F = g is `spectral_purity`.

    General definition (wspec.bounds.relative_noise): remainder envelope over aligned
    envelope, sum_n g((sigma(1+eta))^n - sigma^n) / sum_n g sigma^n kappa^{n-1}, any depth L.
    """
    n = sp.Symbol("n", integer=True, positive=True)
    envelope = sp.summation(g * ((sigma * (1 + eta)) ** n - sigma**n), (n, 1, L))
    aligned = _generic_branch(sp.summation(g * sigma**n * kappa ** (n - 1), (n, 1, L)))
    purity = (
        kappa
        * (geometric_closed_form(sigma * (1 + eta)) - geometric_closed_form(sigma))
        / geometric_closed_form(sigma * kappa)
    )
    return Identity(
        key="relative_noise_uniform",
        title="Project xi_L reduces to the uniform spectral purity",
        lhs=_generic_branch(envelope) / aligned,
        rhs=purity,
        assumptions=("uniform sigma, kappa, eta", "||G_k||_F = g", "sigma, sigma kappa != 1"),
    )


def purity_small_eta(depth: int = 6) -> Identity:
    """At sigma = kappa = 1: xi_L = eta (L+1)/2 + O(eta^2), so purity needs eta L << 1."""
    xi = spectral_purity(depth).subs({sigma: 1, kappa: 1})
    first_order = sp.series(sp.simplify(xi), eta, 0, 2).removeO()
    return Identity(
        key="purity_small_eta",
        title=f"Spectral purity to first order, L={depth}",
        lhs=sp.expand(first_order),
        rhs=eta * sp.Rational(depth + 1, 2),
        assumptions=("sigma = kappa = 1", "eta -> 0"),
    )


def dispersion_counterexample() -> Identity:
    """F = [[0, sigma], [eps, 0]] = sigma e1 e2^T + eps e2 e1^T has kappa = e2^T e1 = 0.

    So rho = 0 < 1, yet F^2 = sigma eps I: for sigma eps > 1 the product grows like
    (sigma eps)^{L/2} although the perturbation is small relative to sigma (eps/sigma).
    rho < 1 alone does not give dispersion; the proved version needs a bound on ||F_j||.
    """
    F = sp.Matrix([[0, sigma], [eps, 0]])
    return Identity(
        key="dispersion_counterexample",
        title="rho < 1 without a perturbation bound: growth anyway",
        lhs=F * F,
        rhs=sigma * eps * sp.eye(2),
        assumptions=("u_j = e1, v_j = e2 for all j", "E_j = eps e2 e1^T"),
    )


def depth_boundary(depth: sp.Expr = L, threshold: sp.Expr = tau) -> sp.Expr:
    """Critical alignment kappa*(sigma, L) where an input L layers deep keeps weight tau.

    rho^L = tau  <=>  kappa = tau^{1/L} / sigma: the finite-depth phase boundary in
    (gain, alignment, depth). It tends to sigma kappa = 1 as L grows, for any tau > 0.
    """
    return threshold ** (1 / depth) / sigma


def boundary_limit() -> Identity:
    """lim_{L->oo} kappa*(sigma, L) = 1/sigma: the depth-independent boundary sigma kappa = 1."""
    return Identity(
        key="boundary_limit",
        title="Deep limit of the phase boundary",
        lhs=sp.limit(depth_boundary(), L, sp.oo),
        rhs=1 / sigma,
        assumptions=("tau > 0 fixed",),
    )


def identities() -> list[Identity]:
    """Every exact identity the chapter states, in reading order."""
    decay, finite = dispersive_limits()
    return [
        chain_rule_scalar(),
        chain_rule_matrix(),
        rank_one_product(),
        aligned_coefficient(),
        accumulated_injection(),
        critical_sum(),
        supercritical_excess()[1],
        decay,
        finite,
        psi_critical(),
        noise_bound_sum(),
        perturbation_expansion(),
        aligned_weight_factorisation(),
        relative_noise_uniform(),
        purity_small_eta(),
        dispersion_counterexample(),
        boundary_limit(),
    ]


ASSUMPTIONS: tuple[Assumption, ...] = (
    Assumption(
        "recursion",
        "h_l = f_l(h_{l-1}, x) with x entering every layer",
        "Same, at one decoder position: other positions' keys/values held at the real run.",
        "The paper's recursion is per position; cross-position paths are outside the theorem.",
    ),
    Assumption(
        "rank_one",
        "Layer Jacobians are dominated by their top singular direction",
        "F_j = sigma_j u_j v_j^T + E_j with ||E_j|| <= eta sigma_j (relative size eta).",
        "Needed to bound the remainder R_Sigma; the paper leaves E_j's size implicit.",
    ),
    Assumption(
        "uniform_gain",
        "Uniform layer-wise gain (Eq. 3.2)",
        "Closed forms use sigma_j = sigma, kappa_j = kappa; bounds for varying layers use "
        "the products prod sigma_j, prod kappa_j.",
        "The referee's third comment; measured in Whisper with wspec.jacobian.",
    ),
    Assumption(
        "alignment",
        "|kappa_j| >= 1 - eps_kappa with eps_kappa L << 1",
        "Not needed once rho_j >= 1 for j < L: |c_k| = sigma_L prod rho_j >= sigma_L "
        "(aligned_weight_factorisation). Only the other route, prod sigma_j >= 1 without "
        "rho_j >= 1, uses it: then prod |kappa_j| >= 1 - eps_kappa L (Bernoulli).",
        "Checked: a chain with kappa_j = 0.3 and rho_j >= 1 still meets Omega(gamma L).",
    ),
    Assumption(
        "omega_gamma_L",
        "||Psi|| = Omega(gamma L) under rho_j >= 1",
        "(B1) ||Psi|| >= (gamma/sqrt 2) sum_k |c_k| ||G_k||_F under projection (gamma), "
        "directionality (1/sqrt 2) and sign consistency; with rho_j >= 1 (j < L) and "
        "g = min ||G_k||_F > 0 this is >= gamma g sigma_L L / sqrt 2.",
        "Each of the three coherence conditions and rho_j >= 1 is needed: breaking any one "
        "alone breaks the bound (wspec.bounds.break_condition).",
    ),
    Assumption(
        "purity",
        "xi_L / gamma << 1 (xi_L undefined in the paper)",
        "xi_L := sum_k (prod sigma_j(1+eta) - prod sigma_j) ||G_k||_F / sum_k |c_k| ||G_k||_F "
        "(uniform: kappa (S_L(sigma(1+eta)) - S_L(sigma)) / S_L(sigma kappa)); relative noise "
        "<= sqrt 2 xi_L / gamma. At sigma = kappa = 1, xi_L = eta (L+1)/2 + O(eta^2).",
        "So purity requires eta L << 1: the perturbation budget shrinks with depth.",
    ),
    Assumption(
        "dispersion",
        "rho < 1 gives geometric decay of ||J_L||",
        "Holds for the aligned part (weight rho^{L-k}) and for ||A_{L,k}|| when "
        "||F_j|| <= q < 1; rho < 1 alone is not enough (counterexample with kappa = 0).",
        "Off-aligned perturbations can chain into growth, see dispersion_counterexample().",
    ),
)


def assumptions_table() -> list[dict[str, str]]:
    """The assumptions as rows (key, paper, proved_version, why) for the chapter."""
    return [a.__dict__.copy() for a in ASSUMPTIONS]
