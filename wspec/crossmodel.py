"""Join the per-model runs of the book and derive what the cross-model chapters show.

`wspec book` executes `book/model_run.md` once per model and lists the outputs in
``book/runs/runs.json`` (read with `wspec.book.load_runs`). The Results, Referee, Controls and
Detection chapters compare those runs; the joins and the few extra measurements they need
live here so that the chapters hold only narrative and calls:

* `run_outputs` concatenates one output (spectra, labels, ...) of every run;
* `BROAD_CONTROL` is the control of every clean-vs-stressed comparison outside the paper
  protocol (`wspec.protocol`): natural rows only, normalised by their null;
* `deltas_by_control` recomputes the clean-vs-stressed deltas under every control, so the
  Controls chapter can show what each control changes;
* the whole eigen-spectra of the log–log figure and the KL test are an output of each model
  run (``run_outputs(runs, "eigen")``, `wspec.pipeline.EIGEN_COLUMNS`): no clip is decoded
  again for them;
* `mean_spectra` / `kl_table` turn those spectra into the figure's curves and the referee's
  KL test; `length_table` gives N_eff against decode length; `pick_clips` and
  `jacobian_table` choose and measure the stimuli of the gain/alignment check;
* `verdict_summary` writes a verdict's per-model numbers as one sentence for the prose.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from wspec.errors import WspecError
from wspec.numbers import format_number
from wspec.paper import model_scale_rank
from wspec.paths import cache_dir, safe_name
from wspec.seqlen import null_control
from wspec.specs import is_untrained, untrained_twin
from wspec.stats import (
    CLEAN_FAMILIES,
    CONTROL_FAMILIES,
    NULL_CONTROL,
    PROTOCOL_FAMILIES,
    TABLE1_METRICS,
    adjust_pvalues,
    delta_table,
    normalized_spectrum,
    select_results,
    spectral_kl_test,
)

#: The reading of the broad stress set (every family against clean sentences): the whole
#: natural decode under its Gaussian null. Most of those clips decode to fewer than T0 tokens,
#: so the paper protocol's natural_T is undefined on them; forcing them to T0 rows (budget_T)
#: would measure tokens the model did not choose, which only the Controls chapter's labelled
#: sensitivity analysis does.
BROAD_CONTROL = NULL_CONTROL
#: The controls the Controls chapter compares; "null" stands for null_ratio / null_diff,
#: whichever `wspec.seqlen.null_control` assigns to the metric.
ALL_CONTROLS: tuple[str, ...] = ("raw", "matched_T", NULL_CONTROL, "budget_T")
#: Stressed families in the order `pick_clips` draws from (most hallucination-prone first).
STRESS_ORDER: tuple[str, ...] = (
    "nonspeech",
    "reversed",
    "repeated_syllables",
    "noisy_snr",
    "trailing_silence",
    "pgd_untargeted",
    "pgd_targeted",
)
#: Whisper sees 30 s; `wspec.jacobian` measures one window, so longer clips are skipped.
MAX_CLIP_S = 30.0


# --------------------------------------------------------------------------- runs


def run_outputs(manifest: dict, name: str) -> pd.DataFrame:
    """One output table (e.g. "spectra", "labels", "decodes", "eigenspectra") of every run.

    Rows of all runs concatenated; a ``model`` column (the run's model spec) is added where the
    table has none. A run that did not write the output is a user-fixable error.
    """
    frames = []
    for run in manifest["runs"]:
        path = run.get("outputs", {}).get(name)
        if not path or not Path(path).is_file():
            raise WspecError(
                f"run {run['model']!r} has no {name!r} output ({path}); re-run `wspec book`."
            )
        frame = pd.read_parquet(path)
        if "model" not in frame.columns:
            frame.insert(0, "model", run["model"])
        frames.append(frame)
    if not frames:
        raise WspecError("the runs manifest lists no runs; run `wspec book --models ...`.")
    return pd.concat(frames, ignore_index=True)


def run_scales(manifest: dict) -> dict[str, str]:
    """Model → scale class ("large" / "intermediate") of every run, as its model-run page read
    it from the loaded config (`LoadedWhisper.scale`); the verdicts' scope follows it."""
    scales = {}
    for run in manifest["runs"]:
        arch = run.get("outputs", {}).get("architecture")
        if not isinstance(arch, dict) or "scale" not in arch:
            raise WspecError(
                f"run {run['model']!r} did not record its architecture; re-run `wspec book`."
            )
        scales[run["model"]] = str(arch["scale"])
    return scales


def run_models(manifest: dict) -> list[str]:
    """Model specs of the runs, smallest Whisper size first."""
    return sorted((r["model"] for r in manifest["runs"]), key=lambda m: (model_scale_rank(m), m))


def deltas_by_control(
    results: pd.DataFrame,
    controls: Sequence[str] = ALL_CONTROLS,
    *,
    metrics: Sequence[str] = TABLE1_METRICS,
    **kwargs,
) -> pd.DataFrame:
    """`stats.delta_table` under each control, stacked with a ``control`` column.

    "null" (`stats.NULL_CONTROL`) runs each metric under its own null control (ratio for
    rank-like metrics, difference otherwise). Controls absent from `results` are skipped; p_adj
    is Holm within each control, so a control's table reads like Table 1.
    """
    present = set(results["control"].astype(str).unique())
    frames = []
    for control in controls:
        if control != NULL_CONTROL and control not in present:
            continue
        table = delta_table(results, metrics=metrics, control=control, **kwargs)
        frames.append(table.assign(control=control))
    if not frames:
        raise WspecError(f"none of the controls {list(controls)} is in the results")
    return pd.concat(frames, ignore_index=True)


def length_table(
    results: pd.DataFrame,
    *,
    component: str = "dec_cross_attn",
    metric: str = "n_eff",
    K: int = 10,
    controls: Sequence[str] = ALL_CONTROLS,
) -> pd.DataFrame:
    """One row per model × stimulus × control: the layer-mean metric and the decode length.

    Columns model, stimulus_id, family, n_tokens, control, value (NaN where the control is
    undefined, e.g. matched_T on a decode shorter than T0 rows).
    """
    present = set(results["control"].astype(str).unique())
    frames = []
    for control in controls:
        name = null_control(metric) if control == NULL_CONTROL else control
        if name not in present:
            continue
        sub = select_results(results, control=name, K=K)
        sub = sub[(sub["component"] == component) & (sub["metric"] == metric)]
        for model, cell in sub.groupby("model"):
            ids = cell.drop_duplicates("stimulus_id").set_index("stimulus_id")
            wide = cell.pivot_table(
                index="stimulus_id", columns="layer", values="value", aggfunc="mean"
            )
            values = wide.mean(axis=1, skipna=False)
            frames.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "stimulus_id": values.index,
                        "family": ids.loc[values.index, "family"].to_numpy(),
                        "n_tokens": ids.loc[values.index, "n_tokens"].to_numpy(),
                        "control": control,
                        "value": values.to_numpy(float),
                    }
                )
            )
    if not frames:
        raise WspecError(f"no {component}/{metric} rows under {list(controls)}")
    return pd.concat(frames, ignore_index=True)


