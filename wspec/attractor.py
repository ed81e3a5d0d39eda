"""The attractor, measured on real decodes: does J_L's top direction persist from step to step?

The Theory chapter's operational definition (`phase.attractor_share` on random chains): a
decode is in an attractor when the depth-L Jacobian has a dominant direction (a spectral gap
s_1/s_2) that stays put while the input moves. In a real decode the input moves by itself:
every step feeds a new token, the encoder output x stays fixed (input held fixed).

What is measured, per clip and per decoding step t (a window of consecutive steps):

- J_L(t) = d h_L / d h_0 at the step's position: the *whole decoder stack's* position-local
  state map, layer after layer, each layer's other positions frozen at the real run
  (`wspec.jacobian.decoder_maps`). It is the product F_L ... F_1 whose top output direction
  is the theorem's u_L (the phase diagram's J_L). The injection part d h_L / d x (x the
  encoder output, T*D dimensions) is not measured: its Lanczos would cost ~1500x more per
  product, and u_L is the state product's direction.
- its top two singular values (gap s_1 / s_2) and top left (output) and right (input)
  singular vectors, by Lanczos on Jacobian-vector products (`jacobian.top_singular`);
- the angle between step t's top direction and step t-1's (singular vectors have no sign,
  so the angle is in [0, 90] degrees).

`persistence` turns angles into per-clip shares at any threshold; `chance_share` is the share
two independent random directions would give, the null the shares are read against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.special import betainc

from wspec import cache as wcache
from wspec import jacobian as jac
from wspec.errors import WspecError
from wspec.phase import ATTRACTOR_ANGLE_DEG, ATTRACTOR_GAP
from wspec.scale import one_thread
from wspec.stats import bootstrap_delta, cell_seed

#: Angles (degrees) of the sensitivity table; the chapter's threshold is ATTRACTOR_ANGLE_DEG.
ANGLES_DEG: tuple[float, ...] = (15.0, ATTRACTOR_ANGLE_DEG, 45.0)


def chance_share(angle_deg: float, dim: int) -> float:
    """P(angle(a, b) <= angle_deg) for independent uniform directions a, b in R^dim (no sign).

    cos^2 of the angle between a fixed and a uniform unit vector is Beta(1/2, (dim-1)/2), so
    P(|cos| >= c) = I_{1-c^2}((dim-1)/2, 1/2), I the regularized incomplete beta function.
    """
    if dim < 2:
        raise WspecError(f"directions need dim >= 2, got {dim}")
    if not 0.0 <= angle_deg <= 90.0:
        raise WspecError(f"angle must be in [0, 90] degrees, got {angle_deg}")
    sin2 = math.sin(math.radians(angle_deg)) ** 2
    return float(betainc((dim - 1) / 2, 0.5, sin2))


def step_angles(directions: np.ndarray) -> np.ndarray:
    """Angles in degrees (0..90) between consecutive rows of `directions` (steps x dim)."""
    d = np.asarray(directions, dtype=float)
    if d.ndim != 2 or len(d) < 2:
        raise WspecError("step_angles needs at least two directions as rows of a 2-D array")
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    cos = np.clip(np.abs(np.sum(d[1:] * d[:-1], axis=1)), 0.0, 1.0)
    return np.degrees(np.arccos(cos))


def stack_map(whisper: torch.nn.Module, run: jac.RunStates, pos: int) -> jac.RowMap:
    """h_0 -> h_L at decoder position `pos`: every layer's position-local state map in turn."""
    maps = [
        jac.decoder_maps(layer, run.dec_inputs[j], run.enc_out, pos)[0]
        for j, layer in enumerate(whisper.decoder.layers)
    ]

    def f(h: jac.Vec) -> jac.Vec:
        for m in maps:
            h = m(h)
        return h

    return f


