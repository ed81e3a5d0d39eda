"""The sequence-length control: Gaussian activations must not drift with T under it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wspec import seqlen
from wspec.seqlen import (
    apply_null,
    average_metric,
    gaussian_null,
    length_curve,
    matched_attention_eigenvalues,
    matched_gram_eigenvalues,
    null_control,
    prefix_indices,
    subset_indices,
    window_indices,
)
from wspec.spectra import gram_eigenvalues, metric_values

D = 384  # tiny's width
T0 = 12
LENGTHS = (12, 24, 48, 96, 192)
# Between-draw standard deviation of each metric on one 12×384 Gaussian matrix, measured
# over 400 seeded draws: n_eff 0.03, log10 K_f 0.027, α 0.021 (K = 10 and K = 0 alike).
# Matched values average 8 row subsets, which for T close to T0 overlap, so we allow
# 4 single-draw SDs: a pass cannot come from luck, a T-dependence of the size the raw
# metric shows (below) cannot pass.
TOL = {"n_eff": 0.12, "log10_cond": 0.11, "alpha": 0.09}


def _gaussian(t: int, seed: int) -> torch.Tensor:
    return torch.randn(t, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _raw_and_matched(metric: str, k: int) -> tuple[list[float], list[float]]:
    raw, matched = [], []
    for i, t in enumerate(LENGTHS):
        x = _gaussian(t, 100 + i)
        raw.append(float(metric_values(gram_eigenvalues(x).numpy(), metric, k, max(t, D))))
        idx = subset_indices(t, T0, 8, seed=0)
        sub = matched_gram_eigenvalues(x, idx).numpy()
        matched.append(float(average_metric(sub, metric, k, max(T0, D))))
    return raw, matched


@pytest.mark.parametrize("metric", ["n_eff", "log10_cond", "alpha"])
@pytest.mark.parametrize("k", [10, 0])
def test_matched_T_is_flat_in_T_for_gaussian_activations(metric: str, k: int) -> None:
    raw, matched = _raw_and_matched(metric, k)
    reference = gaussian_null(T0, D, (k,), draws=64, seed=1)[(metric, k)]
    assert np.max(np.abs(np.array(matched) - reference)) < TOL[metric]
    # ...while the raw metric drifts with T by more than the tolerance and by more than
    # 3× the spread of the matched values (K = 10 n_eff is the one exception: its top-10
    # window is already nearly flat for Gaussian data)
    if not (metric == "n_eff" and k == 10):
        drift = abs(raw[-1] - raw[0])
        assert drift > TOL[metric]
        assert drift > 3 * (max(matched) - min(matched))


@pytest.mark.parametrize("metric", ["n_eff", "participation_ratio", "log10_cond", "alpha"])
def test_null_normalisation_is_flat_in_T_including_short_decodes(metric: str) -> None:
    # T = 2 is tiny.en's " you" on silence: raw N_eff = 1 by construction, null ratio 1.
    lengths = (2, 3, 5, *LENGTHS)
    values = []
    for i, t in enumerate(lengths):
        x = _gaussian(t, 200 + i)  # independent of the null's own draws
        lam = gram_eigenvalues(x).numpy()
        raw = float(metric_values(lam, metric, 0, max(t, D)))
        values.append(apply_null(metric, raw, gaussian_null(t, D, (0,))[(metric, 0)]))
    values = np.array(values)
    finite = values[np.isfinite(values)]
    if null_control(metric) == "null_ratio":
        # ratio of two near-identical Gaussian metrics: within 3 % of 1 for every T
        assert np.all(np.abs(finite - 1.0) < 0.03)
    else:
        # difference: within 4 single-draw SDs of 0 (see TOL)
        assert np.all(np.abs(finite) < TOL[metric])
    # α and K_f need ≥ 2 nonzero eigenvalues: T = 2 is NaN, everything else defined
    assert np.isfinite(values[1:]).all()


def test_raw_effective_rank_of_two_rows_is_one() -> None:
    lam = gram_eigenvalues(_gaussian(2, 0)).numpy()
    assert float(metric_values(lam, "n_eff", 0)) == pytest.approx(1.0, rel=1e-9)


def test_subsets_are_seeded_sorted_and_refuse_short_matrices() -> None:
    a = subset_indices(40, T0, 8, seed=3)
    b = subset_indices(40, T0, 8, seed=3)
    assert a.shape == (8, T0)
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a, axis=1) > 0)  # sorted, no repeats
    assert not np.array_equal(a, subset_indices(40, T0, 8, seed=4))
    assert subset_indices(T0 - 1, T0, 8, seed=3) is None
    np.testing.assert_array_equal(subset_indices(T0, T0, 8, seed=3), np.arange(T0)[None])


def test_matched_attention_rows_are_renormalised() -> None:
    a = torch.softmax(torch.randn(2, 30, 100, generator=torch.Generator().manual_seed(2)), -1)
    lam = matched_attention_eigenvalues(a, subset_indices(30, T0, 4, seed=0)).numpy()
    assert lam.shape == (2, 4, T0)
    np.testing.assert_allclose(lam[..., 0], 1.0, rtol=1e-12)  # degree-normalised top mode


def test_null_is_cached_and_reproducible(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path))
    seqlen._gaussian_null.cache_clear()
    first = gaussian_null(17, 33, (10, 0), draws=4, seed=9)
    (stored,) = (tmp_path / "nulls").glob("*.json")
    seqlen._gaussian_null.cache_clear()
    assert gaussian_null(17, 33, (10, 0), draws=4, seed=9) == first  # read back from disk
    stored.unlink()
    seqlen._gaussian_null.cache_clear()
    assert gaussian_null(17, 33, (10, 0), draws=4, seed=9) == first  # recomputed, seeded


def test_length_curve_shows_raw_drift_and_flat_controls() -> None:
    x = torch.randn(96, D, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    curve = length_curve(x, [2, 6, 12, 24, 48, 96]).set_index("T")
    assert curve["raw"].is_monotonic_increasing
    assert curve.loc[2, "raw"] == pytest.approx(1.0, rel=1e-9)
    assert curve.loc[[2, 6], "matched_T"].isna().all()  # shorter than T0 = 12
    matched = curve.loc[[12, 24, 48, 96], "matched_T"]
    assert matched.max() - matched.min() < TOL["n_eff"]
    assert np.all(np.abs(curve["null"] - 1.0) < 0.03)  # ratio, see the null test above


def test_prefix_is_never_padded() -> None:
    assert prefix_indices(23, 24) is None
    assert prefix_indices(30, 24).tolist() == [list(range(24))]


@pytest.mark.parametrize("n_rows", [24, 25, 40, 225])
def test_windows_cover_every_row_within_the_cap(n_rows: int) -> None:
    idx = window_indices(n_rows, 24, max_windows=32)
    assert idx.shape[1] == 24 and len(idx) <= 32
    assert set(idx.ravel()) == set(range(n_rows))  # every natural row is used
    assert (np.diff(idx, axis=1) == 1).all()  # consecutive rows
    assert window_indices(23, 24) is None
