"""Layer gain, alignment and injection coherence measured inside Whisper with torch.func.

What is measured (one stimulus, one model):

- The real run: the encoder on the clip's log-mel, then the decoder teacher-forced on the
  prompt + its own greedy transcript (identical hidden states to the cached greedy loop).
  Forward pre-hooks record the input of every layer at every position.
- A *position-local layer map*: for layer j and position p, f_j(h) = the layer's output at p
  when the layer's input at p is h and every other position keeps its real value (their
  keys/values are frozen at the real run). For a decoder layer the encoder output x enters
  through cross-attention: f_j(h, x). This is the paper's recursion h_j = f_j(h_{j-1}, x)
  restricted to one position; paths through other positions are outside it (documented
  choice, see `wspec.theory.ASSUMPTIONS`).
- F_j = df_j/dh (D x D) is never materialised: Lanczos (ARPACK, via
  `scipy.sparse.linalg.svds` on a LinearOperator whose products are `torch.func.jvp` /
  `torch.func.vjp`) gives the top two singular values sigma_1 >= sigma_2 and the top
  singular vectors u_j (output side) and v_j (input side).
- Alignment kappa_j = |<v_{j+1}, u_j>| (does layer j's strongest output direction feed
  layer j+1's most amplified input direction?), and the gain-alignment ratio
  rho_j = sigma_{1,j} kappa_j — the paper's lambda. Both are NaN for the last layer.
- Decoder injection G_j = df_j/dx (D x T*D). gamma_j = ||v_{j+1}^T G_j||_2 / ||G_j||_F
  (the theorem's projection bound), with ||G_j||_F^2 estimated by Hutchinson's estimator
  E_w ||w^T G_j||^2 over Rademacher probes w in R^D (one batched vjp).

- kappa_sub_j = ||P u_j||, P the projector on span(v_{j+1}, v'_{j+1}) (top two right
  singular vectors of layer j+1): alignment that survives a near-degenerate top pair
  (sigma_2 ~ sigma_1, where v_{j+1} alone is ill-determined).

Null references for a random unit vector in R^D: E|<a, b>| ~ sqrt(2 / (pi D)) (kappa_null),
and E||P a|| for a fixed 2-plane ~ sqrt(pi / (2 D)) (kappa_sub_null; chi with 2 dof / sqrt D).

`clip_means` reduces the per-position table to one row per clip (and layer), the unit that
intervals resample: layers and decoding steps of one clip share its audio and its decode.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import LinearOperator, svds
from torch import nn
from tqdm import tqdm

from wspec import cache as wcache
from wspec.errors import WspecError
from wspec.scale import one_thread

Vec = torch.Tensor
RowMap = Callable[[Vec], Vec]


@dataclass
class RunStates:
    """Hidden states of one real run: inputs of every layer, encoder output, positions."""

    enc_inputs: list[torch.Tensor]  # per encoder layer: (T, D) input
    dec_inputs: list[torch.Tensor]  # per decoder layer: (P, D) input
    enc_out: torch.Tensor  # (T, D), after the encoder's final LayerNorm = x of the decoder
    n_prompt: int  # prompt length; decoding step s sits at position n_prompt - 1 + s
    tokens: list[int]  # generated tokens (without prompt, without EOT)


@dataclass
class Triplet:
    """Top singular values and vectors of one layer map (float64 numpy)."""

    sigma1: float
    sigma2: float
    u: np.ndarray  # left (output-side) top singular vector
    v: np.ndarray  # right (input-side) top singular vector
    n_matvec: int
    v2: np.ndarray | None = None  # right singular vector of sigma2 (lanczos only)


def _record_inputs(layers: Iterable[nn.Module]) -> tuple[list, list[torch.Tensor]]:
    store: list[torch.Tensor] = []

    def hook(_module, args, kwargs):
        hs = args[0] if args else kwargs["hidden_states"]
        store.append(hs.detach()[0])

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    return handles, store


@torch.no_grad()
def capture_run(model: nn.Module, features: torch.Tensor, ids: Sequence[int], n_prompt: int):
    """Run encoder + teacher-forced decoder once, recording every layer's input."""
    whisper = model.model
    handles, enc_store = _record_inputs(whisper.encoder.layers)
    try:
        enc_out = whisper.encoder(features).last_hidden_state
    finally:
        for h in handles:
            h.remove()
    handles, dec_store = _record_inputs(whisper.decoder.layers)
    try:
        ids_t = torch.tensor([list(ids)], device=features.device)
        whisper.decoder(input_ids=ids_t, encoder_hidden_states=enc_out, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return RunStates(
        enc_inputs=enc_store,
        dec_inputs=dec_store,
        enc_out=enc_out[0],
        n_prompt=n_prompt,
        tokens=list(ids[n_prompt:]),
    )


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(N, D) -> (H, N, D/H)."""
    return x.reshape(x.shape[0], n_heads, -1).transpose(0, 1)


def _attend(attn: nn.Module, q_in: Vec, keys: torch.Tensor, values: torch.Tensor) -> Vec:
    """One query row through a WhisperAttention given its projected keys/values (N, D)."""
    H = attn.num_heads
    q = (attn.q_proj(q_in) * attn.scaling).reshape(H, 1, -1)
    w = torch.softmax(q @ _heads(keys, H).transpose(1, 2), dim=-1)  # (H, 1, N)
    out = (w @ _heads(values, H)).reshape(-1)
    return attn.out_proj(out)


def _ffn(layer: nn.Module, h: Vec) -> Vec:
    return h + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(h))))


def _self_attn_row(layer: nn.Module, h: Vec, ctx_k: torch.Tensor, ctx_v: torch.Tensor, pos: int):
    """Residual self-attention at `pos` with the other rows' keys/values frozen."""
    attn = layer.self_attn
    x = layer.self_attn_layer_norm(h)
    k = torch.cat([ctx_k[:pos], attn.k_proj(x)[None], ctx_k[pos + 1 :]])
    v = torch.cat([ctx_v[:pos], attn.v_proj(x)[None], ctx_v[pos + 1 :]])
    return h + _attend(attn, x, k, v)


@torch.no_grad()
def _frozen_kv(layer: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = layer.self_attn_layer_norm(inputs)
    return layer.self_attn.k_proj(x), layer.self_attn.v_proj(x)


def encoder_row_map(layer: nn.Module, inputs: torch.Tensor, pos: int) -> RowMap:
    """f(h): encoder layer output at frame `pos` when its input there is h (others real)."""
    ctx_k, ctx_v = _frozen_kv(layer, inputs)

    def f(h: Vec) -> Vec:
        return _ffn(layer, _self_attn_row(layer, h, ctx_k, ctx_v, pos))

    return f


def decoder_maps(
    layer: nn.Module, inputs: torch.Tensor, enc_out: torch.Tensor, pos: int
) -> tuple[RowMap, Callable[[Vec, torch.Tensor], Vec]]:
    """State map f(h) (encoder output fixed) and joint map f(h, x) of decoder layer at `pos`.

    Only rows <= pos matter (causal); the prefix's keys/values are frozen at the real run.
    """
    ctx_k, ctx_v = _frozen_kv(layer, inputs[: pos + 1])
    cross = layer.encoder_attn
    with torch.no_grad():
        enc_k, enc_v = cross.k_proj(enc_out), cross.v_proj(enc_out)

    def joint(h: Vec, x: torch.Tensor, k_x=None, v_x=None) -> Vec:
        h1 = _self_attn_row(layer, h, ctx_k, ctx_v, pos)
        k_x = cross.k_proj(x) if k_x is None else k_x
        v_x = cross.v_proj(x) if v_x is None else v_x
        h2 = h1 + _attend(cross, layer.encoder_attn_layer_norm(h1), k_x, v_x)
        return _ffn(layer, h2)

    def state(h: Vec) -> Vec:
        return joint(h, enc_out, enc_k, enc_v)

    return state, joint


def linear_maps(f: RowMap, h0: Vec) -> tuple[RowMap, RowMap]:
    """(v -> J v, w -> J^T w) for J = df/dh at h0, from torch.func.vjp only.

    J v is the vjp of the (linear) map w -> J^T w: reverse-over-reverse. On CPU this is
    about 4x faster per product than `torch.func.jvp`, whose dual tensors are rebuilt on
    every call; tests check both against each other and against finite differences.
    """
    _, vjp_fn = torch.func.vjp(f, h0)

    def transpose(w: Vec) -> Vec:
        return torch.func.vjp(f, h0)[1](w)[0]

    _, forward_fn = torch.func.vjp(transpose, torch.zeros_like(h0))
    return (lambda v: forward_fn(v)[0]), (lambda w: vjp_fn(w)[0])


@torch.no_grad()
def top_singular(
    f: RowMap, h0: Vec, method: str = "lanczos", seed: int = 0, tol: float = 1e-6
) -> Triplet:
    """Top singular triplet of the Jacobian of f at h0 from Jacobian-vector products only.

    `lanczos`: ARPACK on J^T J through scipy's svds (k=2 so the gap sigma_1/sigma_2 is
    reported — a small gap makes u, v ill-determined). `power`: plain power iteration on
    J^T J, kept as a simple cross-check. Products run in h0's dtype; ARPACK works in float64.
    The outer no_grad stops autograd from also tracking the weights; torch.func transforms
    ignore it for their own derivatives.
    """
    jv, jtw = linear_maps(f, h0)
    n = h0.numel()
    count = [0]

    def _apply(op: RowMap, x: np.ndarray) -> np.ndarray:
        count[0] += 1
        t = torch.as_tensor(np.ravel(x), dtype=h0.dtype, device=h0.device)
        return op(t).cpu().double().numpy()

    def mv(x: np.ndarray) -> np.ndarray:
        return _apply(jv, x)

    def rmv(y: np.ndarray) -> np.ndarray:
        return _apply(jtw, y)

    v0 = np.random.default_rng(seed).standard_normal(n)
    if method == "lanczos":
        op = LinearOperator((n, n), matvec=mv, rmatvec=rmv, dtype=np.float64)
        u, s, vt = svds(op, k=2, v0=v0, tol=tol, solver="arpack", random_state=seed)
        order = np.argsort(s)[::-1]
        u, s, vt = u[:, order], s[order], vt[order]
        return Triplet(float(s[0]), float(s[1]), u[:, 0], vt[0], count[0], vt[1])
    if method == "power":
        v = v0 / np.linalg.norm(v0)
        sig = 0.0
        for _ in range(1000):
            u = mv(v)
            new = float(np.linalg.norm(u))
            u /= new
            v = rmv(u)
            v /= np.linalg.norm(v)
            if abs(new - sig) <= tol * new:
                sig = new
                break
            sig = new
        return Triplet(sig, float("nan"), u, v, count[0])
    raise WspecError(f"unknown method {method!r}; use 'lanczos' or 'power'.")


@torch.no_grad()
def injection_coherence(
    joint: Callable[[Vec, torch.Tensor], Vec],
    h0: Vec,
    x0: torch.Tensor,
    v_next: np.ndarray,
    n_probes: int = 16,
    seed: int = 0,
) -> tuple[float, float]:
    """(gamma, ||G||_F): gamma = ||v_next^T G||_2 / ||G||_F, G = d joint / dx at (h0, x0).

    ||G||_F^2 = E ||w^T G||^2 over Rademacher w (Hutchinson); all probes and v_next go
    through one batched vjp, so G (D x T*D) is never formed.
    """
    _, vjp_fn = torch.func.vjp(lambda x: joint(h0, x), x0)
    gen = torch.Generator().manual_seed(seed)
    probes = torch.randint(0, 2, (n_probes, h0.numel()), generator=gen).to(h0) * 2 - 1
    vt = torch.as_tensor(v_next, dtype=h0.dtype, device=h0.device)[None]
    rows = torch.func.vmap(vjp_fn)(torch.cat([vt, probes]))[0]
    sq = rows.reshape(rows.shape[0], -1).double().pow(2).sum(-1)
    fro = math.sqrt(float(sq[1:].mean()))
    return math.sqrt(float(sq[0])) / fro, fro


def _pick(n: int, k: int) -> list[int]:
    """k evenly spaced indices of range(n) (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


@torch.no_grad()
def measure_run(
    model: nn.Module,
    run: RunStates,
    *,
    steps: int = 4,
    frames: int = 2,
    n_frames_audio: int | None = None,
    n_probes: int = 16,
    method: str = "lanczos",
    tol: float = 1e-6,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Per (stack, layer, step) gain/alignment/injection rows for one captured run.

    `steps` decoding steps (evenly spaced over prompt end .. last generated token) and
    `frames` encoder frames (evenly spaced over the first `n_frames_audio` frames, i.e.
    the part of the 30 s window that holds the clip) are measured. `tol` is ARPACK's
    relative tolerance: 1e-3 stops after the first Lanczos cycle (about half the products
    of 1e-6) and still gave sigma_1 to 1e-14 and kappa to 1e-8 on tiny.en. `n_probes=0`
    skips the injection coherence (gamma and inj_fro NaN) for callers that use only sigma,
    kappa and rho.
    """
    whisper = model.model
    n_steps = len(run.tokens) + 1
    jobs: list[tuple[str, int, int]] = []
    n_audio = min(n_frames_audio or run.enc_out.shape[0], run.enc_out.shape[0])
    jobs += [("encoder", -1, pos) for pos in _pick(n_audio, frames)]
    jobs += [("decoder", s, run.n_prompt - 1 + s) for s in _pick(n_steps, steps)]
    with one_thread(run.enc_out.device):
        rows = [
            row
            for stack, step, pos in tqdm(jobs, disable=not progress, desc="positions", leave=False)
            for row in _measure_position(
                whisper, run, stack, step, pos, n_probes=n_probes, method=method, tol=tol, seed=seed
            )
        ]
    return pd.DataFrame(rows)


def _measure_position(
    whisper: nn.Module,
    run: RunStates,
    stack: str,
    step: int,
    pos: int,
    *,
    n_probes: int,
    method: str,
    tol: float,
    seed: int,
) -> list[dict]:
    """The rows of every layer of one stack at one position (see measure_run)."""
    layers = whisper.encoder.layers if stack == "encoder" else whisper.decoder.layers
    inputs = run.enc_inputs if stack == "encoder" else run.dec_inputs
    triplets, joints = [], []
    for j, layer in enumerate(layers):
        if stack == "encoder":
            f = encoder_row_map(layer, inputs[j], pos)
            joints.append(None)
        else:
            f, joint = decoder_maps(layer, inputs[j], run.enc_out, pos)
            joints.append(joint)
        triplets.append(top_singular(f, inputs[j][pos], method=method, seed=seed, tol=tol))
    d_model = int(run.enc_out.shape[-1])
    rows = []
    for j, tr in enumerate(triplets):
        nxt = triplets[j + 1] if j + 1 < len(triplets) else None
        kappa = float(abs(nxt.v @ tr.u)) if nxt is not None else float("nan")
        kappa_sub = float("nan")
        if nxt is not None and nxt.v2 is not None:
            kappa_sub = float(np.hypot(nxt.v @ tr.u, nxt.v2 @ tr.u))
        gamma_j, fro = float("nan"), float("nan")
        if joints[j] is not None and nxt is not None and n_probes > 0:
            gamma_j, fro = injection_coherence(
                joints[j], inputs[j][pos], run.enc_out, nxt.v, n_probes, seed
            )
        rows.append(
            {
                "stack": stack,
                "layer": j,
                "step": step,
                "position": pos,
                "sigma1": tr.sigma1,
                "sigma2": tr.sigma2,
                "kappa": kappa,
                "rho": tr.sigma1 * kappa,
                "gamma": gamma_j,
                "inj_fro": fro,
                "n_matvec": tr.n_matvec,
                "d_model": d_model,
                "kappa_null": math.sqrt(2 / (math.pi * d_model)),
                "kappa_sub": kappa_sub,
                "kappa_sub_null": math.sqrt(math.pi / (2 * d_model)),
            }
        )
    return rows


def clip_run(loaded, audio: np.ndarray, tokens: Sequence[int] | None, max_new_tokens: int):
    """A clip's real run (`capture_run`) on its decode: the given tokens, or a greedy decode
    here, cut to `max_new_tokens`. Decode and capture run on one CPU thread: their steps
    are as small as the Jacobian products, and on the shared machine they took 3x longer on
    two threads."""
    from wspec.decoding import greedy_decode, log_mel

    with one_thread(loaded.device):
        features = log_mel(loaded, audio)
        if tokens is None:
            tokens = greedy_decode(loaded, features=features, max_new_tokens=max_new_tokens).tokens
        ids = list(loaded.sot_sequence) + [int(t) for t in tokens[:max_new_tokens]]
        return capture_run(loaded.model, features, ids, len(loaded.sot_sequence))


def clips_digest(clips: dict[str, tuple[str, np.ndarray]], tokens: dict[str, list[int]]) -> str:
    """Hash of every clip's id, family, samples and given decode: the data part of a
    Jacobian-measurement cache key."""
    h = hashlib.sha256()
    for sid, (family, audio) in sorted(clips.items()):
        h.update(f"{sid}/{family}".encode())
        h.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
        h.update(json.dumps(tokens.get(sid)).encode())
    return h.hexdigest()


def measure_clip(
    loaded,
    audio: np.ndarray,
    *,
    stimulus_id: str = "clip",
    family: str = "",
    max_new_tokens: int = 48,
    tokens: Sequence[int] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """Capture one 16 kHz clip's run on its greedy decode and measure every layer (measure_run).

    `tokens`: the clip's decode when it is already known (the spectral pipeline's, so that
    rho is measured on the very rows whose spectrum it is compared with, and the decode is
    not paid twice); else it is greedy-decoded here (`clip_run`). At most `max_new_tokens`
    are used.
    """
    from wspec.audio import SAMPLE_RATE

    run = clip_run(loaded, audio, tokens, max_new_tokens)
    tokens = run.tokens
    n_audio = max(1, int(math.ceil(len(audio) / SAMPLE_RATE * 50)))  # 50 encoder frames / s
    df = measure_run(loaded.model, run, n_frames_audio=n_audio, **kwargs)
    df.insert(0, "family", family)
    df.insert(0, "stimulus_id", stimulus_id)
    df.insert(0, "model", loaded.name)
    df["text"] = loaded.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return df


def measure_clips(
    loaded,
    clips: dict[str, tuple[str, np.ndarray]],
    *,
    tokens: dict[str, Sequence[int]] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """measure_clip over {stimulus_id: (family, audio)}, cached on disk.

    `tokens`: known decodes by stimulus id (see measure_clip); clips without one are decoded.
    The key (`wspec.cache.JACOBIANS`) covers the model and its weights version, every clip's
    samples and given tokens, the keyword arguments and the code, so a change to any of them
    recomputes instead of reusing stale numbers.
    """
    tokens = {sid: [int(t) for t in toks] for sid, toks in (tokens or {}).items()}
    key = wcache.JACOBIANS.key(
        model=loaded.identity, clips=clips_digest(clips, tokens), settings=kwargs
    )

    def compute() -> pd.DataFrame:
        return pd.concat(
            [
                measure_clip(
                    loaded, audio, stimulus_id=sid, family=family, tokens=tokens.get(sid), **kwargs
                )
                for sid, (family, audio) in clips.items()
            ],
            ignore_index=True,
        )

    return wcache.fetch_frame(wcache.JACOBIANS.dir() / f"{key}.parquet", compute)


def partial_factor(log_rho: np.ndarray) -> float:
    """max_k exp|sum_{j>=k} log(rho_j / rho_bar)| over one position's layers (in layer order).

    How far the uniform model rho_bar^{L-k} (rho_bar the geometric mean) misses the actual
    aligned weight prod_{j>=k} rho_j of the worst partial product: 1 if every rho_j is equal.
    """
    dev = np.asarray(log_rho, dtype=float) - np.mean(log_rho)
    return float(np.exp(np.abs(np.cumsum(dev[::-1])).max()))


#: Per-clip quantities of `clip_means`; those starting with "log_" are averaged on log scale.
CLIP_COLUMNS: tuple[str, ...] = (
    "log_rho",
    "log_sigma1",
    "kappa_ratio",
    "kappa_sub_ratio",
    "frac_rho_ge_1",
    "log_partial_factor",
)


def clip_means(
    df: pd.DataFrame, *, stack: str = "decoder", per_layer: bool = False
) -> pd.DataFrame:
    """One row per model x clip (x layer with `per_layer`): the clip's measured positions
    averaged, because a clip's layers and steps share its audio and its decode and so are not
    independent draws; intervals resample these rows (or their clusters), never positions.

    Rows without rho (the last layer: no successor) are left out. Columns: model,
    stimulus_id, family, [layer], n_steps, n_rows and `CLIP_COLUMNS`: log_rho (mean log rho,
    so exp of it is the geometric-mean rho_bar of the uniform model), log_sigma1,
    kappa_ratio and kappa_sub_ratio (alignment over its random-direction null: 1 = chance),
    frac_rho_ge_1, and log_partial_factor (mean over steps of log `partial_factor`; NaN per
    layer, where it is undefined).
    """
    d = df[(df["stack"] == stack) & np.isfinite(df["rho"]) & (df["rho"] > 0)].copy()
    d["log_rho"] = np.log(d["rho"])
    d["log_sigma1"] = np.log(d["sigma1"])
    d["kappa_ratio"] = d["kappa"] / d["kappa_null"]
    d["kappa_sub_ratio"] = d["kappa_sub"] / d["kappa_sub_null"]
    d["frac_rho_ge_1"] = (d["rho"] >= 1).astype(float)
    keys = ["model", "stimulus_id", "family", *(["layer"] if per_layer else [])]
    grouped = d.groupby(keys, sort=True)
    out = grouped.agg(n_steps=("step", "nunique"), n_rows=("rho", "size"))
    out = out.join(grouped[list(CLIP_COLUMNS[:-1])].mean())
    if per_layer:
        out["log_partial_factor"] = np.nan
    else:
        per_step = d.sort_values("layer").groupby([*keys, "step"])["log_rho"].agg(_log_factor)
        out["log_partial_factor"] = per_step.groupby(level=keys).mean()
    return out.reset_index()


def _log_factor(log_rho: pd.Series) -> float:
    return math.log(partial_factor(log_rho.to_numpy())) if len(log_rho) > 1 else math.nan


def summarize_gain_alignment(
    df: pd.DataFrame, max_factor: float = 2.0, by: Sequence[str] = ("model", "stack")
) -> pd.DataFrame:
    """Is the gain-alignment ratio rho = sigma_1 kappa stable enough for the uniform model?

    One row per group (default model x stack; add "family" for clean versus stressed).

    Columns: rho quantiles; `cv_layers` (median over runs of the coefficient of variation of
    rho across layers at one position) and `cv_steps` (median over layers of the CV across
    decoding steps / frames); `frac_rho_ge_1`; `gap_median`, the median sigma_2/sigma_1
    (near 1 means the top singular vectors, hence kappa, are poorly determined);
    `partial_factor`, the median over positions of max_k exp|sum_{j>=k} log(rho_j/rho_bar)|,
    i.e. how far the uniform model rho_bar^{L-k}
    (rho_bar the geometric mean) misses the actual aligned weight prod_{j>=k} rho_j of some
    partial product; and the verdict.

    Verdict rule: "uniform gain supported" iff partial_factor <= `max_factor` (every aligned
    weight the exponential model Eq. 3.3 predicts is right within a factor 2) and all rho_j
    of a position lie on the same side of 1 in >= 90% of positions (so the regime the
    uniform model assigns is the regime each layer is in). Otherwise "not supported".
    """
    d = df[np.isfinite(df["rho"]) & (df["rho"] > 0)].copy()
    d["log_rho"] = np.log(d["rho"])
    out = []
    for key, grp in d.groupby(list(by), sort=True):
        per_pos = []
        for _, run in grp.groupby(["stimulus_id", "stack", "position"], sort=False):
            lr = run.sort_values("layer")["log_rho"].to_numpy()
            rr = np.exp(lr)
            per_pos.append(
                {
                    "cv": float(rr.std() / rr.mean()) if len(rr) > 1 else float("nan"),
                    "factor": partial_factor(lr),
                    "same_side": bool(np.all(lr >= 0) or np.all(lr < 0)),
                }
            )
        pp = pd.DataFrame(per_pos)
        cv_steps = grp.groupby(["stimulus_id", "layer"])["rho"].agg(
            lambda r: r.std(ddof=0) / r.mean() if len(r) > 1 else np.nan
        )
        factor = float(pp["factor"].median())
        same = float(pp["same_side"].mean())
        supported = factor <= max_factor and same >= 0.9
        out.append(
            {
                **dict(zip(by, key, strict=True)),
                "n_rows": len(grp),
                "rho_min": float(grp["rho"].min()),
                "rho_p05": float(grp["rho"].quantile(0.05)),
                "rho_median": float(grp["rho"].median()),
                "rho_p95": float(grp["rho"].quantile(0.95)),
                "rho_max": float(grp["rho"].max()),
                "sigma1_median": float(grp["sigma1"].median()),
                "kappa_median": float(grp["kappa"].median()),
                "kappa_null": float(grp["kappa_null"].iloc[0]),
                "kappa_sub_median": float(grp.get("kappa_sub", pd.Series([np.nan])).median()),
                "kappa_sub_null": float(grp.get("kappa_sub_null", pd.Series([np.nan])).iloc[0]),
                "gamma_median": float(grp["gamma"].median()),
                "gap_median": float((grp["sigma2"] / grp["sigma1"]).median()),
                "frac_rho_ge_1": float((grp["rho"] >= 1).mean()),
                "cv_layers": float(pp["cv"].median()),
                "cv_steps": float(cv_steps.median()),
                "partial_factor": factor,
                "same_side_frac": same,
                "verdict": "uniform gain supported" if supported else "not supported",
            }
        )
    return pd.DataFrame(out)
