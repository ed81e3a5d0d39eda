"""Direction persistence: exact null shares, synthetic chains with known answers, real tiny.en."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from wspec import attractor as at
from wspec import jacobian as jac
from wspec.errors import WspecError
from wspec.scale import one_thread


@pytest.mark.parametrize("angle", [10.0, 30.0, 45.0, 80.0])
def test_chance_share_closed_forms(angle: float) -> None:
    """d = 2: the sign-free angle is uniform on [0, 90]; d = 3: P(|cos| >= c) = 1 - c
    (Archimedes). Both exact, so the tolerance is float rounding (1e-12)."""
    assert at.chance_share(angle, 2) == pytest.approx(angle / 90, abs=1e-12)
    assert at.chance_share(angle, 3) == pytest.approx(1 - math.cos(math.radians(angle)), abs=1e-12)


def test_chance_share_bad_input() -> None:
    with pytest.raises(WspecError, match="dim >= 2"):
        at.chance_share(30.0, 1)
    with pytest.raises(WspecError, match=r"\[0, 90\]"):
        at.chance_share(120.0, 5)
    with pytest.raises(WspecError, match="at least 2"):
        at.window(10, 1)


def _top_direction(matrix: np.ndarray, seed: int) -> jac.Triplet:
    """The package's Lanczos path (jacobian.top_singular) on a fixed linear map."""
    a = torch.as_tensor(matrix)
    return jac.top_singular(lambda h: a @ h, torch.zeros(a.shape[1], dtype=a.dtype), seed=seed)


def _steps(triplets: list[jac.Triplet]) -> pd.DataFrame:
    """A `measure_run`-shaped table of consecutive steps from their top triplets."""
    u = at.step_angles(np.stack([t.u for t in triplets]))
    v = at.step_angles(np.stack([t.v for t in triplets]))
    dim = len(triplets[0].u)
    return pd.DataFrame(
        {
            "model": "synthetic",
            "stimulus_id": "chain",
            "family": "none",
            "step": range(len(triplets)),
            "gap": [t.sigma1 / t.sigma2 for t in triplets],
            "angle_u": [np.nan, *u],
            "angle_v": [np.nan, *v],
            "d_model": dim,
        }
    )


def test_fixed_rank_one_chain_persists() -> None:
    """The same rank-one chain (gain 1.5, alignment 0.9, 6 layers, d = 24) at every step, each
    step with a fresh 1 % perturbation: one direction with a large gap, so every share is 1."""
    rng = np.random.default_rng(0)
    dim, depth = 24, 6
    dirs = [v / np.linalg.norm(v) for v in rng.standard_normal((depth + 1, dim))]
    layers = [1.5 * np.outer(dirs[j + 1], dirs[j]) for j in range(depth)]
    triplets = []
    for step in range(8):
        product = np.eye(dim)
        for F in layers:
            product = (F + 0.01 * rng.standard_normal((dim, dim)) / math.sqrt(dim)) @ product
        triplets.append(_top_direction(product, seed=step))
    share = at.persistence(_steps(triplets)).iloc[0]
    assert share["n_pairs"] == 7
    assert share["share_u"] == share["share_v"] == share["share_attractor"] == 1.0
    assert share["chance"] < 1e-6  # d = 24 at 30 degrees: persistence is not chance


def test_independent_random_directions_give_the_chance_share() -> None:
    """Top directions of independent Gaussian matrices are uniform (rotation invariance), and
    consecutive angles are independent given the shared middle vector, so the share of pairs
    within the angle is binomial around chance_share: checked within 4 standard errors."""
    rng = np.random.default_rng(1)
    dim, n = 4, 400
    triplets = [_top_direction(rng.standard_normal((dim, dim)), seed=i) for i in range(n)]
    steps = _steps(triplets)
    for angle in at.ANGLES_DEG:
        row = at.persistence(steps, angle_deg=angle).iloc[0]
        p = at.chance_share(angle, dim)
        se = math.sqrt(p * (1 - p) / row["n_pairs"])
        assert row["chance"] == pytest.approx(p, abs=1e-15)
        for column in ("share_u", "share_v"):
            assert abs(row[column] - p) <= 4 * se, (angle, column, row[column], p)


@pytest.mark.slow  # 16-50 s on the shared 2-core machine, by its load (the full Jacobian)
def test_real_tiny_en_stack_jacobian(tiny_en, sentence_audio, sentence_text) -> None:
    """On real weights and speech (teacher-forced on the spoken sentence): the stacked map
    reproduces the decoder's real output (float32: 1e-4), its Lanczos triplet matches a full
    SVD of the materialised 384 x 384 Jacobian (ARPACK tol 1e-4 on float32 products: rel 1e-3
    on sigma, |cos| > 0.999 on u and v), and measure_run reports that step's gap."""
    tokens = tiny_en.tokenizer.encode(" " + sentence_text, add_special_tokens=False)[:8]
    run = jac.clip_run(tiny_en, sentence_audio, tokens, 8)
    whisper = tiny_en.model.model
    steps = at.measure_run(tiny_en.model, run, steps=2)
    step = int(steps["step"].iloc[1])
    assert step == steps["step"].iloc[0] + 1  # consecutive
    assert steps["angle_u"].isna().tolist() == [True, False]
    assert 0 <= steps["angle_u"].iloc[1] <= 90 and 0 <= steps["angle_v"].iloc[1] <= 90

    pos = run.n_prompt - 1 + step
    f = at.stack_map(whisper, run, pos)
    h0 = run.dec_inputs[0][pos]
    with torch.no_grad(), one_thread(h0.device):  # weights untracked, one thread
        ids = torch.tensor([list(tiny_en.sot_sequence) + run.tokens])
        real = whisper.decoder(input_ids=ids, encoder_hidden_states=run.enc_out[None])
        out = whisper.decoder.layer_norm(f(h0))
        full = torch.func.jacrev(f)(h0).double().numpy()
    torch.testing.assert_close(out, real.last_hidden_state[0, pos], rtol=1e-4, atol=1e-4)
    u, s, vt = np.linalg.svd(full)
    tr = at.top_at(whisper, run, step)
    assert tr.sigma1 == pytest.approx(s[0], rel=1e-3)
    assert tr.sigma2 == pytest.approx(s[1], rel=1e-3)
    assert abs(tr.u @ u[:, 0]) > 0.999 and abs(tr.v @ vt[0]) > 0.999
    assert steps["gap"].iloc[1] == pytest.approx(s[0] / s[1], rel=2e-3)


def test_compare_groups_resamples_clusters() -> None:
    """Clean clips all persist, stressed never: difference −1 with a degenerate interval at −1
    (every resample gives it; exact). One clean unit (two clips of one source): no interval."""
    shares = pd.DataFrame(
        {
            "model": "m",
            "angle_deg": 30.0,
            "group": ["clean"] * 3 + ["stressed"] * 3,
            "cluster": ["a", "b", "c", "d", "e", "f"],
            "share_u": [1.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        }
    )
    row = at.compare_groups(shares, n_boot=200, columns=["share_u"]).iloc[0]
    assert (row["difference"], row["ci_low"], row["ci_high"]) == (-1.0, -1.0, -1.0)
    one = shares.assign(cluster=["a", "a", "a", "d", "e", "f"])
    row = at.compare_groups(one, n_boot=200, columns=["share_u"]).iloc[0]
    assert row["units_clean"] == 1 and np.isnan(row["ci_low"]) and row["difference"] == -1.0
    with pytest.raises(WspecError, match="cluster"):
        at.compare_groups(shares.drop(columns="cluster"), n_boot=200)
