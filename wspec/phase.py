"""Numerical phase diagram: products of random layer Jacobians with controlled gain and alignment.

Each layer Jacobian is F_j = sigma u_j v_j^T + E_j, where the right singular direction of
the next layer is tilted towards this layer's output direction by exactly kappa:
v_{j+1} = kappa u_j + sqrt(1 - kappa^2) w_j (w_j a random unit vector orthogonal to u_j),
and E_j has i.i.d. N(0, eta^2 / d) entries (so a product of perturbations alone grows or
decays by about eta per layer). We report, for J_L = F_L ... F_1:

- ``norm``: spectral norm ||J_L||_2 (dispersion: decays when rho = sigma kappa < 1 and eta < 1);
- ``top_share``: s_1^2 / sum_i s_i^2 of J_L's singular values (energy share of the top mode);
- ``eff_rank``: exp of the Shannon entropy of p_i = s_i / sum s (singular-value-based
  effective rank, Roy & Vetterli 2007; note: singular values, not their squares).

Two derived boundaries: rho = 1 (the theorem's norm boundary, depth-independent in the
limit) and rho = eta (where the aligned mode outgrows the perturbation bulk, so the top share
tends to 1). The theorem's attractor regime rho >= 1 lies above both when eta < 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_GAINS = tuple(np.round(np.linspace(0.5, 2.0, 13), 4))
DEFAULT_ALIGNMENTS = tuple(np.round(np.linspace(0.05, 1.0, 12), 4))
DEFAULT_DEPTHS = (4, 12, 32)


@dataclass(frozen=True)
class PhaseConfig:
    """Grid and model parameters of the phase diagram (all seeded)."""

    dim: int = 48
    eta: float = 0.3
    gains: tuple[float, ...] = DEFAULT_GAINS
    alignments: tuple[float, ...] = DEFAULT_ALIGNMENTS
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    n_trials: int = 3
    seed: int = 0


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def layer_chain(
    depth: int,
    gain: float,
    alignment: float | None,
    dim: int,
    eta: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Layer Jacobians F_1..F_depth with v_{j+1}^T u_j = alignment exactly.

    alignment=None is the null: v_{j+1} is drawn independently of u_j, so kappa_j follows
    its chance distribution (about N(0, 1/dim)) while gains and perturbations stay the same.
    """
    v = _unit(rng.standard_normal(dim))
    layers = []
    for _ in range(depth):
        u = _unit(rng.standard_normal(dim))
        E = rng.standard_normal((dim, dim)) * (eta / np.sqrt(dim))
        layers.append(gain * np.outer(u, v) + E)
        w = rng.standard_normal(dim)
        if alignment is None:
            v = _unit(w)
            continue
        w = _unit(w - (w @ u) * u)
        v = alignment * u + np.sqrt(max(0.0, 1.0 - alignment**2)) * w
    return layers


def spectrum_metrics(s: np.ndarray) -> dict[str, float]:
    """norm, top_share (s1^2/sum s^2) and singular-value entropy effective rank."""
    s = np.asarray(s, dtype=np.float64)
    if not np.all(np.isfinite(s)) or s.sum() == 0:
        return {"norm": float("nan"), "top_share": float("nan"), "eff_rank": float("nan")}
    p = s / s.sum()
    p = p[p > 0]
    return {
        "norm": float(s[0]),
        "top_share": float(s[0] ** 2 / np.sum(s**2)),
        "eff_rank": float(np.exp(-np.sum(p * np.log(p)))),
    }