def window(n_steps: int, k: int) -> list[int]:
    """k consecutive decoding steps centred in 0..n_steps-1 (all of them when k >= n_steps).

    Centred, so the window avoids both the prompt's last position and the end of the decode.
    """
    if k < 2:
        raise WspecError(f"persistence needs at least 2 consecutive steps, got {k}")
    start = max(0, (n_steps - k) // 2)
    return list(range(start, min(n_steps, start + k)))


@torch.no_grad()
def top_at(
    whisper: torch.nn.Module, run: jac.RunStates, step: int, *, tol: float = 1e-4, seed: int = 0
) -> jac.Triplet:
    """Top singular pair of J_L = d h_L / d h_0 at decoding step `step` (Lanczos, one thread)."""
    pos = run.n_prompt - 1 + step
    with one_thread(run.enc_out.device):
        return jac.top_singular(
            stack_map(whisper, run, pos), run.dec_inputs[0][pos], seed=seed, tol=tol
        )


def measure_run(
    model: torch.nn.Module, run: jac.RunStates, *, steps: int = 6, tol: float = 1e-4, seed: int = 0
) -> pd.DataFrame:
    """One row per step of a centred `window`: s1, s2, gap, and the angles of the top output
    (u) and input (v) directions to the previous step's (NaN for the window's first step)."""
    rows, prev = [], None
    for step in window(len(run.tokens) + 1, steps):
        tr = top_at(model.model, run, step, tol=tol, seed=seed)
        angle_u = angle_v = float("nan")
        if prev is not None:
            angle_u = float(step_angles(np.stack([prev.u, tr.u]))[0])
            angle_v = float(step_angles(np.stack([prev.v, tr.v]))[0])
        rows.append(
            {
                "step": step,
                "sigma1": tr.sigma1,
                "sigma2": tr.sigma2,
                "gap": tr.sigma1 / tr.sigma2,
                "angle_u": angle_u,
                "angle_v": angle_v,
                "d_model": int(run.enc_out.shape[-1]),
            }
        )
        prev = tr
    return pd.DataFrame(rows)


def measure_clips(
    loaded,
    clips: dict[str, tuple[str, np.ndarray]],
    *,
    tokens: dict[str, Sequence[int]] | None = None,
    max_new_tokens: int = 24,
    **kwargs,
) -> pd.DataFrame:
    """`measure_run` for every {stimulus_id: (family, audio)}, cached on disk.

    `tokens`: known decodes by stimulus id (the runs' natural decodes); clips without one are
    greedy-decoded. The cache key (`wspec.cache.ATTRACTORS`) covers the model, every clip's
    samples and tokens, the settings and the code.
    """
    tokens = {sid: [int(t) for t in toks] for sid, toks in (tokens or {}).items()}
    key = wcache.ATTRACTORS.key(
        model=loaded.identity,
        clips=jac.clips_digest(clips, tokens),
        settings={"max_new_tokens": max_new_tokens, **kwargs},
    )

    def compute() -> pd.DataFrame:
        frames = []
        for sid, (family, audio) in clips.items():
            run = jac.clip_run(loaded, audio, tokens.get(sid), max_new_tokens)
            frame = measure_run(loaded.model, run, **kwargs)
            frames.append(frame.assign(model=loaded.name, stimulus_id=sid, family=family))
        return pd.concat(frames, ignore_index=True)

    return wcache.fetch_frame(wcache.ATTRACTORS.dir() / f"{key}.parquet", compute)


def persistence(
    steps: pd.DataFrame, angle_deg: float = ATTRACTOR_ANGLE_DEG, min_gap: float = ATTRACTOR_GAP
) -> pd.DataFrame:
    """Per model x clip: shares of consecutive step pairs whose direction persisted.

    Columns n_pairs; share_u / share_v (top output / input direction within `angle_deg` of
    the previous step's); share_attractor (u persisted *and* the step's gap >= `min_gap`:
    the chapter's definition); log_gap (mean log s1/s2 over the clip's steps); chance (the
    share two independent random directions give, `chance_share`). A clip is one unit: its
    steps share its audio and its decode.
    """
    keys = ["model", "stimulus_id", "family"]
    pairs = steps[np.isfinite(steps["angle_u"])]
    if pairs.empty:
        raise WspecError("no consecutive step pairs; measure at least 2 steps per clip")
    out = pairs.assign(
        share_u=pairs["angle_u"] <= angle_deg,
        share_v=pairs["angle_v"] <= angle_deg,
        share_attractor=(pairs["angle_u"] <= angle_deg) & (pairs["gap"] >= min_gap),
    ).groupby(keys, sort=True)
    table = out[["share_u", "share_v", "share_attractor"]].mean().astype(float)
    table.insert(0, "n_pairs", out.size())
    table["log_gap"] = steps.assign(lg=np.log(steps["gap"])).groupby(keys, sort=True)["lg"].mean()
    table["chance"] = [chance_share(angle_deg, int(d)) for d in out["d_model"].first()]
    return table.reset_index().assign(angle_deg=angle_deg)


#: Per-clip columns of `persistence` compared between clean and stressed clips.
COMPARED: tuple[str, ...] = ("share_u", "share_v", "share_attractor", "log_gap")


def compare_groups(
    shares: pd.DataFrame, *, n_boot: int, seed: int = 0, columns: Sequence[str] = COMPARED
) -> pd.DataFrame:
    """Stressed minus clean, per model x angle x column, with a cluster-bootstrap interval.

    `shares`: `persistence` rows with ``group`` ("clean" / "stressed") and ``cluster`` (the
    resampling unit) columns. `stats.bootstrap_delta` draws whole clusters; a side with fewer
    than two units gets no interval (NaN bounds), as that function requires.
    """
    missing = {"group", "cluster"} - set(shares.columns)
    if missing:
        raise WspecError(f"persistence rows need {sorted(missing)} columns; merge the clips in")
    rows = []
    for (model, angle), cell in shares.groupby(["model", "angle_deg"], sort=False):
        clean = cell[cell["group"] == "clean"]
        stressed = cell[cell["group"] == "stressed"]
        for column in columns:
            row = {
                "model": model,
                "angle_deg": angle,
                "quantity": column,
                "clean": float(clean[column].mean()),
                "stressed": float(stressed[column].mean()),
                "n_clean": len(clean),
                "n_stressed": len(stressed),
                "units_clean": clean["cluster"].nunique(),
                "units_stressed": stressed["cluster"].nunique(),
            }
            row["difference"] = row["stressed"] - row["clean"]
            row["ci_low"] = row["ci_high"] = float("nan")
            if min(row["units_clean"], row["units_stressed"]) >= 2:
                delta = bootstrap_delta(
                    clean[column],
                    stressed[column],
                    base_clusters=clean["cluster"].tolist(),
                    other_clusters=stressed["cluster"].tolist(),
                    n_boot=n_boot,
                    seed=cell_seed(seed, model, angle, column),
                )
                row["ci_low"], row["ci_high"] = delta.ci_low, delta.ci_high
            rows.append(row)
    return pd.DataFrame(rows)
