"""From the theorem's Jacobian to the token spectra that Table 1 measures.

The theorem is about J_L = u_L Psi^T + N (N = G_L + R) at one position; Table 1 measures the
covariance of a component's outputs over the T tokens of a decode. The bridge: if the input
moves from token to token by delta_t ~ N(0, s^2 I_p), the output moves by J_L delta_t, i.e.
rows x_t = a_t u_L + n_t with a_t = Psi^T delta_t (variance s^2 ||Psi||^2) and n_t = N delta_t.
If N is isotropic (N N^T = (||N||_F^2 / d) I_d) and d >> T, the centred T x T Gram matrix of
the rows tends to (s^2 ||N||_F^2 / (T-1)) [C + q w w^T], C the centring projection, w a unit
vector in its range, and

    q = (T - 1) * theta,   theta = ||Psi||^2 / ||N||_F^2   (the decode's signal-to-noise ratio)

so the covariance spectrum is {1 + q, 1, ..., 1} (T - 1 nonzero eigenvalues, up to scale).
Everything Table 1 computes is then a function of q and T alone: N_eff and alpha in closed
form (`n_eff`, `alpha`, SymPy versions in `n_eff_expr`, `alpha_expr`), and the Kirchhoff
index between its limits T - 1 (q -> oo, every row on one line) and (T - 1)^2 (q = 0, rows
that share only the centring), as an expectation over a_t in the d -> oo limit (`kirchhoff`).

The theorem sets theta through rho, gamma and L: ||Psi|| >= (gamma/sqrt 2) sum_k |c_k|
||G_k||_F (wspec.bounds, B1), so with equal injections and the top injection G_L as the noise,
theta ~ gamma^2 (sum_{k<L} prod_{j>k} rho_j)^2 / 2 (`theta_from_rho`, constants aside; for
uniform rho this is gamma^2 S_L(rho)^2 / 2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import sympy as sp

from wspec import spectra

q_sym = sp.Symbol("q", nonnegative=True)
m_sym = sp.Symbol("m", integer=True, positive=True)  # m = T - 1 nonzero eigenvalues


def decode_spectrum(q: float, T: int, d: int | None = None) -> np.ndarray:
    """Covariance spectrum (up to scale) of a rank-one-plus-isotropic decode of T tokens.

    d=None: the d -> oo limit {1+q, 1 x (T-2)}. Finite d: the T-1 noise eigenvalues spread
    into the Marchenko-Pastur law of ratio c = (T-1)/d (taken at its quantiles) and the
    signal eigenvalue moves to (1+q)(1+c/q) when q > sqrt c, else merges with the bulk edge
    (1+sqrt c)^2 (the rectangular spiked-model limit of Benaych-Georges & Nadakuditi 2012).
    """
    if T < 3:
        raise ValueError("a decode spectrum needs T >= 3 tokens (T - 1 >= 2 eigenvalues)")
    if d is None:
        return np.r_[1.0 + q, np.ones(T - 2)]
    m = T - 1
    c = m / d
    if c >= 1:
        raise ValueError(f"finite-d spectrum needs d > T - 1; got d={d}, T={T}")
    bulk = marchenko_pastur_quantiles(c, m)
    spike = (1 + q) * (1 + c / q) if q > np.sqrt(c) else (1 + np.sqrt(c)) ** 2
    return np.r_[spike, bulk[1:]]


def marchenko_pastur_quantiles(c: float, m: int, grid: int = 20001) -> np.ndarray:
    """m eigenvalues of a unit-variance Wishart of ratio c < 1, at MP quantiles (descending)."""
    a, b = (1 - np.sqrt(c)) ** 2, (1 + np.sqrt(c)) ** 2
    x = np.linspace(a, b, grid)
    dens = np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * np.pi * c * x)
    cdf = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(x))])
    cdf /= cdf[-1]
    probs = (np.arange(m, 0, -1) - 0.5) / m
    return np.interp(probs, cdf, x)


def n_eff_expr() -> sp.Expr:
    """exp(H(p)) of the spectrum {1+q, 1 x (m-1)}, m = T - 1: SymPy closed form."""
    total = m_sym + q_sym
    p1 = (1 + q_sym) / total
    entropy = -p1 * sp.log(p1) + (m_sym - 1) / total * sp.log(total)
    return sp.exp(entropy)


def n_eff(q: float | np.ndarray, T: int, d: int | None = None, k: int = 0) -> np.ndarray | float:
    """Numerical `n_eff_expr`: m at q = 0 (flat), -> 1 as q -> oo (rank one). Finite d or
    top-k modes (k > 0, as Table 1's K): the project's `spectra.effective_rank` of
    `decode_spectrum(q, T, d)`."""
    if d is not None or k:
        return _of_spectrum(spectra.effective_rank, q, T, d, k)
    m = T - 1
    q = np.asarray(q, dtype=np.float64)
    total = m + q
    p1 = (1 + q) / total
    return np.exp(-p1 * np.log(p1) + (m - 1) / total * np.log(total))


def _log_index_moments(T: int) -> tuple[float, float]:
    """Mean and centred sum of squares of ln i, i = 1..T-1 (the regressor of alpha)."""
    x = np.log(np.arange(1, T))
    return float(x.mean()), float(np.sum((x - x.mean()) ** 2))


def alpha_expr(m: int) -> sp.Expr:
    """alpha = xbar ln(1+q) / Sxx for {1+q, 1 x (m-1)}: only lambda_1 differs from the flat
    tail, so the least-squares slope of ln lambda_i on ln i is -(ln 1 - xbar) ln(1+q) / Sxx."""
    x = [sp.log(i) for i in range(1, m + 1)]
    xbar = sp.Add(*x) / m
    sxx = sp.Add(*[(xi - xbar) ** 2 for xi in x])
    return xbar * sp.log(1 + q_sym) / sxx


def alpha(q: float | np.ndarray, T: int, d: int | None = None, k: int = 0) -> np.ndarray | float:
    """Numerical `alpha_expr` with m = T - 1: grows like ln(1+q); 0 for a flat spectrum.
    Finite d: `spectra.spectral_slope` of `decode_spectrum(q, T, d)` (the MP bulk has a slope
    of its own, so alpha > 0 even at q = 0); k > 0 fits the top k modes only."""
    if d is not None or k:
        return _of_spectrum(spectra.spectral_slope, q, T, d, k)
    xbar, sxx = _log_index_moments(T)
    return xbar * np.log1p(np.asarray(q, dtype=np.float64)) / sxx


def _of_spectrum(metric, q, T: int, d: int | None, k: int) -> np.ndarray | float:
    values = [float(metric(decode_spectrum(float(x), T, d), k)) for x in np.ravel(q)]
    return values[0] if np.ndim(q) == 0 else np.reshape(values, np.shape(q))


def kirchhoff(q: float, T: int, d: int | None = None, n_draws: int = 200, seed: int = 0) -> float:
    """E[log10 Kf] of the |cos| activation graph, averaged over a_t (and the noise at finite d).

    With ||N||_F = 1 the centred rows have Gram theta a_c a_c^T + W, a_c the centred
    a_t ~ N(0, 1), theta = q / (T - 1) and W = C (d -> oo) or C Z Z^T C / d, Z a T x d
    Gaussian (finite d: noise cosines of order 1/sqrt d, which the limit drops); the |cos|
    weights and Kf follow from that Gram by `spectra`' rules (w = |cos|, L = D - W,
    Kf = T sum 1/mu). Limits: (T-1)^2 at q = 0, d = oo; T - 1 as q -> oo.
    """
    rng = np.random.default_rng(seed)
    C = np.eye(T) - 1.0 / T
    out = []
    for _ in range(n_draws):
        a = C @ rng.standard_normal(T)
        if d is None:
            noise = C
        else:
            z = C @ rng.standard_normal((T, d))
            noise = z @ z.T / d
        gram = (q / (T - 1)) * np.outer(a, a) + noise
        norm = np.sqrt(np.diag(gram))
        w = np.abs(gram / np.outer(norm, norm))
        np.fill_diagonal(w, 0.0)
        lap = np.diag(w.sum(axis=1)) - w
        mu = np.linalg.eigvalsh(lap)[::-1]
        out.append(spectra.kirchhoff_log10(mu))
    return float(np.mean(out))


def theta_from_rho(log_rho: np.ndarray, gamma: float = 1.0) -> float:
    """theta ~ gamma^2 (sum_{k<L} prod_{j>k} rho_j)^2 / 2 from a clip's layer log rho_j.

    log_rho holds layers 1..L-1 (the last layer has no successor, so no rho); its partial
    products from the top are the aligned weights up to the common last gain sigma_L.
    """
    lr = np.asarray(log_rho, dtype=np.float64)
    partial = np.exp(np.cumsum(lr[::-1]))  # prod_{j>k} rho_j for k = L-2, L-3, ...
    s = 1.0 + partial.sum()  # k = L-1 contributes sigma_L alone (weight 1 here)
    return float(gamma**2 * s**2 / 2)


def simulate_decode(
    rng: np.random.Generator, theta: float, T: int, d: int, p: int | None = None
) -> np.ndarray:
    """T rows x_t = J delta_t with J = u Psi^T + N, N Gaussian (isotropic for p >> d),
    ||Psi||^2 / ||N||_F^2 = theta and delta_t ~ N(0, I_p): a synthetic decode for the check."""
    p = p or 4 * d
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    N = rng.standard_normal((d, p))
    N /= np.linalg.norm(N)
    psi = rng.standard_normal(p)
    psi *= np.sqrt(theta) / np.linalg.norm(psi)
    J = np.outer(u, psi) + N
    return rng.standard_normal((T, p)) @ J.T


def simulated_metrics(x: np.ndarray) -> dict[str, float]:
    """N_eff, alpha and log10 Kf of one decode, with the project's own definitions."""
    lam = spectra.gram_eigenvalues(x).numpy()
    mu = spectra.graph_laplacian_eigenvalues(x).numpy()
    return {
        "n_eff": float(spectra.effective_rank(lam)),
        "alpha": float(spectra.spectral_slope(lam, n_max=max(x.shape))),
        "log10_kf": float(spectra.kirchhoff_log10(mu)),
    }


