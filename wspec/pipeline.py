"""Run the spectral instrument over a stimulus set and return one tidy table.

For each stimulus: read the audio, greedy-decode it with every capture site hooked
(wspec.capture), turn each site's matrix into spectra (wspec.spectra, batched per stimulus:
one eigen-solve per matrix shape) and compute every metric at every K under these controls
(wspec.seqlen).  Everything except budget_T is measured on the *natural* rows only: the
decision rows of tokens the model chose before its own end-of-text.

  natural_T            decoder: the first T₀ natural rows; NaN (never padded) for decodes
                       with fewer — the primary control of Table 1
  natural_win          decoder: the mean over T₀-row windows of the natural rows (a second
                       estimate that uses the whole decode, not just its start)
  raw                  the metric of the natural matrix as captured (its own length)
  matched_T            mean over seeded row subsets of a common size (T₀ decoder rows,
                       F₀ encoder frames); NaN for shorter matrices
  null_ratio/null_diff the metric relative to iid Gaussian matrices of the same shape
                       (activations only; there is no Gaussian analogue of an attention map)
  budget_T             SENSITIVITY ANALYSIS ONLY, decoder sites: the first T₀ decision rows
                       of a decode whose end-of-text is suppressed until T₀ rows exist, so a
                       short decode is padded with a continuation the model did not choose
  sens:*               SENSITIVITY ANALYSIS ONLY, decoder cross-attention: natural_T with
                       one analysis choice changed (uncentred rows, singular values, K = 5,
                       without the prompt row, T₀ = 16 or 32)

The decode runs once: with the budget in place, the natural decode's activations are the
first n_tokens + 1 rows (the decoder is causal), so every natural control uses those rows
and budget_T uses the first T₀.

The same decode also leaves two small per-clip feature vectors for the hallucination probes
(`probe_features`, written to `*.features.parquet`): LapEigvals-style top-k Laplacian
eigenvalues of every decoder layer's per-head cross-attention map, and the mean-pooled
residual state of the middle decoder layer, both over the natural rows.

Results are cached per stimulus under the `wspec.cache.RUNS` folder, <model>/, in files named
by a content hash of (model, stimulus audio sha256, the code RUNS declares, settings).  Each file is
written atomically, so an interrupted run resumes where it stopped and a repeated run
only assembles the table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from wspec import cache as wcache
from wspec.audio import read_audio
from wspec.capture import Captured, Site, all_sites
from wspec.errors import WspecError
from wspec.interventions import run_with_cache
from wspec.models import load
from wspec.paths import atomic_path, safe_name
from wspec.scale import SERIAL, one_thread, run_tasks, scheduler_choice
from wspec.seqlen import (
    apply_null,
    average_metric,
    gaussian_null,
    null_control,
    prefix_indices,
    subset_indices,
    window_indices,
)
from wspec.spectra import (
    GRAPH_METRICS,
    MAX_GRAPH_NODES,
    METRICS,
    attention_eigenvalues,
    cross_attention_lap_eigvals,
    gram_eigenvalues,
    graph_laplacian_eigenvalues,
    metric_values,
    nan_reason,
)
from wspec.stimuli import build_stimuli
from wspec.units import model_input_key, resampling_unit

#: Probe features of a clip: "dec_cross_attn_lap/h<head>_eig<rank>/L<layer>" (the top
#: `LAP_K` eigenvalues, see spectra.cross_attention_lap_eigvals) and "hidden:L<layer>:<i>"
#: (the mean-pooled residual state of decoder layer L // 2, one column per dimension).
LAP_COMPONENT = "dec_cross_attn_lap"
LAP_K = 4
HIDDEN_PREFIX = "hidden:"
#: Metrics of the sensitivity variants (Table 1's three, plus the condition number that the
#: book called K_f before it measured the paper's Kirchhoff index).
SENSITIVITY_METRICS: tuple[str, ...] = ("n_eff", "log10_kf", "alpha", "log10_cond")
COLUMNS: tuple[str, ...] = (
    "model",
    "stimulus_id",
    "family",
    "source_id",
    "cluster",  # the independent resampling unit (wspec.units.resampling_unit)
    "input_key",  # hash of the 30 s window Whisper sees: equal keys = the same model input
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
#: Decoder parts whose whole eigen-spectra every run keeps, for the figures and the KL test
#: (the outputs of Table 1's components), so that nothing downstream decodes a clip again.
EIGEN_PARTS: tuple[str, ...] = ("cross_attn", "self_attn", "ffn")
#: Columns of a run's eigen-spectra table (`<run>.eigen.parquet`): per clip, decoder layer,
#: component and control ("raw": the natural decode; "budget_T": its first T0 rows, forced
#: where the decode is shorter), the eigenvalues in decreasing order with their rank.
EIGEN_COLUMNS: tuple[str, ...] = (
    "model",
    "stimulus_id",
    "family",
    "source_id",
    "cluster",
    "input_key",
    "n_tokens",
    "layer",
    "component",
    "control",
    "n_rows",
    "rank",
    "eigenvalue",
)
DECODE_COLUMNS: tuple[str, ...] = (
    "model",
    "stimulus_id",
    "family",
    "cluster",
    "input_key",
    "text",
    "tokens",
    "n_tokens",
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
)
#: Columns of a cached per-stimulus result: everything but the resampling units, which are a
#: property of the design (wspec.units), added when the table is assembled, so that a change
#: to the units never recomputes a spectrum.
SPECTRAL_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in ("cluster", "input_key"))


@dataclass(frozen=True)
class SpectralSettings:
    """Everything besides model and audio that the numbers depend on (part of the cache key)."""

    ks: tuple[int, ...] = (10, 0)  # dominant modes K; 0 = full spectrum
    # T₀ decoder rows: centred, T₀ rows have T₀ − 1 nonzero eigenvalues, so K = 10 is the
    # top 43 % of the spectrum (at T₀ = 12 it was all of it); 24 natural tokens is a long
    # sentence, which the paper's long, wrong "Hell" decodes reach and a one-word
    # hallucination does not (see natural_T).
    matched_rows: int = 24
    sensitivity_rows: tuple[int, ...] = (16, 32)  # T₀ alternatives of the sensitivity table
    sensitivity_k: int = 5  # K alternative of the sensitivity table
    matched_frames: int = 150  # F₀ encoder frames (3 s of audio)
    n_subsets: int = 8  # random row subsets averaged per matched decoder value
    encoder_subsets: int = 2  # ≥ 150-frame subsets vary little; the eigen-solves are costly
    null_draws: int = 8  # Gaussian matrices per null expectation
    seed: int = 0
    max_new_tokens: int = 224  # openai-whisper's sample_len


def stimulus_key(model: str, sha256: str, settings: SpectralSettings, device: str = "cpu") -> str:
    """Content address of one stimulus result (`wspec.cache.RUNS`: the code it declares, the
    weights, the audio, the settings and the device type — float32 forward passes differ
    slightly between CPU and GPU)."""
    return wcache.RUNS.key(
        model=model, device=device, audio=sha256, settings=dataclasses.asdict(settings)
    )


# --- spectra of one captured decode ---------------------------------------------------
def _groups(sites: list[Site], matrices: dict[str, torch.Tensor]) -> list[list[Site]]:
    """Sites measured alike (same kind, stack, matrix shape and set of controls — see
    `_variants`): one batched eigen-solve per group."""
    groups: dict[tuple, list[Site]] = {}
    for s in sites:
        key = (s.is_map, s.stack, s.part == "cross_attn", tuple(matrices[s.name].shape))
        groups.setdefault(key, []).append(s)
    return list(groups.values())


@dataclass(frozen=True)
class _Variant:
    """One way of measuring a group's matrices: which row sets, centred or not, which K."""

    control: str
    idx: np.ndarray | None  # (R, t) row index sets; None = all rows; metric averaged over R
    why_missing: str  # note when `idx` cannot be drawn (matrix too short)
    center: bool = True
    singular: bool = False  # metrics of singular values (√λ) instead of eigenvalues
    ks: tuple[int, ...] | None = None  # None: the settings' ks
    metrics: tuple[str, ...] = METRICS


