"""The paper's K_f: the Kirchhoff index of the activation graph, on graphs with closed forms.

Closed forms are exact up to the round-off of an n ≤ 40 float64 eigen-solve (≈ 1e-13
relative), so 1e-9 relative leaves a wide margin and still fails on any real mistake
(a missing factor N, or summing over the zero eigenvalue, changes values at order 1).
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wspec.spectra import (
    graph_laplacian_eigenvalues,
    kirchhoff_index,
    kirchhoff_log10,
    metric_values,
    nan_reason,
)

TIGHT = 1e-9


def _laplacian_spectrum(graph: nx.Graph) -> np.ndarray:
    lap = nx.laplacian_matrix(graph, weight="weight").toarray().astype(np.float64)
    return np.linalg.eigvalsh(lap)[::-1]


@pytest.mark.parametrize("n", [2, 3, 7, 20, 40])
def test_closed_forms(n: int) -> None:
    assert kirchhoff_index(_laplacian_spectrum(nx.complete_graph(n))) == pytest.approx(
        n - 1, rel=TIGHT
    )
    assert kirchhoff_index(_laplacian_spectrum(nx.path_graph(n))) == pytest.approx(
        (n**3 - n) / 6, rel=TIGHT
    )
    assert kirchhoff_index(_laplacian_spectrum(nx.star_graph(n - 1))) == pytest.approx(
        (n - 1) ** 2, rel=TIGHT
    )
    if n >= 3:
        assert kirchhoff_index(_laplacian_spectrum(nx.cycle_graph(n))) == pytest.approx(
            (n**3 - n) / 12, rel=TIGHT
        )


def test_equals_sum_of_resistance_distances_from_networkx() -> None:
    """An independent definition: Σ_{i<j} R_ij by networkx (weights as conductances)."""
    rng = np.random.default_rng(0)
    graph = nx.gnp_random_graph(12, 0.5, seed=1)
    for u, v in graph.edges:
        graph[u][v]["weight"] = float(rng.uniform(0.1, 2.0))
    assert nx.is_connected(graph)
    total = sum(
        nx.resistance_distance(graph, u, v, weight="weight", invert_weight=False)
        for u in graph
        for v in graph
        if u < v
    )
    assert kirchhoff_index(_laplacian_spectrum(graph)) == pytest.approx(total, rel=1e-8)


def test_k_keeps_the_slowest_modes() -> None:
    mu = _laplacian_spectrum(nx.path_graph(10))
    nonzero = np.sort(mu[mu > 1e-9])
    assert kirchhoff_index(mu, 3) == pytest.approx(10 * np.sum(1 / nonzero[:3]), rel=TIGHT)
    assert kirchhoff_index(mu, 3) < kirchhoff_index(mu)


def test_disconnected_and_one_node_graphs_are_nan_with_a_reason() -> None:
    two = nx.disjoint_union(nx.complete_graph(3), nx.complete_graph(4))
    mu = _laplacian_spectrum(two)
    assert np.isnan(kirchhoff_index(mu))
    assert nan_reason(mu, "log10_kf") == "disconnected graph (2 components)"
    assert np.isnan(kirchhoff_index(np.array([0.0])))
    assert nan_reason(np.array([0.0]), "log10_kf") == "one-node graph"
    assert nan_reason(np.zeros(4), "log10_kf") == "graph without edges"


def test_rank_one_rows_make_a_complete_graph() -> None:
    """Rows μ + a_i v (a rank-one collapse) have |cos| = 1 after centring: Kf = N − 1."""
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(1, 64)) + rng.normal(size=(24, 1)) * rng.normal(size=(1, 64))
    mu = graph_laplacian_eigenvalues(torch.as_tensor(rows)).numpy()
    assert kirchhoff_index(mu) == pytest.approx(23.0, rel=1e-9)
    assert metric_values(mu, "log10_kf") == pytest.approx(np.log10(23.0), rel=1e-9)


def test_dispersed_rows_have_a_larger_index_than_collapsed_ones() -> None:
    rng = np.random.default_rng(3)
    spread = rng.normal(size=(24, 384))  # near-orthogonal rows: weak edges
    collapsed = rng.normal(size=(24, 1)) * rng.normal(size=(1, 384)) + 0.05 * spread
    kf = [
        kirchhoff_log10(graph_laplacian_eigenvalues(torch.as_tensor(x)).numpy())
        for x in (spread, collapsed)
    ]
    assert kf[0] > kf[1] + 1.0


def test_identical_rows_have_no_edges_after_centring() -> None:
    rows = np.tile(np.arange(5.0), (6, 1))
    mu = graph_laplacian_eigenvalues(torch.as_tensor(rows)).numpy()
    assert np.isnan(kirchhoff_log10(mu))
    assert nan_reason(mu, "log10_kf") == "graph without edges"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 30),
    scale=st.floats(1e-3, 1e3),
)
def test_invariant_to_row_scaling_and_order(seed: int, n: int, scale: float) -> None:
    """Documented invariances: each row's scale (cosine weights) and the node order."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16))
    base = kirchhoff_index(graph_laplacian_eigenvalues(torch.as_tensor(x)).numpy())
    scaled = x * scale
    perm = rng.permutation(n)
    for other in (scaled, x[perm]):
        value = kirchhoff_index(graph_laplacian_eigenvalues(torch.as_tensor(other)).numpy())
        assert value == pytest.approx(base, rel=1e-7)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 20))
def test_at_least_the_complete_graph_value(seed: int, n: int) -> None:
    """Edge weights are ≤ 1, and Kf only grows when weights shrink: Kf ≥ N − 1 (Rayleigh)."""
    x = np.random.default_rng(seed).normal(size=(n, 8))
    value = kirchhoff_index(graph_laplacian_eigenvalues(torch.as_tensor(x)).numpy())
    assert np.isnan(value) or value >= (n - 1) * (1 - 1e-9)