def simulation_check(
    qs: tuple[float, ...], T: int, d: int, n_decodes: int = 30, n_draws: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Predicted (d -> oo and finite d) against simulated N_eff, alpha and log10 Kf per q.

    Simulated: mean and standard deviation over n_decodes synthetic decodes (`simulate_decode`
    with p = 4d inputs, so the noise is only approximately isotropic: part of the check);
    the Kirchhoff prediction averages n_draws draws of a_t (and of the noise at finite d).
    """
    rows = []
    for i, q in enumerate(qs):
        rng = np.random.default_rng([seed, i])
        sims = [
            simulated_metrics(simulate_decode(rng, q / (T - 1), T, d)) for _ in range(n_decodes)
        ]
        pred = {
            "n_eff": (n_eff(q, T), n_eff(q, T, d)),
            "alpha": (alpha(q, T), alpha(q, T, d)),
            "log10_kf": (
                kirchhoff(q, T, n_draws=n_draws, seed=seed),
                kirchhoff(q, T, d, n_draws=n_draws, seed=seed),
            ),
        }
        for metric, (limit, finite) in pred.items():
            values = np.array([s[metric] for s in sims])
            rows.append(
                {
                    "q": q,
                    "metric": metric,
                    "limit": float(limit),
                    "predicted": float(finite),
                    "simulated": float(values.mean()),
                    "sim_sd": float(values.std(ddof=1)),
                    "n": n_decodes,
                }
            )
    return pd.DataFrame(rows)


METRIC_LABELS = {"n_eff": r"$N_\mathrm{eff}$", "alpha": r"$\alpha$", "log10_kf": r"$\log_{10}K_f$"}


def plot_simulation_check(check: pd.DataFrame, T: int, d: int):
    """Per metric: d -> oo limit (dashed), finite-d prediction (line) and simulated decodes
    (points, mean +- sd) against q on a log axis (q = 0 drawn at the left edge)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2))
    plt.close(fig)  # the caller glues or shows it
    qs = np.geomspace(0.1, max(check["q"].max(), 10.0), 60)
    left = qs[0]
    curves = {
        "n_eff": (n_eff(qs, T), n_eff(qs, T, d)),
        "alpha": (alpha(qs, T), alpha(qs, T, d)),
        "log10_kf": (
            [kirchhoff(q, T, n_draws=40) for q in qs[::4]],
            [kirchhoff(q, T, d, n_draws=40) for q in qs[::4]],
        ),
    }
    for ax, (metric, (limit, finite)) in zip(axes, curves.items(), strict=True):
        x = qs if metric != "log10_kf" else qs[::4]
        ax.plot(x, limit, "k--", lw=1, label=r"$d\to\infty$")
        ax.plot(x, finite, "k-", lw=1.5, label=f"d = {d}")
        sub = check[check["metric"] == metric]
        ax.errorbar(
            np.maximum(sub["q"], left),
            sub["simulated"],
            yerr=sub["sim_sd"],
            fmt="o",
            ms=4,
            color="C3",
            label="simulated",
        )
        ax.set_xscale("log")
        ax.set_xlabel(r"decode SNR $q = (T-1)\,\|\Psi\|^2/\|N\|_F^2$")
        ax.set_ylabel(METRIC_LABELS[metric])
    axes[0].legend(fontsize=7)
    fig.suptitle(f"T = {T} tokens", fontsize=9)
    fig.tight_layout()
    return fig