def _variants(
    site: Site, n_rows: int, settings: SpectralSettings, raw_only: bool
) -> tuple[list[_Variant], bool]:
    """The controls measured on one group's rows, and whether the Gaussian null applies."""
    if raw_only:
        return [_Variant("raw", None, "")], False
    t0 = settings.matched_frames if site.stack == "encoder" else settings.matched_rows
    subsets = settings.n_subsets if site.stack == "decoder" else settings.encoder_subsets
    short = f"fewer than {t0} rows"
    out = [
        _Variant("raw", None, ""),
        _Variant("matched_T", subset_indices(n_rows, t0, subsets, settings.seed), short),
    ]
    if site.stack == "decoder":
        out += [
            _Variant("natural_T", prefix_indices(n_rows, t0), f"fewer than {t0} natural rows"),
            _Variant("natural_win", window_indices(n_rows, t0), f"fewer than {t0} natural rows"),
        ]
    if site.part == "cross_attn":  # Table 1's first row: every analysis choice, one at a time
        out += _sensitivity_variants(n_rows, settings)
    return out, not site.is_map


def _sensitivity_variants(n_rows: int, settings: SpectralSettings) -> list[_Variant]:
    """Departures from natural_T, one choice each (`SENSITIVITY` names them)."""
    t0, head = settings.matched_rows, prefix_indices(n_rows, settings.matched_rows)
    short = f"fewer than {t0} natural rows"
    out = [
        _Variant("sens:uncentred", head, short, center=False),
        _Variant("sens:singular", head, short, singular=True),
        _Variant(f"sens:K{settings.sensitivity_k}", head, short, ks=(settings.sensitivity_k,)),
    ]
    no_prompt = None if n_rows < t0 + 1 else np.arange(1, t0 + 1)[None, :]
    out.append(_Variant("sens:no_prompt_row", no_prompt, f"fewer than {t0 + 1} natural rows"))
    for t in settings.sensitivity_rows:
        out.append(
            _Variant(f"sens:T{t}", prefix_indices(n_rows, t), f"fewer than {t} natural rows")
        )
    return [dataclasses.replace(v, metrics=SENSITIVITY_METRICS) for v in out]


