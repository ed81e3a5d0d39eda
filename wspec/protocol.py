"""The paper's protocol: long clean utterances against the "Hell" clips each model gets wrong.

The paper (as its public summaries describe it) builds its stress set from read speech by
strong time-stretching, overlapping talkers and 0 dB noise, and keeps for each model the
clips that model transcribes with WER > 0.5.  Those decodes are long and wrong, so their
spectra can be measured on rows the model really produced.  Here:

* `select_hell` keeps, per model, the `hell` clips whose WER exceeds the threshold (a
  parameter, 0.5 as in the paper) and reports how many each condition kept;
* `protocol_results` restricts a results table to the paper's contrast: `long_clean`
  utterances against that model's kept `hell` clips, each paired with its own source;
* `protocol_table` is Table 1 under the primary control (`natural_T`: the first T₀ rows
  the model chose before its own end-of-text, never padded);
* `natural_length_report` counts the clips too short for the primary control (reported,
  never padded), and `forced_row_share` says how much of the `budget_T` sensitivity
  analysis is continuation the model did not choose;
* `sensitivity_table` shows, for Table 1's cross-attention cells, what each analysis
  choice does to the numbers, one choice at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from wspec.errors import WspecError
from wspec.stats import LAYER_MEAN, delta_table

CLEAN_FAMILY = "long_clean"
STRESS_FAMILY = "hell"
#: A clean one- or two-word utterance: its natural decode is shorter than the decode budget,
#: so under budget_T it is padded with forced rows although nothing went wrong.
FORCED_CONTROL_FAMILY = "short_clean"
WER_THRESHOLD = 0.5
PRIMARY_CONTROL = "natural_T"
FORCED_CONTROL = "budget_T"
CROSS_ATTN = "dec_cross_attn"
TABLE_METRICS: tuple[str, ...] = ("n_eff", "log10_kf", "alpha")


def select_hell(labels: pd.DataFrame, wer_threshold: float = WER_THRESHOLD) -> pd.DataFrame:
    """The `hell` rows of a labels table with a boolean `kept` column (WER > threshold)."""
    hell = labels[labels["family"] == STRESS_FAMILY].copy()
    hell["kept"] = hell["wer"].to_numpy(float) > wer_threshold
    return hell


def protocol_results(
    results: pd.DataFrame, labels: pd.DataFrame, wer_threshold: float = WER_THRESHOLD
) -> pd.DataFrame:
    """Rows of `long_clean` clips and, per model, the `hell` clips that model got wrong."""
    hell = select_hell(labels, wer_threshold)
    kept = pd.MultiIndex.from_frame(hell.loc[hell["kept"], ["model", "stimulus_id"]])
    keys = pd.MultiIndex.from_frame(results[["model", "stimulus_id"]])
    is_clean = (results["family"] == CLEAN_FAMILY).to_numpy()
    return results[is_clean | keys.isin(kept)]


def protocol_table(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    control: str = PRIMARY_CONTROL,
    K: int = 10,
    components: Sequence[str] = (CROSS_ATTN, "dec_self_attn", "dec_ffn"),
    metrics: Sequence[str] = TABLE_METRICS,
    wer_threshold: float = WER_THRESHOLD,
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    by_layer: bool = False,
) -> pd.DataFrame:
    """Paired long-clean vs kept-hell deltas (`wspec.stats.delta_table` rows).

    Each kept hell clip is paired with its own long source; a hell clip whose source has
    no value under `control` is left out rather than compared unpaired, and the bootstrap
    resamples source utterances.  Empty when fewer than two sources remain.
    """
    sub = protocol_results(results, labels, wer_threshold)
    return delta_table(
        sub,
        components=components,
        metrics=metrics,
        K=K,
        control=control,
        clean_families=(CLEAN_FAMILY,),
        stress_families=(STRESS_FAMILY,),
        pair="drop",
        by_layer=by_layer,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
    )


def selection_summary(labels: pd.DataFrame, wer_threshold: float = WER_THRESHOLD) -> pd.DataFrame:
    """Per model and hell condition: clips, clips kept (WER > threshold), mean WER."""
    hell = select_hell(labels, wer_threshold)
    if hell.empty:
        return pd.DataFrame(columns=["model", "condition", "clips", "kept", "mean_wer"])
    hell["condition"] = hell["stimulus_id"].map(_condition_of)
    out = hell.groupby(["model", "condition"], sort=True).agg(
        clips=("stimulus_id", "size"), kept=("kept", "sum"), mean_wer=("wer", "mean")
    )
    return out.reset_index()


def _condition_of(stimulus_id: str) -> str:
    """The condition part of a hell id, e.g. 'hell-03-espeak_gb_f-tempo2p5' -> 'tempo2p5'."""
    return stimulus_id.split("-", 3)[-1]


def natural_length_report(
    decodes: pd.DataFrame, t0: int, families: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per model and family: clips, and how many reach T₀ natural decision rows.

    Natural rows are the prompt row plus one per generated token (n_tokens + 1); a clip
    with fewer is left out of the primary control, never padded.
    """
    d = decodes if families is None else decodes[decodes["family"].isin(list(families))]
    natural = d["n_tokens"].to_numpy(int) + 1
    d = d.assign(measured=natural >= t0)
    out = d.groupby(["model", "family"], sort=True).agg(
        clips=("stimulus_id", "size"),
        measured=("measured", "sum"),
        median_tokens=("n_tokens", "median"),
    )
    out["left_out"] = out["clips"] - out["measured"]
    return out.reset_index()