def length_correlation(lengths: pd.DataFrame, method: str = "spearman") -> pd.DataFrame:
    """Rank correlation of the metric with n_tokens per model × control (finite rows only)."""
    rows = []
    for (model, control), grp in lengths.groupby(["model", "control"], sort=False):
        ok = grp[np.isfinite(grp["value"])]
        rho = ok["value"].corr(ok["n_tokens"], method=method) if len(ok) >= 3 else np.nan
        rows.append({"model": model, "control": control, "n": len(ok), "rho": float(rho)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- eigen-spectra


def balanced_subset(stimuli: pd.DataFrame, per_group: int | None, seed: int = 0) -> pd.DataFrame:
    """Every stimulus (per_group None), or at most `per_group` clean and `per_group` stressed
    ones drawn with a seeded sample, in manifest order. Keeps recomputed spectra affordable on
    the full stimulus set."""
    if per_group is None:
        return stimuli
    clean = stimuli["family"].isin(CLEAN_FAMILIES)
    parts = [
        grp.sample(n=min(per_group, len(grp)), random_state=seed)
        for grp in (stimuli[clean], stimuli[~clean])
    ]
    return stimuli.loc[sorted(pd.concat(parts).index)]


def stressed_group(family: str) -> str | None:
    """ "clean" for the clean families, None for control families (e.g. gauss_control, which
    `wspec.stats` also leaves out) and for the paper-protocol families (compared only in
    `wspec.protocol`), "stressed" for every other."""
    if family in CLEAN_FAMILIES:
        return "clean"
    return None if family in (*CONTROL_FAMILIES, *PROTOCOL_FAMILIES) else "stressed"


def spectra_by_stimulus(
    eigs: pd.DataFrame, *, control: str = "budget_T", layer: int | None = None
) -> dict[tuple[str, str, int], dict[str, list[np.ndarray]]]:
    """{(model, component, layer): {"clean": [λ...], "stressed": [λ...]}} from the long table.

    `layer` None keeps every layer; -1 means each model's last decoder layer. Spectra with no
    positive eigenvalue (a one-row decode) are dropped: they carry no distribution.
    """
    sub = eigs[eigs["control"] == control]
    if sub.empty:
        raise WspecError(f"no eigenvalues under control {control!r}")
    out: dict[tuple[str, str, int], dict[str, list[np.ndarray]]] = {}
    for (model, component, lay), grp in sub.groupby(["model", "component", "layer"]):
        last = int(sub.loc[sub["model"] == model, "layer"].max())
        if layer is not None and int(lay) != (last if layer == -1 else layer):
            continue
        cell = out.setdefault((str(model), str(component), int(lay)), {})
        for (_, family), stim in grp.groupby(["stimulus_id", "family"], sort=True):
            lam = stim.sort_values("rank")["eigenvalue"].to_numpy(float)
            if np.sum(lam > 0) == 0:
                continue
            group = stressed_group(str(family))
            if group is not None:
                cell.setdefault(group, []).append(lam)
    return out


def mean_spectra(
    eigs: pd.DataFrame, *, control: str = "raw", n_modes: int = 30, layer: int | None = -1
) -> pd.DataFrame:
    """Mean normalised spectrum (share of variance per rank) per model/component/layer/group.

    Each stimulus's top `n_modes` eigenvalues are divided by their sum (zeros beyond its rank,
    `stats.normalized_spectrum`), then averaged over the group's stimuli. Columns model,
    component, layer, group, rank, share, n (stimuli averaged).
    """
    rows = []
    for (model, component, lay), groups in spectra_by_stimulus(
        eigs, control=control, layer=layer
    ).items():
        for group, spectra in groups.items():
            share = np.mean([normalized_spectrum(lam, K=n_modes) for lam in spectra], axis=0)
            rows += [
                {
                    "model": model,
                    "component": component,
                    "layer": lay,
                    "group": group,
                    "rank": i + 1,
                    "share": float(v),
                    "n": len(spectra),
                }
                for i, v in enumerate(share)
            ]
    return pd.DataFrame(rows)


def kl_table(
    eigs: pd.DataFrame,
    *,
    control: str = "budget_T",
    layer: int | None = None,
    representation: str = "rank",
    K: int = 10,
    n_perm: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """`stats.spectral_kl_test` (KL(stressed ‖ clean), permutation null) per model/component/layer.

    Holm-adjusted p-values across the returned rows (``p_adj``). Cells with fewer than two
    spectra in a group are left out.
    """
    rows = []
    for (model, component, lay), groups in spectra_by_stimulus(
        eigs, control=control, layer=layer
    ).items():
        clean, stressed = groups.get("clean", []), groups.get("stressed", [])
        if len(clean) < 2 or len(stressed) < 2:
            continue
        test = spectral_kl_test(
            clean, stressed, representation=representation, K=K, n_perm=n_perm, seed=seed
        )
        rows.append(
            {"model": model, "component": component, "layer": lay, "control": control}
            | test.__dict__
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_adj"] = adjust_pvalues(table["p_value"].to_numpy(float))
    return table


# --------------------------------------------------------------------------- Jacobian


def pick_clips(
    stimuli: pd.DataFrame,
    *,
    n_clean: int = 2,
    n_stressed: int = 2,
    max_s: float = MAX_CLIP_S,
    clean_families: Sequence[str] = CLEAN_FAMILIES,
    stress_order: Sequence[str] = STRESS_ORDER,
    eligible: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A deterministic subset: `n_clean` clips of `clean_families` (in that order) and
    `n_stressed` stressed clips, one per family of `stress_order` per round, all at most
    `max_s` long and, when `eligible` is given, among those ids (e.g. the clips whose
    spectral signature is defined, i.e. whose decodes are long enough).

    Within a family, clips come one resampling unit at a time (`gain_signature.clip_units`):
    a source gives its second clip only after every source gave one, so six Hell clips are
    six utterances rather than six conditions of one, and a bootstrap over units has as
    many units as the subset allows. The k-th unit starts at its k-th clip, so those six
    utterances also come under six different conditions. Column ``group`` says "clean" or
    "stressed".
    """
    from wspec.gain_signature import clip_units

    ok = stimuli[stimuli["duration_s"] <= max_s]
    if eligible is not None:
        ok = ok[ok["id"].astype(str).isin(list(eligible))]
    units = ok.groupby([ok["family"], clip_units(ok)], sort=False)
    k = units.ngroup().groupby(ok["family"]).rank(method="dense") - 1  # unit number in family
    spread = (units.cumcount() - k) % units["id"].transform("size")  # the round it is drawn in
    ok = ok.loc[spread.sort_values(kind="stable").index]
    pools = {f: ok[ok["family"] == f] for f in ok["family"].unique()}
    clean = [pools[f] for f in dict.fromkeys(clean_families) if f in pools]
    clean = pd.concat(clean).head(n_clean) if clean else ok.iloc[:0]
    stress = [pools[f] for f in dict.fromkeys(stress_order) if f in pools]  # each family once
    chosen, depth = [], 0
    while len(chosen) < n_stressed and any(len(p) > depth for p in stress):
        chosen += [p.iloc[[depth]] for p in stress if len(p) > depth]
        depth += 1
    stressed = pd.concat(chosen).head(n_stressed) if chosen else ok.iloc[:0]
    if len(clean) < min(n_clean, 1) or len(stressed) < min(n_stressed, 1):
        raise WspecError(
            f"the stimulus set lacks clean ({list(clean_families)}) or stressed "
            f"({list(stress_order)}) clips under {max_s:g} s"
            + (" among the eligible ones" if eligible is not None else "")
        )
    return pd.concat(
        [clean.assign(group="clean"), stressed.assign(group="stressed")], ignore_index=True
    )


def jacobian_table(
    specs: Sequence[str], clips: pd.DataFrame, *, decodes: pd.DataFrame | None = None, **kwargs
) -> pd.DataFrame:
    """`wspec.jacobian.measure_clips` for each model on the same clips (cached there).

    `decodes`: the runs' decodes (columns model, stimulus_id, tokens: a list or its JSON, as
    `wspec.pipeline` writes it); a model's clips found there are measured on those tokens
    (the rows the spectra came from) instead of being decoded again, the others (e.g. the
    untrained twin's) are decoded. `kwargs` go to measure_clips (steps, frames, n_probes,
    tol, max_new_tokens, ...). The model column holds the spec as given, so a run's name and
    its untrained twin line up. Each row also gets its clip's ``cluster`` (resampling unit,
    `gain_signature.clip_units`) and, when `clips` has one, its ``group``: intervals
    resample clips or their sources, never the layers and steps of one decode.
    """
    from wspec.audio import read_audio
    from wspec.gain_signature import clip_units
    from wspec.jacobian import measure_clips
    from wspec.models import load

    audio = {str(r["id"]): (str(r["family"]), read_audio(r["path"])) for _, r in clips.iterrows()}
    meta = pd.DataFrame({"stimulus_id": clips["id"].astype(str), "cluster": clip_units(clips)})
    if "group" in clips.columns:
        meta["group"] = clips["group"].to_numpy()
    frames = []
    for spec in specs:
        tokens = {}
        if decodes is not None:
            known = decodes[(decodes["model"] == spec) & decodes["stimulus_id"].isin(list(audio))]
            parsed = [json.loads(t) if isinstance(t, str) else t for t in known["tokens"]]
            tokens = dict(zip(known["stimulus_id"].astype(str), parsed, strict=True))
        table = measure_clips(load(spec), audio, tokens=tokens, **kwargs)
        frames.append(table.assign(model=spec).merge(meta, on="stimulus_id", how="left"))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- prose


def format_interval(
    estimate: float, lo: float, hi: float, *, digits: int = 2, unit: str = "", sign: bool = True
) -> str:
    """Estimate and interval as "−3.21 % [−6.10, −0.40]", with true minus signs.

    `sign` puts a "+" on positive values (for changes); turn it off for levels such as an
    AUROC. A missing estimate gives "—".
    """
    if not np.isfinite(estimate):
        return "—"
    unit = f" {unit}" if unit else ""
    lo_text, hi_text = (format_number(x, digits, sign=sign) for x in (lo, hi))
    return f"{format_number(estimate, digits, sign=sign)}{unit} [{lo_text}, {hi_text}]"


def verdict_summary(
    verdict, *, digits: int = 2, unit: str = "", sign: bool = True, reasons: bool = True
) -> str:
    """One clause per model of a `wspec.verdicts.Verdict`: "model: estimate [CI] → verdict",
    followed by the rule's reason in parentheses when `reasons`.

    Models outside the claim's scope do not appear; with none, the verdict's reason is given.
    """
    if not verdict.per_model:
        return verdict.reason
    parts = []
    for mv in verdict.per_model:
        interval = format_interval(
            mv.estimate, mv.ci_low, mv.ci_high, digits=digits, unit=unit, sign=sign
        )
        why = f" ({mv.reason})" if reasons and mv.reason else ""
        parts.append(f"`{mv.model}`: {interval} → *{mv.verdict}*{why}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- untrained control

#: Decode cap for untrained models: they never choose end-of-text, so every decode would run
#: to the pipeline's 224 tokens. The budget_T rows (the first T0) are identical under any cap
#: because the decoder is causal; raw metrics of the untrained model then describe 48-token
#: decodes.
UNTRAINED_MAX_NEW_TOKENS = 48


def decode_cap(model: str) -> int:
    """Decode cap for recomputed spectra: UNTRAINED_MAX_NEW_TOKENS for untrained models (they
    never stop), the pipeline's cap for trained ones."""
    from wspec.pipeline import SpectralSettings

    if is_untrained(model):
        return UNTRAINED_MAX_NEW_TOKENS
    return SpectralSettings().max_new_tokens


def untrained_results(
    model: str,
    stimuli: pd.DataFrame,
    set_name: str,
    *,
    max_new_tokens: int = UNTRAINED_MAX_NEW_TOKENS,
    progress: bool = False,
    cache: Path | None = None,
) -> pd.DataFrame:
    """Spectral results of `untrained_twin(model)` on `stimuli` through `wspec.pipeline`.

    Same settings as the trained runs except the decode cap (see UNTRAINED_MAX_NEW_TOKENS);
    per-stimulus results are cached by the pipeline (in `cache`, if given). The table is also
    written to cache_dir("crossmodel", "untrained") (or `cache`) with its decodes beside it.
    """
    from wspec.pipeline import SpectralSettings, run_model

    spec = untrained_twin(model)
    settings = SpectralSettings(max_new_tokens=max_new_tokens)
    folder = Path(cache) if cache is not None else cache_dir("crossmodel", "untrained")
    out = folder / f"{safe_name(spec)}__{safe_name(set_name)}.parquet"
    return run_model(
        spec,
        set_name,
        out=out,
        progress=progress,
        manifest=stimuli,
        settings=settings,
        cache=cache,
    )