def _spectra(x: torch.Tensor, is_map: bool, center: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(main spectrum, activation-graph Laplacian spectrum) of matrices (..., N, w).

    The graph spectrum is NaN for N > MAX_GRAPH_NODES (see wspec.spectra).
    """
    lam = attention_eigenvalues(x) if is_map else gram_eigenvalues(x, center=center)
    n = x.shape[-2]
    if n <= MAX_GRAPH_NODES:
        mu = graph_laplacian_eigenvalues(x, center=center).cpu().numpy()
    else:
        mu = np.full((*x.shape[:-1],), np.nan)
    return lam.cpu().numpy(), mu


def _values(
    lam: np.ndarray, mu: np.ndarray, metric: str, k: int, n_max: int, averaged: bool
) -> np.ndarray:
    """One metric per matrix; `averaged`: spectra carry a subset axis to average over."""
    eigs = mu if metric in GRAPH_METRICS else lam
    if averaged:
        return average_metric(eigs, metric, k, n_max)
    return np.atleast_1d(np.asarray(metric_values(eigs, metric, k, n_max), dtype=np.float64))


def _group_rows(
    group: list[Site],
    matrices: dict[str, torch.Tensor],
    settings: SpectralSettings,
    raw_only: bool = False,
) -> dict[str, list[dict]]:
    """Rows of every site in one shape group, metrics vectorised over the group."""
    x = torch.stack([matrices[s.name] for s in group])  # (B, N, w)
    n_rows, width = x.shape[1:]
    is_map = group[0].is_map
    variants, with_null = _variants(group[0], n_rows, settings, raw_only)
    out: dict[str, list[dict]] = {s.name: [] for s in group}

    def emit(control: str, metric: str, k: int, values, notes) -> None:
        base = {"control": control, "metric": metric, "K": k, "n_rows": n_rows}
        for b, s in enumerate(group):
            out[s.name].append(
                base
                | {"layer": s.layer, "component": s.component}
                | {"value": float(values[b]), "note": notes[b]}
            )

    for v in variants:
        ks = v.ks or settings.ks
        if v.idx is None and v.control != "raw":
            for k in ks:
                for m in v.metrics:
                    emit(v.control, m, k, np.full(len(group), np.nan), [v.why_missing] * len(group))
            continue
        rows = x if v.idx is None else x[..., torch.as_tensor(v.idx, device=x.device), :]
        lam, mu = _spectra(rows, is_map, v.center)
        if v.singular:
            lam = np.sqrt(lam)
        t = n_rows if v.idx is None else v.idx.shape[1]
        n_max = max(t, width)
        for k in ks:
            for m in v.metrics:
                vals = _values(lam, mu, m, k, n_max, averaged=v.idx is not None)
                if v.idx is None:
                    eigs = mu if m in GRAPH_METRICS else lam
                    notes = [
                        nan_reason(eigs[b], m, k, n_max) if np.isnan(vals[b]) else ""
                        for b in range(len(group))
                    ]
                    if m in GRAPH_METRICS and n_rows > MAX_GRAPH_NODES:
                        notes = [f"graph of {n_rows} nodes not solved"] * len(group)
                else:
                    notes = [
                        "" if np.isfinite(val) else "undefined on every row set" for val in vals
                    ]
                emit(v.control, m, k, vals, notes)
                if v.control == "raw" and with_null:
                    null = gaussian_null(
                        n_rows, width, settings.ks, settings.null_draws, settings.seed
                    )
                    normed = apply_null(m, vals, null[(m, k)])
                    why = [
                        n or ("" if np.isfinite(z) else "null undefined")
                        for n, z in zip(notes, normed, strict=True)
                    ]
                    emit(null_control(m), m, k, normed, why)
    return out


def spectral_rows(
    captured: Captured, sites: list[Site], settings: SpectralSettings, raw_only: bool = False
) -> list[dict]:
    """Tidy rows (layer, component, control, metric, K, value, n_rows, note) of one decode,
    in site order; `raw_only` measures the matrices as given and nothing else."""
    by_site: dict[str, list[dict]] = {}
    for group in _groups(sites, captured.matrices):
        by_site |= _group_rows(group, captured.matrices, settings, raw_only)
    return [row for s in sites for row in by_site[s.name]]


def eigen_spectra(captured: Captured, sites: list[Site], natural_rows: int, budget_rows: int):
    """Per `EIGEN_PARTS` site and control: (layer, component, control, n_rows, eigenvalues).

    Eigenvalues of the centred covariance (`spectra.gram_eigenvalues`) of the natural decode's
    rows ("raw") and of the first `budget_rows` rows ("budget_T").
    """
    out = []
    for site in sites:
        if site.stack != "decoder" or site.part not in EIGEN_PARTS:
            continue
        matrix = captured.matrices[site.name]
        for control, count in (("raw", natural_rows), ("budget_T", budget_rows)):
            rows = matrix[: min(count, matrix.shape[0])]
            lam = gram_eigenvalues(rows).cpu().numpy().astype(float)
            out.append((site.layer, site.component, control, int(rows.shape[0]), lam.tolist()))
    return out


def probe_features(captured: Captured, natural_rows: int, decoder_layers: int) -> dict:
    """The clip's LapEigvals and hidden-state features over its natural rows (see
    `LAP_COMPONENT`, `HIDDEN_PREFIX`): small, so stored with the result, never recomputed."""
    out: dict[str, float] = {}
    for name, maps in captured.head_maps.items():
        layer = int(name.split(".")[1])
        eig = cross_attention_lap_eigvals(maps[:, :natural_rows], LAP_K)
        for h, j in np.ndindex(eig.shape):
            out[f"{LAP_COMPONENT}/h{h}_eig{j + 1}/L{layer}"] = float(eig[h, j])
    middle = decoder_layers // 2
    hidden = captured.matrices[f"decoder.{middle}.residual"][:natural_rows].mean(dim=0)
    for i, v in enumerate(hidden.cpu().numpy().astype(np.float32)):
        out[f"{HIDDEN_PREFIX}L{middle}:{i:04d}"] = float(v)
    return out


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
def _analyse_stimulus(loaded, stim: pd.Series, settings: SpectralSettings):
    """Decode one stimulus under capture; return (rows DataFrame, decode dict, eigen-spectra,
    probe features)."""
    audio = read_audio(stim["path"], allow_long=True)  # Whisper sees the first 30 s
    decoded, captured = run_with_cache(
        loaded,
        audio,
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.matched_rows,
    )
    sites = all_sites(loaded.model.config)
    natural_rows = min(len(decoded.tokens) + 1, captured.n_rows_decoder)
    rows = spectral_rows(decoder_prefix(captured, natural_rows), sites, settings)
    decoder_sites = [s for s in sites if s.stack == "decoder"]
    budget = decoder_prefix(captured, settings.matched_rows)
    rows += [
        r | {"control": "budget_T"}
        for r in spectral_rows(budget, decoder_sites, settings, raw_only=True)
    ]
    eigen = eigen_spectra(captured, sites, natural_rows, settings.matched_rows)
    features = probe_features(captured, natural_rows, loaded.model.config.decoder_layers)
    ident = {
        "model": loaded.name,
        "stimulus_id": str(stim["id"]),
        "family": str(stim["family"]),
        "source_id": str(stim["source_id"]),
        "n_tokens": len(decoded.tokens),
    }
    df = pd.DataFrame([ident | r for r in rows], columns=list(SPECTRAL_COLUMNS))
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
    return _typed(df), decode, eigen, features


def _units(stim: pd.Series) -> dict[str, str]:
    """The resampling unit and model-input key of one stimulus (see wspec.units)."""
    family, sid, source = str(stim["family"]), str(stim["id"]), str(stim["source_id"])
    return {
        "cluster": resampling_unit(family, sid, source, stim.get("params", "{}")),
        "input_key": model_input_key(read_audio(stim["path"], allow_long=True)),
    }


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col in ("layer", "K", "n_tokens", "n_rows"):
        df[col] = df[col].astype("int64")
    df["value"] = df["value"].astype("float64")
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].astype(str)
    return df


def _write_result(path: Path, df: pd.DataFrame, decode: dict, eigen: list, features: dict) -> None:
    """One file per stimulus, written atomically: the rows, with the decode, the
    eigen-spectra and the probe features in its metadata (so a result is never half there)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {}) | {
        b"wspec_decode": json.dumps(decode).encode(),
        b"wspec_eigen": json.dumps(eigen).encode(),
        b"wspec_features": json.dumps(features).encode(),
    }
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_result(path: Path) -> tuple[pd.DataFrame, dict, list, dict]:
    """One cached stimulus result: (rows, decode dict, eigen-spectra, probe features).

    A file of an older schema (one without every field) is an error, never read as if
    complete (its key cannot match today's anyway: it covers the code wspec.cache.RUNS
    declares).
    """
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    fields = (b"wspec_decode", b"wspec_eigen", b"wspec_features")
    if not all(f in meta for f in fields):
        raise WspecError(f"{path} is a result of an older wspec; delete it to recompute it.")
    decode, eigen, features = (json.loads(meta[f]) for f in fields)
    return table.to_pandas(), decode, eigen, features