def product_spectrum(layers: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Singular values of F_L ... F_1 and the log-scale used to keep them finite.

    The product is renormalised after every layer (log scale accumulated separately) so that
    depth-32 products with gain 2 neither overflow nor underflow; shares and ranks are
    scale-free and the norm is recovered as exp(log_scale) * s_1.
    """
    J = np.eye(layers[0].shape[0])
    log_scale = 0.0
    for F in layers:
        J = F @ J
        n = np.linalg.norm(J)
        J /= n
        log_scale += np.log(n)
    return np.linalg.svd(J, compute_uv=False), log_scale


def phase_grid(config: PhaseConfig | None = None) -> pd.DataFrame:
    """Tidy table over (depth, gain, alignment): rho, log10 norm, top_share, eff_rank (trial means).

    Each cell uses its own child seed (from the cell index), so a cell's numbers do not
    change when the grid is extended elsewhere.
    """
    cfg = config or PhaseConfig()
    rows = []
    for d_i, depth in enumerate(cfg.depths):
        for g_i, gain in enumerate(cfg.gains):
            for a_i, alignment in enumerate(cfg.alignments):
                rng = np.random.default_rng([cfg.seed, d_i, g_i, a_i])
                trials = []
                for _ in range(cfg.n_trials):
                    trials.append(_chain_metrics(depth, gain, alignment, cfg, rng))
                rows.append(
                    {
                        "depth": depth,
                        "gain": float(gain),
                        "alignment": float(alignment),
                        "rho": float(gain * alignment),
                        "log10_norm": float(np.mean([t["log10_norm"] for t in trials])),
                        "top_share": float(np.mean([t["top_share"] for t in trials])),
                        "eff_rank": float(np.mean([t["eff_rank"] for t in trials])),
                    }
                )
    return pd.DataFrame(rows)


def _chain_metrics(
    depth: int, gain: float, alignment: float | None, cfg: PhaseConfig, rng: np.random.Generator
) -> dict[str, float]:
    s, log_scale = product_spectrum(layer_chain(depth, gain, alignment, cfg.dim, cfg.eta, rng))
    met = spectrum_metrics(s)
    met["log10_norm"] = (np.log(met["norm"]) + log_scale) / np.log(10)
    return met


NULL_SEED_TAG = 1_000_003
"""Extra seed component that separates null chains from designed cells (same depth, gain)."""


def null_grid(config: PhaseConfig | None = None, n_null: int = 40) -> pd.DataFrame:
    """Unaligned chains (alignment=None) of the same gains, eta and depths: one row per chain.

    The null of the phase diagram: what products of random Jacobians of these gains do with
    no designed alignment at all.
    """
    cfg = config or PhaseConfig()
    rows = []
    for d_i, depth in enumerate(cfg.depths):
        for g_i, gain in enumerate(cfg.gains):
            rng = np.random.default_rng([cfg.seed, d_i, g_i, NULL_SEED_TAG])
            for trial in range(n_null):
                met = _chain_metrics(depth, gain, None, cfg, rng)
                rows.append({"depth": depth, "gain": float(gain), "trial": trial, **met})
    return pd.DataFrame(rows)


def null_bands(null: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Central `level` interval and median of each metric over null chains, per (depth, gain)."""
    q = (1 - level) / 2
    out = null.groupby(["depth", "gain"])[["top_share", "eff_rank", "log10_norm"]]
    lo, mid, hi = out.quantile(q), out.median(), out.quantile(1 - q)
    return pd.concat(
        [lo.add_suffix("_lo"), mid.add_suffix("_mid"), hi.add_suffix("_hi")], axis=1
    ).reset_index()


def regime_map(grid: pd.DataFrame, bands: pd.DataFrame) -> pd.DataFrame:
    """Designed cells against their null band (same depth and gain).

    ``beyond_null`` (the book's Regime II region) is True where the designed cell's mean top
    share lies above the null's band *and* its mean effective rank below it: the designed
    alignment concentrates the product more than chance products of the same gains do.
    A low rank that the null also reaches is not Regime II.
    """
    m = grid.merge(bands, on=["depth", "gain"], how="left", validate="many_to_one")
    m["above_top_share"] = m["top_share"] > m["top_share_hi"]
    m["below_eff_rank"] = m["eff_rank"] < m["eff_rank_lo"]
    m["beyond_null"] = m["above_top_share"] & m["below_eff_rank"]
    return m


def plot_null_comparison(regimes: pd.DataFrame, alignments: tuple[float, ...]):
    """Per depth: top share and effective rank against gain, designed chains (lines, the grid
    alignments closest to `alignments`) over the null's 95 % band (grey); bottom row, the
    cells beyond the null."""
    import matplotlib.pyplot as plt

    depths = sorted(regimes["depth"].unique())
    fig, axes = plt.subplots(3, len(depths), figsize=(3.4 * len(depths), 8.4), squeeze=False)
    plt.close(fig)  # see plot_phase_diagram
    for c, depth in enumerate(depths):
        sub = regimes[regimes["depth"] == depth]
        band = sub.drop_duplicates("gain").sort_values("gain")
        for r, col in enumerate(("top_share", "eff_rank")):
            ax = axes[r][c]
            ax.fill_between(
                band["gain"], band[f"{col}_lo"], band[f"{col}_hi"], color="0.8", label="null 95 %"
            )
            ax.plot(band["gain"], band[f"{col}_mid"], color="0.4", lw=1)
            grid_a = np.sort(sub["alignment"].unique())
            for a in alignments:
                near = grid_a[np.argmin(np.abs(grid_a - a))]  # the grid's closest alignment
                line = sub[sub["alignment"] == near].sort_values("gain")
                ax.plot(line["gain"], line[col], marker=".", lw=1.2, label=rf"$\kappa$={near:.2f}")
            ax.set_xlabel(r"gain $\sigma$")
            ax.set_ylabel("top share" if col == "top_share" else "effective rank")
            ax.set_title(f"L = {depth}")
        ax = axes[2][c]
        table = sub.pivot(index="alignment", columns="gain", values="beyond_null").astype(float)
        ax.pcolormesh(table.columns, table.index, table.values, cmap="Greys", vmin=0, vmax=1.5)
        g = np.linspace(table.columns.min(), table.columns.max(), 200)
        ax.plot(g, 1.0 / g, "k-", lw=1.5, label=r"$\sigma\kappa=1$")
        ax.set_ylim(table.index.min(), table.index.max())
        ax.set_xlabel(r"gain $\sigma$")
        ax.set_ylabel(r"alignment $\kappa$")
        ax.set_title(f"beyond the null (dark), L = {depth}")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_phase_diagram(grid: pd.DataFrame, eta: float | None = None):
    """Figure: per depth, log10 ||J_L|| (top row) and top share (bottom row) over (gain, alignment).

    Overlays the theorem's boundary sigma kappa = 1 (solid) and, if `eta` is given, the
    bulk boundary sigma kappa = eta (dashed).
    """
    import matplotlib.pyplot as plt

    depths = sorted(grid["depth"].unique())
    fig, axes = plt.subplots(2, len(depths), figsize=(3.4 * len(depths), 6.2), squeeze=False)
    # Closed at once: pyplot only serves to pick the backend (inline in a notebook, so glued
    # figures render as PNG); the caller owns the figure and nothing is auto-shown twice.
    plt.close(fig)
    gains = np.sort(grid["gain"].unique())
    curve_g = np.linspace(gains.min(), gains.max(), 200)
    for c, depth in enumerate(depths):
        sub = grid[grid["depth"] == depth]
        for r, (col, cmap, label) in enumerate(
            [
                ("log10_norm", "RdBu_r", r"$\log_{10}\|J_L\|_2$"),
                ("top_share", "viridis", "top share"),
            ]
        ):
            ax = axes[r][c]
            table = sub.pivot(index="alignment", columns="gain", values=col)
            if col == "log10_norm":
                lim = float(np.nanmax(np.abs(table.values)))
                kw = {"vmin": -lim, "vmax": lim}
            else:
                kw = {"vmin": 0.0, "vmax": 1.0}
            mesh = ax.pcolormesh(
                table.columns, table.index, table.values, cmap=cmap, shading="nearest", **kw
            )
            fig.colorbar(mesh, ax=ax, label=label)
            ax.plot(curve_g, 1.0 / curve_g, "k-", lw=1.5, label=r"$\sigma\kappa=1$")
            if eta is not None:
                ax.plot(curve_g, eta / curve_g, "k--", lw=1.2, label=rf"$\sigma\kappa={eta}$")
            ax.set_ylim(table.index.min(), table.index.max())
            ax.set_xlabel(r"gain $\sigma$")
            ax.set_ylabel(r"alignment $\kappa$")
            ax.set_title(f"L = {depth}")
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


ATTRACTOR_ANGLE_DEG = 30.0
"""Largest angle between consecutive steps' top output directions that still counts as the
same direction (two random directions in d = 48 are ~82 degrees apart on average)."""
ATTRACTOR_GAP = 2.0
"""Smallest spectral gap s_1 / s_2 of J_L for a direction to count as dominant."""


def top_direction(layers: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Top left singular vector of F_L ... F_1 and its spectral gap s_1 / s_2."""
    J = np.eye(layers[0].shape[0])
    for F in layers:
        J = F @ J
        J /= np.linalg.norm(J)
    u, s, _ = np.linalg.svd(J)
    return u[:, 0], float(s[0] / s[1]) if s[1] > 0 else float("inf")


def attractor_share(
    depth: int,
    gain: float,
    alignment: float | None,
    cfg: PhaseConfig,
    *,
    eps: float = 0.1,
    n_steps: int = 20,
    rng: np.random.Generator,
) -> float:
    """Share of steps in an attractor, by the book's operational definition.

    One chain plays the network; each "decoding step" perturbs every layer independently by
    a relative amount eps (a new input around the same operating point). A step counts when
    J_L has gap s_1/s_2 >= ATTRACTOR_GAP and its top output direction lies within
    ATTRACTOR_ANGLE_DEG of the previous step's.
    """
    base = layer_chain(depth, gain, alignment, cfg.dim, cfg.eta, rng)
    prev, hits = None, []
    cos_min = np.cos(np.deg2rad(ATTRACTOR_ANGLE_DEG))
    for _ in range(n_steps + 1):
        step = []
        for F in base:
            Z = rng.standard_normal(F.shape)
            step.append(F + eps * np.linalg.norm(F, 2) * Z / np.linalg.norm(Z, 2))
        u, gap = top_direction(step)
        if prev is not None:
            hits.append(gap >= ATTRACTOR_GAP and abs(u @ prev) >= cos_min)
        prev = u
    return float(np.mean(hits))
