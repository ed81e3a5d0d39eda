"""The bridge from the theorem's Jacobian to token spectra: closed forms agree with the
project's metric code, with their limits, and with simulated decodes."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from wspec import bridge, spectra


@pytest.mark.parametrize("q", [0.0, 0.5, 7.0, 300.0])
def test_closed_forms_are_the_project_metrics_of_the_limit_spectrum(q: float) -> None:
    """SymPy N_eff and alpha, evaluated, equal spectra.effective_rank / spectral_slope of
    {1+q, 1, ..., 1}; 1e-10: float64 entropy and least squares over 23 points."""
    T = 24
    lam = bridge.decode_spectrum(q, T)
    neff = float(bridge.n_eff_expr().subs({bridge.q_sym: q, bridge.m_sym: T - 1}))
    assert neff == pytest.approx(float(spectra.effective_rank(lam)), rel=1e-10)
    assert bridge.n_eff(q, T) == pytest.approx(neff, rel=1e-10)
    alpha = float(bridge.alpha_expr(T - 1).subs(bridge.q_sym, q))
    assert alpha == pytest.approx(float(spectra.spectral_slope(lam)), rel=1e-10, abs=1e-12)
    assert bridge.alpha(q, T) == pytest.approx(alpha, rel=1e-10, abs=1e-12)


def test_limits() -> None:
    """q = 0: N_eff = T-1, alpha = 0, Kf = (T-1)^2 exactly; q -> oo: N_eff -> 1, Kf -> T-1."""
    T = 12
    assert sp.limit(bridge.n_eff_expr().subs(bridge.m_sym, T - 1), bridge.q_sym, sp.oo) == 1
    assert bridge.n_eff(0.0, T) == pytest.approx(T - 1, rel=1e-12)
    assert bridge.alpha(0.0, T) == 0.0
    assert bridge.kirchhoff(0.0, T, n_draws=3) == pytest.approx(np.log10((T - 1) ** 2), rel=1e-9)
    assert bridge.kirchhoff(1e9, T, n_draws=20) == pytest.approx(np.log10(T - 1), abs=1e-3)


def test_marchenko_pastur_quantiles_match_wishart() -> None:
    """MP quantiles against the sorted eigenvalues of one 200 x 800 Wishart (c = 1/4; the bulk
    spans 0.25 to 2.25): bulk eigenvalues fluctuate by O(1/m), so the median error stays
    below 0.01; the edges by O(m^(-2/3)) ~ 0.03, hence 0.08 for the largest error."""
    m, d = 200, 800
    z = np.random.default_rng(0).standard_normal((m, d))
    eig = np.sort(np.linalg.eigvalsh(z @ z.T / d))[::-1]
    err = np.abs(bridge.marchenko_pastur_quantiles(m / d, m) - eig)
    assert np.median(err) < 0.01 and err.max() < 0.08


def test_prediction_matches_simulated_decodes() -> None:
    """T = 24 tokens in d = 384 (tiny.en's width): the finite-d prediction is within 3
    standard errors + 3 % (N_eff) or 0.06 (alpha, log10 Kf) of 16 simulated decodes.

    Tolerance: the simulation's noise is only approximately isotropic (p = 4d inputs), which
    the formula ignores; the d -> oo limit alone would miss alpha by about 0.3."""
    check = bridge.simulation_check((0.0, 3.0, 30.0), T=24, d=384, n_decodes=16, n_draws=40, seed=1)
    se = check["sim_sd"] / np.sqrt(check["n"])
    gap = (check["predicted"] - check["simulated"]).abs()
    allowed = np.where(
        check["metric"] == "n_eff", 3 * se + 0.03 * check["simulated"], 3 * se + 0.06
    )
    assert (gap <= allowed).all(), check.assign(gap=gap, allowed=allowed)
    alpha0 = check[(check["metric"] == "alpha") & (check["q"] == 0.0)].iloc[0]
    assert alpha0["simulated"] - alpha0["limit"] > 0.2  # why the finite-d correction is needed


def test_theta_from_rho() -> None:
    """Uniform rho: theta = gamma^2 S_L(rho)^2 / 2 with S_L(1) = L (log rho for L-1 layers)."""
    assert bridge.theta_from_rho(np.zeros(3), gamma=1.0) == pytest.approx(8.0)  # L = 4
    r = 1.5
    s = sum(r**n for n in range(0, 4))  # sigma_L weight 1, then rho, rho^2, rho^3
    assert bridge.theta_from_rho(np.full(3, np.log(r)), gamma=0.5) == pytest.approx(0.25 * s**2 / 2)


def test_bad_sizes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="T >= 3"):
        bridge.decode_spectrum(1.0, 2)
    with pytest.raises(ValueError, match="d > T - 1"):
        bridge.decode_spectrum(1.0, 24, d=10)


def test_clip_predictions_from_a_jacobian_table() -> None:
    """Two steps of a 4-layer decoder: theta is the geometric mean of the per-step
    theta_from_rho; larger rho gives larger q and a lower predicted N_eff; no gamma -> NaN."""
    import pandas as pd

    def rows(sid: str, rho: list[float], gamma: float, step: int) -> list[dict]:
        return [
            {
                "model": "m",
                "stimulus_id": sid,
                "family": "f",
                "stack": "decoder",
                "layer": j,
                "step": step,
                "rho": r,
                "gamma": gamma,
                "d_model": 384,
            }
            for j, r in enumerate([*rho, np.nan])
        ]

    table = pd.DataFrame(
        rows("a", [1.0, 1.0, 1.0], 0.5, 0)
        + rows("a", [2.0, 2.0, 2.0], 0.5, 1)
        + rows("b", [3.0, 3.0, 3.0], 0.5, 0)
        + rows("c", [1.0, 1.0, 1.0], np.nan, 0)
    )
    pred = bridge.clip_predictions(table, T=24, K=10).set_index("stimulus_id")
    t1 = bridge.theta_from_rho(np.zeros(3), 0.5)
    t2 = bridge.theta_from_rho(np.full(3, np.log(2.0)), 0.5)
    assert pred.at["a", "theta"] == pytest.approx(np.sqrt(t1 * t2), rel=1e-12)
    assert pred.at["b", "q"] > pred.at["a", "q"]
    assert pred.at["b", "pred_n_eff"] < pred.at["a", "pred_n_eff"]
    assert np.isnan(pred.at["c", "pred_n_eff"])