def _eigen_table(ident: dict, eigen: list) -> pd.DataFrame:
    """The long `EIGEN_COLUMNS` table of one stimulus's eigen-spectra."""
    parts = [
        pd.DataFrame(
            ident
            | {"layer": layer, "component": component, "control": control, "n_rows": n_rows}
            | {"rank": np.arange(1, len(lam) + 1), "eigenvalue": np.asarray(lam, float)}
        )
        for layer, component, control, n_rows, lam in eigen
    ]
    return pd.concat(parts, ignore_index=True)[list(EIGEN_COLUMNS)]


# --- the run --------------------------------------------------------------------------------
def default_output(model: str, set_name: str) -> Path:
    """Where `run_model` writes the assembled table unless told otherwise."""
    return wcache.RUNS.dir() / f"{safe_name(model)}__{safe_name(set_name)}.parquet"


@functools.lru_cache(maxsize=1)
def _worker_model(spec: str, device: str):
    """The model a worker process analyses with (loaded once per worker, not per clip)."""
    return load(spec, device=device)


def analyse_to_cache(
    spec: str, device: str, stim: dict, settings: SpectralSettings, path: str, loaded=None
) -> str:
    """One clip's decode and spectra, written atomically to `path`: a Dask task (or a plain
    call in this process) on one torch thread, so the numbers do not depend on where it ran."""
    loaded = loaded or _worker_model(spec, device)
    with one_thread(loaded.device):
        result = _analyse_stimulus(loaded, pd.Series(stim), settings)
    _write_result(Path(path), *result)
    return path