def clip_predictions(jacobian: pd.DataFrame, T: int, K: int) -> pd.DataFrame:
    """Per model x clip, the signature the bridge predicts from the measured rho_j and gamma_j.

    For each measured decoding step: theta = `theta_from_rho`(layer log rho_j, mean gamma_j)
    (decoder layers in order; the last has no rho); the clip's theta is the geometric mean
    over steps, q = (T - 1) theta, and the predictions are `n_eff` and `alpha` over the top K
    modes at the model's width d (column d_model). Clips without gamma (not measured) get NaN.
    """
    dec = jacobian[jacobian["stack"] == "decoder"]
    rows = []
    for (model, sid), clip in dec.groupby(["model", "stimulus_id"], sort=True):
        log_theta = []
        for _, run in clip.groupby("step"):
            run = run.sort_values("layer")
            rho = run["rho"].to_numpy(dtype=float)
            rho = rho[np.isfinite(rho)]
            if rho.size == 0 or np.any(rho <= 0):
                continue
            log_theta.append(np.log(theta_from_rho(np.log(rho), float(run["gamma"].mean()))))
        theta = float(np.exp(np.mean(log_theta))) if log_theta else float("nan")
        q = (T - 1) * theta
        width = int(clip["d_model"].iloc[0])
        finite = np.isfinite(q)
        rows.append(
            {
                "model": model,
                "stimulus_id": sid,
                "family": clip["family"].iloc[0],
                "theta": theta,
                "q": q,
                "pred_n_eff": float(n_eff(q, T, width, K)) if finite else float("nan"),
                "pred_alpha": float(alpha(q, T, width, K)) if finite else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def plot_confrontation(points: pd.DataFrame, T: int, K: int):
    """Per model (columns): measured N_eff and alpha (rows) of each clip against its decode SNR
    q from measured rho_j and gamma_j, with the bridge's prediction as a curve (clean blue
    circles, stressed red triangles)."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(points["model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.6), squeeze=False)
    plt.close(fig)  # the caller glues or shows it
    for c, model in enumerate(models):
        sub = points[points["model"] == model]
        width = int(sub["d_model"].iloc[0])
        finite = sub["q"][np.isfinite(sub["q"]) & (sub["q"] > 0)]
        lo = min(finite.min() if len(finite) else 1e-3, 1e-3)
        qs = np.geomspace(lo, 1e3, 80)
        for r, (measured, predict, label) in enumerate(
            (("n_eff", n_eff, r"$N_\mathrm{eff}$"), ("alpha", alpha, r"$\alpha$"))
        ):
            ax = axes[r][c]
            ax.plot(qs, predict(qs, T, width, K), "k-", lw=1.2, label=f"bridge (d = {width})")
            for group, marker, color in (("clean", "o", "tab:blue"), ("stressed", "^", "tab:red")):
                g = sub[sub["group"] == group]
                ax.scatter(g["q"], g[measured], marker=marker, color=color, s=22, label=group)
            ax.set_xscale("log")
            ax.set_xlabel(r"decode SNR $q$ from measured $\rho_j, \gamma_j$")
            ax.set_ylabel(f"measured {label} (top {K})")
            ax.set_title(model, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
