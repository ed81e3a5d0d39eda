"""The numerical phase diagram shows the theorem's two regimes on either side of sigma*kappa = 1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wspec import phase

CONFIG = phase.PhaseConfig(
    dim=32,
    gains=(0.6, 0.9, 1.5, 2.0),
    alignments=(0.3, 0.6, 0.9),
    depths=(4, 32),
    n_trials=2,
    seed=7,
)


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    return phase.phase_grid(CONFIG)


def test_alignment_is_exact() -> None:
    """v_{j+1}^T u_j equals the requested kappa (to float64 rounding)."""
    rng = np.random.default_rng(0)
    layers = phase.layer_chain(5, gain=1.3, alignment=0.4, dim=16, eta=0.0, rng=rng)
    for F, F_next in zip(layers, layers[1:], strict=False):
        u = np.linalg.svd(F)[0][:, 0]
        v_next = np.linalg.svd(F_next)[2][0]
        # eta = 0: F = 1.3 u v^T exactly; sign of singular vectors is arbitrary, hence abs
        assert abs(abs(v_next @ u) - 0.4) < 1e-12


def test_dispersive_cells_decay(grid: pd.DataFrame) -> None:
    """rho < 1 (and eta < 1): ||J_L|| shrinks with depth, below 1 at L = 32."""
    sub = grid[grid["rho"] < 0.8]
    wide = sub.pivot_table(index=["gain", "alignment"], columns="depth", values="log10_norm")
    assert (wide[32] < wide[4]).all()
    assert (wide[32] < 0).all()


def test_attractor_cells_collapse_to_rank_one(grid: pd.DataFrame) -> None:
    """rho > 1: the norm grows with depth and the top singular value holds ~all the energy."""
    deep = grid[(grid["rho"] > 1.1) & (grid["depth"] == 32)]
    assert len(deep) >= 3
    assert (deep["top_share"] > 0.999).all()
    assert (deep["log10_norm"] > 0).all()
    assert (deep["eff_rank"] < 1.1).all()


def test_seeded_reproducibility(grid: pd.DataFrame) -> None:
    again = phase.phase_grid(CONFIG)
    pd.testing.assert_frame_equal(grid, again)
    other = phase.phase_grid(phase.PhaseConfig(**{**CONFIG.__dict__, "seed": 8}))
    assert not np.allclose(grid["top_share"], other["top_share"])


def test_spectrum_metrics_known_values() -> None:
    """Flat spectrum of n ones: eff_rank = n, top_share = 1/n; rank one: 1 and 1."""
    met = phase.spectrum_metrics(np.ones(5))
    assert met["eff_rank"] == pytest.approx(5.0, rel=1e-12)
    assert met["top_share"] == pytest.approx(0.2, rel=1e-12)
    met = phase.spectrum_metrics(np.array([3.0, 0.0, 0.0]))
    assert met["eff_rank"] == pytest.approx(1.0) and met["top_share"] == pytest.approx(1.0)


def test_plot_has_boundary(grid: pd.DataFrame) -> None:
    fig = phase.plot_phase_diagram(grid, eta=CONFIG.eta)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any("=1" in lab for lab in labels)


@pytest.fixture(scope="module")
def regimes(grid: pd.DataFrame) -> pd.DataFrame:
    null = phase.null_grid(CONFIG, n_null=30)
    return phase.regime_map(grid, phase.null_bands(null))


def test_null_chains_have_chance_alignment() -> None:
    """alignment=None: |v_{j+1}^T u_j| averages sqrt(2/(pi d)) (half-normal with variance 1/d).

    Tolerance: 300 alignments in d = 64, so the mean's standard error is ~0.6/sqrt(300)/8 < 0.005;
    0.015 is three times that.
    """
    rng = np.random.default_rng(1)
    layers = phase.layer_chain(301, gain=1.0, alignment=None, dim=64, eta=0.0, rng=rng)
    # eta = 0: F = u v^T, so any nonzero column is +-u and any nonzero row is +-v
    u = [F[:, 0] / np.linalg.norm(F[:, 0]) for F in layers]
    v = [F[0] / np.linalg.norm(F[0]) for F in layers]
    kap = [abs(v[j + 1] @ u[j]) for j in range(300)]
    assert abs(np.mean(kap) - np.sqrt(2 / (np.pi * 64))) < 0.015


def test_null_products_concentrate_without_alignment(regimes: pd.DataFrame) -> None:
    """The null itself loses rank with depth: low rank alone cannot mark Regime II."""
    mid = regimes.drop_duplicates(["depth", "gain"]).groupby("depth")["eff_rank_mid"].median()
    assert mid[32] < mid[4] / 3


def test_regime_ii_is_where_designed_chains_leave_the_null(regimes: pd.DataFrame) -> None:
    """rho >= 1 is beyond the null everywhere; rho well below eta (0.3) almost nowhere."""
    assert regimes.loc[regimes["rho"] >= 1.0, "beyond_null"].all()
    low = regimes.loc[regimes["rho"] < 0.2, "beyond_null"]
    assert len(low) >= 2 and low.mean() <= 0.25


def test_null_comparison_plot(regimes: pd.DataFrame) -> None:
    fig = phase.plot_null_comparison(regimes, alignments=(0.3, 0.9))
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any("=1" in lab for lab in labels)
    assert len(fig.axes) >= 6
    # requested alignments snap to the grid (0.3, 0.9 -> 0.3, 0.9 here): one line each
    kappas = {lab for lab in labels if lab.startswith(r"$\kappa$=")}
    assert kappas == {r"$\kappa$=0.30", r"$\kappa$=0.90"}


def test_attractor_definition_separates_designed_chains_from_the_null() -> None:
    """Depth 32, d = 48: rho = 2 chains keep one dominant direction through perturbed steps;
    unaligned chains of the same gain mostly do not (small gap s_1/s_2 or a wandering top
    direction). At small depth and width the null can persist too (see the chapter)."""
    cfg = phase.PhaseConfig()
    designed = [
        phase.attractor_share(32, 2.0, 1.0, cfg, n_steps=8, rng=np.random.default_rng([s, 0]))
        for s in range(3)
    ]
    null = [
        phase.attractor_share(32, 2.0, None, cfg, n_steps=8, rng=np.random.default_rng([s, 1]))
        for s in range(3)
    ]
    assert min(designed) >= 0.9
    assert np.mean(null) <= 0.5