def features_path(table: Path) -> Path:
    """The probe-feature table written beside a run's table."""
    return table.with_name(table.stem + ".features.parquet")


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
    scheduler: str | None = None,
) -> pd.DataFrame:
    """Spectral table of model `spec` on a stimulus set (see module docstring).

    `manifest` overrides the set (any DataFrame with the manifest columns); `loaded`
    reuses an already loaded model in this process; `cache` replaces the RUNS cache folder
    of per-stimulus results; `scheduler` says where clips not yet cached are analysed
    (`wspec.scale`: serial, a local Dask cluster by default, or a cluster's address).
    Writes the table to `out` (default: `default_output(spec, set_name)`), the decodes
    beside it (`*.decodes.parquet`), the decoder eigen-spectra (`*.eigen.parquet`,
    `EIGEN_COLUMNS`) and the probe features (`*.features.parquet`: model, stimulus_id and
    one column per feature, see `probe_features`).
    """
    settings = settings or SpectralSettings()
    if manifest is None:
        manifest = build_stimuli(set_name, progress=progress)
    if manifest.empty:
        raise WspecError(
            f"stimulus set {set_name!r} is empty; build it with `wspec stimuli build`."
        )
    loaded = loaded or load(spec, device=device)
    root = Path(cache) if cache is not None else wcache.RUNS.dir()
    folder = root / safe_name(loaded.name)
    stims = [pd.Series(stim._asdict()) for stim in manifest.itertuples(index=False)]
    paths = [
        folder / f"{safe_name(str(stim['id']))}-"
        f"{stimulus_key(loaded.identity, str(stim['sha256']), settings, loaded.device.type)}"
        ".parquet"
        for stim in stims
    ]
    device_type = loaded.device.type
    jobs = [
        (loaded.spec, device_type, stim.to_dict(), settings, str(path))
        for stim, path in zip(stims, paths, strict=True)
        if not path.is_file()
    ]
    choice = scheduler_choice(scheduler)
    if choice == SERIAL:  # this process already holds the model
        jobs = [job + (loaded,) for job in jobs]
    desc = f"spectra {loaded.name}"
    for _ in run_tasks(
        analyse_to_cache, jobs, scheduler=choice, desc=desc, unit="clips", progress=progress
    ):
        pass
    tables: list[pd.DataFrame] = []
    decodes: list[dict] = []
    eigens: list[pd.DataFrame] = []
    features: list[dict] = []
    for stim, path in zip(stims, paths, strict=True):
        df, decode, eigen, feats = read_result(path)
        features.append({"model": decode["model"], "stimulus_id": decode["stimulus_id"]} | feats)
        units = _units(stim)
        tables.append(df.assign(**units)[list(COLUMNS)])
        decodes.append(decode | units)
        ident = {k: decode[k] for k in ("model", "stimulus_id", "family", "n_tokens")}
        ident |= units | {"source_id": str(stim["source_id"])}
        eigens.append(_eigen_table(ident, eigen))
    table = _typed(pd.concat(tables, ignore_index=True))
    target = Path(out) if out is not None else default_output(loaded.name, set_name)
    with atomic_path(target) as tmp:
        table.to_parquet(tmp, index=False)
    decode_df = pd.DataFrame(decodes, columns=list(DECODE_COLUMNS))
    with atomic_path(target.with_name(target.stem + ".decodes.parquet")) as tmp:
        decode_df.to_parquet(tmp, index=False)
    with atomic_path(target.with_name(target.stem + ".eigen.parquet")) as tmp:
        pd.concat(eigens, ignore_index=True).to_parquet(tmp, index=False)
    with atomic_path(features_path(target)) as tmp:
        pd.DataFrame(features).to_parquet(tmp, index=False)
    return table
