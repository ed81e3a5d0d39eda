"""Run the spectral instrument over a stimulus set and return one tidy table.

For each stimulus: read the audio, greedy-decode it with every capture site hooked
(wspec.capture), turn each site's matrix into an eigen-spectrum (wspec.spectra, batched
per stimulus: one eigen-solve per matrix shape) and compute every metric at every K under
three controls (wspec.seqlen):

  raw                  the metric of the matrix as captured
  matched_T            mean over seeded row subsets of a common size (T₀ decoder rows,
                       F₀ encoder frames); NaN for shorter matrices
  null_ratio/null_diff the metric relative to iid Gaussian matrices of the same shape
                       (activations only; there is no Gaussian analogue of an attention map)
  budget_T             decoder sites only: the first T₀ decision rows of a decode with a
                       fixed budget (end-of-text suppressed until T₀ rows exist), so short
                       hallucinations such as " you" are measured at the common shape too

The decode runs once: with the budget in place, the natural decode's activations are the
first n_tokens + 1 rows (the decoder is causal), so raw/matched_T/null use those rows and
budget_T uses the first T₀.

Results are cached per stimulus under cache_dir("runs", <model>) in files named by a
content hash of (model, stimulus audio sha256, wspec code, settings).  Each file is
written atomically, so an interrupted run resumes where it stopped and a repeated run
only assembles the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

import wspec
from wspec.audio import read_audio
from wspec.capture import ActivationCapture, Captured, Site, encoder_frames
from wspec.decoding import greedy_decode
from wspec.errors import WspecError
from wspec.models import load
from wspec.paths import atomic_path, cache_dir
from wspec.seqlen import (
    apply_null,
    average_metric,
    gaussian_null,
    matched_attention_eigenvalues,
    matched_gram_eigenvalues,
    null_control,
    subset_indices,
)
from wspec.spectra import (
    METRICS,
    attention_eigenvalues,
    gram_eigenvalues,
    metric_values,
    nan_reason,
)
from wspec.stimuli import build_stimuli

SCHEMA_VERSION = 1
COLUMNS: tuple[str, ...] = (
    "schema_version",
    "model",
    "stimulus_id",
    "family",
    "source_id",
    "layer",
    "component",
    "control",
    "metric",
    "K",
    "value",
    "n_tokens",  # generated tokens of the decode (without EOT), same for every row of a stimulus
    "n_rows",  # rows of the analysed matrix: decoder decision positions or encoder frames
    "note",  # why `value` is NaN ('' otherwise)
)
DECODE_COLUMNS: tuple[str, ...] = (
    "model",
    "stimulus_id",
    "family",
    "text",
    "tokens",
    "n_tokens",
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
)
# Source files whose change changes the numbers; their hash is part of every cache key.
_CODE_FILES = ("capture.py", "spectra.py", "seqlen.py", "pipeline.py", "decoding.py", "audio.py")


@dataclass(frozen=True)
class SpectralSettings:
    """Everything besides model and audio that the numbers depend on (part of the cache key)."""

    ks: tuple[int, ...] = (10, 0)  # dominant modes K; 0 = full spectrum
    matched_rows: int = 12  # T₀ decoder rows (≥ K + 2 so K = 10 is defined after centring)
    matched_frames: int = 150  # F₀ encoder frames (3 s of audio)
    n_subsets: int = 8  # random row subsets averaged per matched decoder value
    encoder_subsets: int = 2  # ≥ 150-frame subsets vary little; the eigen-solves are costly
    null_draws: int = 8  # Gaussian matrices per null expectation
    seed: int = 0
    max_new_tokens: int = 224  # openai-whisper's sample_len


def code_version() -> str:
    """Hash of the package version and the source of the modules that produce the numbers."""
    root = Path(wspec.__file__).parent
    h = hashlib.sha256(wspec.__version__.encode())
    files = [root / f for f in _CODE_FILES] + sorted((root / "models").glob("*.py"))
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stimulus_key(
    model: str, sha256: str, settings: SpectralSettings, code: str, device: str = "cpu"
) -> str:
    """Content address of one stimulus result (device type included: float32 forward passes
    differ slightly between CPU and GPU)."""
    payload = json.dumps(
        {
            "schema": SCHEMA_VERSION,
            "model": model,
            "device": device,
            "audio": sha256,
            "code": code,
            "settings": dataclasses.asdict(settings),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# --- spectra of one captured decode ---------------------------------------------------
def _groups(sites: list[Site], matrices: dict[str, torch.Tensor]) -> list[list[Site]]:
    """Sites sharing kind (activation/map), stack and matrix shape: one eigen-solve each."""
    groups: dict[tuple, list[Site]] = {}
    for s in sites:
        groups.setdefault((s.is_map, s.stack, tuple(matrices[s.name].shape)), []).append(s)
    return list(groups.values())


def _group_rows(
    group: list[Site], matrices: dict[str, torch.Tensor], settings: SpectralSettings
) -> dict[str, list[dict]]:
    """Rows of every site in one shape group, metrics vectorised over the group."""
    x = torch.stack([matrices[s.name] for s in group])  # (B, N, w)
    n_rows, width = x.shape[1:]
    is_map, stack = group[0].is_map, group[0].stack
    t0 = settings.matched_frames if stack == "encoder" else settings.matched_rows
    subsets = settings.n_subsets if stack == "decoder" else settings.encoder_subsets
    lam = (attention_eigenvalues if is_map else gram_eigenvalues)(x).cpu().numpy()
    idx = subset_indices(n_rows, t0, subsets, settings.seed)
    lam_sub = None
    if idx is not None:
        fn = matched_attention_eigenvalues if is_map else matched_gram_eigenvalues
        lam_sub = fn(x, idx).cpu().numpy()  # (B, R, m)
    null = None
    if not is_map:
        null = gaussian_null(n_rows, width, settings.ks, settings.null_draws, settings.seed)
    n_max = max(n_rows, width)
    out: dict[str, list[dict]] = {s.name: [] for s in group}
    for k in settings.ks:
        for m in METRICS:
            raw = np.atleast_1d(metric_values(lam, m, k, n_max))
            sub = np.full(len(group), np.nan)
            if lam_sub is not None:
                sub = average_metric(lam_sub, m, k, max(t0, width))
            normed = None if null is None else apply_null(m, raw, null[(m, k)])
            for b, s in enumerate(group):
                why = nan_reason(lam[b], m, k, n_max) if np.isnan(raw[b]) else ""
                why_sub = (
                    ""
                    if np.isfinite(sub[b])
                    else (
                        f"fewer than {t0} rows" if lam_sub is None else "undefined on every subset"
                    )
                )
                cells = [("raw", raw[b], why), ("matched_T", sub[b], why_sub)]
                if normed is not None:
                    why_null = why or ("" if np.isfinite(normed[b]) else "null undefined")
                    cells.append((null_control(m), normed[b], why_null))
                base = {"layer": s.layer, "component": s.component, "metric": m, "K": k}
                out[s.name].extend(
                    base | {"control": c, "value": float(v), "n_rows": n_rows, "note": note}
                    for c, v, note in cells
                )
    return out


def spectral_rows(captured: Captured, sites: list[Site], settings: SpectralSettings) -> list[dict]:
    """Tidy rows (layer, component, control, metric, K, value, n_rows, note) of one decode,
    in site order."""
    by_site: dict[str, list[dict]] = {}
    for group in _groups(sites, captured.matrices):
        by_site |= _group_rows(group, captured.matrices, settings)
    return [row for s in sites for row in by_site[s.name]]


def decoder_prefix(captured: Captured, n_rows: int) -> Captured:
    """The first `n_rows` decision rows of every decoder site (encoder sites untouched).

    A causal self-attention map keeps the columns those rows can see (prompt included).
    """
    matrices = {}
    for name, m in captured.matrices.items():
        if not name.startswith("decoder."):
            matrices[name] = m
        elif name.endswith(".self_attn_map"):
            matrices[name] = m[:n_rows, : n_rows + m.shape[1] - m.shape[0]]
        else:
            matrices[name] = m[:n_rows]
    return Captured(matrices, min(n_rows, captured.n_rows_decoder), captured.n_frames)


# --- one stimulus, cached ----------------------------------------------------------------
def _analyse_stimulus(
    loaded, capture: ActivationCapture, stim: pd.Series, settings: SpectralSettings
):
    """Decode one stimulus under capture; return (rows DataFrame, decode dict)."""
    audio = read_audio(stim["path"], allow_long=True)  # Whisper sees the first 30 s
    capture.start(encoder_frames(len(audio)))
    decoded = greedy_decode(
        loaded,
        audio,
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.matched_rows,
    )
    captured = capture.collect()
    natural_rows = min(len(decoded.tokens) + 1, captured.n_rows_decoder)
    rows = spectral_rows(decoder_prefix(captured, natural_rows), capture.sites, settings)
    decoder_sites = [s for s in capture.sites if s.stack == "decoder"]
    budget = decoder_prefix(captured, settings.matched_rows)
    rows += [
        r | {"control": "budget_T"}
        for r in spectral_rows(budget, decoder_sites, settings)
        if r["control"] == "raw"
    ]
    ident = {
        "schema_version": SCHEMA_VERSION,
        "model": loaded.name,
        "stimulus_id": str(stim["id"]),
        "family": str(stim["family"]),
        "source_id": str(stim["source_id"]),
        "n_tokens": len(decoded.tokens),
    }
    df = pd.DataFrame([ident | r for r in rows], columns=list(COLUMNS))
    decode = {
        "model": loaded.name,
        "stimulus_id": str(stim["id"]),
        "family": str(stim["family"]),
        "text": decoded.text,
        "tokens": json.dumps(decoded.tokens),
        "n_tokens": len(decoded.tokens),
        "avg_logprob": decoded.avg_logprob,
        "no_speech_prob": decoded.no_speech_prob,
        "compression_ratio": decoded.compression_ratio,
    }
    return _typed(df), decode


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("schema_version", "layer", "K", "n_tokens", "n_rows"):
        df[col] = df[col].astype("int64")
    df["value"] = df["value"].astype("float64")
    for col in (
        "model",
        "stimulus_id",
        "family",
        "source_id",
        "component",
        "control",
        "metric",
        "note",
    ):
        df[col] = df[col].astype(str)
    return df


def _write_result(path: Path, df: pd.DataFrame, decode: dict) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {}) | {b"wspec_decode": json.dumps(decode).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_result(path: Path) -> tuple[pd.DataFrame, dict]:
    """One cached stimulus result: (rows, decode dict)."""
    table = pq.read_table(path)
    return table.to_pandas(), json.loads(table.schema.metadata[b"wspec_decode"])


# --- the run --------------------------------------------------------------------------------
def default_output(model: str, set_name: str) -> Path:
    """Where `run_model` writes the assembled table unless told otherwise."""
    return cache_dir("runs") / f"{_safe(model)}__{_safe(set_name)}.parquet"


def run_model(
    spec: str,
    set_name: str = "default",
    out: str | Path | None = None,
    progress: bool = True,
    *,
    manifest: pd.DataFrame | None = None,
    settings: SpectralSettings | None = None,
    device: str | None = None,
    loaded=None,
    cache: str | Path | None = None,
) -> pd.DataFrame:
    """Spectral table of model `spec` on a stimulus set (see module docstring).

    `manifest` overrides the set (any DataFrame with the manifest columns); `loaded`
    reuses an already loaded model; `cache` replaces cache_dir("runs") as the folder of
    per-stimulus results.  Writes the table to `out` (default:
    `default_output(spec, set_name)`) and the decodes beside it (`*.decodes.parquet`).
    """
    settings = settings or SpectralSettings()
    if manifest is None:
        manifest = build_stimuli(set_name, progress=progress)
    if manifest.empty:
        raise WspecError(
            f"stimulus set {set_name!r} is empty; build it with `wspec stimuli build`."
        )
    loaded = loaded or load(spec, device=device)
    code = code_version()
    root = Path(cache) if cache is not None else cache_dir("runs")
    folder = root / _safe(loaded.name)
    tables: list[pd.DataFrame] = []
    decodes: list[dict] = []
    with ActivationCapture(loaded.model) as capture:
        bar = tqdm(
            list(manifest.itertuples(index=False)),
            desc=f"spectra {loaded.name}",
            unit="stim",
            **({} if progress else {"disable": True}),  # else TQDM_DISABLE decides
        )
        for stim in bar:
            stim = pd.Series(stim._asdict())
            sha = str(stim["sha256"])
            key = stimulus_key(loaded.identity, sha, settings, code, loaded.device.type)
            path = folder / f"{_safe(str(stim['id']))}-{key}.parquet"
            if path.is_file():
                df, decode = read_result(path)
            else:
                df, decode = _analyse_stimulus(loaded, capture, stim, settings)
                _write_result(path, df, decode)
            tables.append(df)
            decodes.append(decode)
    table = _typed(pd.concat(tables, ignore_index=True))
    target = Path(out) if out is not None else default_output(loaded.name, set_name)
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=False)
    decode_df = pd.DataFrame(decodes, columns=list(DECODE_COLUMNS))
    with atomic_path(target.with_name(target.stem + ".decodes.parquet")) as tmp:
        decode_df.to_parquet(tmp, index=False)
    return table