def forced_row_share(decodes: pd.DataFrame, t0: int) -> pd.DataFrame:
    """Per model and family: the mean share of budget_T's T₀ rows that were forced.

    A decode that stopped after n tokens has n + 1 natural rows; the rest of the budget is
    the continuation the model was made to write after its own end-of-text.
    """
    natural = decodes["n_tokens"].to_numpy(int) + 1
    share = np.clip(t0 - natural, 0, None) / t0
    d = decodes.assign(forced_share=share, any_forced=share > 0)
    out = d.groupby(["model", "family"], sort=True).agg(
        clips=("stimulus_id", "size"),
        forced_share=("forced_share", "mean"),
        clips_with_forced_rows=("any_forced", "sum"),
    )
    return out.reset_index()


@dataclass(frozen=True)
class Variant:
    """One row of the sensitivity table: a control (and K) under which Table 1 is recomputed."""

    name: str
    control: str
    K: int
    kind: str  # "primary", "second estimate", "choice" or "forced rows"
    kf_metric: str = "log10_kf"


def sensitivity_variants(t0: int, rows: Sequence[int] = (16, 32), k_alt: int = 5) -> list[Variant]:
    """The primary measurement and each departure from it (see wspec.pipeline)."""
    out = [
        Variant(
            f"primary: natural rows, first T₀ = {t0}, centred, eigenvalues, K = 10",
            PRIMARY_CONTROL,
            10,
            "primary",
        ),
        Variant(
            "mean over T₀-row windows of the whole decode", "natural_win", 10, "second estimate"
        ),
        Variant("uncentred rows", "sens:uncentred", 10, "choice"),
        Variant("singular values instead of eigenvalues", "sens:singular", 10, "choice"),
        Variant("without the first (prompt) row", "sens:no_prompt_row", 10, "choice"),
        Variant(f"K = {k_alt}", f"sens:K{k_alt}", k_alt, "choice"),
    ]
    out += [Variant(f"T₀ = {t}", f"sens:T{t}", 10, "choice") for t in rows]
    out += [
        Variant(
            "condition number log10(λ1/λK) in place of Kirchhoff K_f",
            PRIMARY_CONTROL,
            10,
            "choice",
            kf_metric="log10_cond",
        ),
        Variant("forced rows: decode budget T₀ (budget_T)", FORCED_CONTROL, 10, "forced rows"),
    ]
    return out


def sensitivity_table(
    results: pd.DataFrame,
    labels: pd.DataFrame,
    variants: Sequence[Variant],
    *,
    wer_threshold: float = WER_THRESHOLD,
    n_boot: int = 2000,
    n_perm: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Table 1's cross-attention cells (ΔN_eff %, Δlog10 K_f, Δα) under each variant.

    One row per (model, variant, metric) with estimate, ci_low, ci_high and the number of
    paired sources; a variant missing from the results (an older run) raises.
    """
    have = set(results["control"].unique())
    rows = []
    for v in variants:
        if v.control not in have:
            raise WspecError(f"control {v.control!r} is not in the results; re-run `wspec run`.")
        metrics = ("n_eff", v.kf_metric, "alpha")
        cells = protocol_table(
            results,
            labels,
            control=v.control,
            K=v.K,
            components=(CROSS_ATTN,),
            metrics=metrics,
            wer_threshold=wer_threshold,
            n_boot=n_boot,
            n_perm=n_perm,
            seed=seed,
        )
        cells = cells[cells["layer"] == LAYER_MEAN]
        for c in cells.itertuples(index=False):
            rows.append(
                {
                    "model": c.model,
                    "variant": v.name,
                    "kind": v.kind,
                    "metric": "log10_kf" if c.metric == v.kf_metric else c.metric,
                    "estimate": c.estimate,
                    "ci_low": c.ci_low,
                    "ci_high": c.ci_high,
                    "n_sources": c.n_clean,
                    "n_stressed": c.n_stressed,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "variant",
            "kind",
            "metric",
            "estimate",
            "ci_low",
            "ci_high",
            "n_sources",
            "n_stressed",
        ],
    )
