"""The paper's Table 1 reproduced: our deltas with CIs beside the published values.

Layout follows the paper: rows are component (Dec Cross-Attn, Dec Self-Attn, Dec FFN) × model,
columns ΔN_eff (%), Δlog10 K_f, Δα at K dominant modes. Our models are placed by size among
the paper's Tiny/Small/Large rows (tiny.en on the Tiny row; base, which the paper did not run,
gets its own row without published values); paper rows without a model of ours stay, with our
columns empty. Deltas come from `wspec.stats.delta_table` (layer mean per stimulus, bootstrap
over stimuli, permutation p-values Holm-corrected across the table's cells).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import pandas as pd

from wspec.errors import WspecError
from wspec.paper import (
    COMPONENT_LABELS,
    METRIC_LABELS,
    PAPER_MODELS,
    model_scale_rank,
    paper_model_for,
    paper_table1,
)
from wspec.stats import CLEAN_FAMILIES, LAYER_MEAN, TABLE1_METRICS, delta_table

#: Column stem per metric: ours = stem, stem_lo, stem_hi, stem_p; paper = paper_stem.
STEMS: dict[str, str] = {"n_eff": "d_neff_pct", "log10_kf": "d_log10_kf", "alpha": "d_alpha"}
_PAPER_SCALE = {"Tiny": "tiny", "Small": "small", "Large": "large"}


def table1(
    results_df: pd.DataFrame,
    control: str = "matched_T",
    K: int = 10,
    stress_families: Sequence[str] | None = None,
    *,
    clean_families: Sequence[str] = CLEAN_FAMILIES,
    pair: str = "auto",
    models: Sequence[str] | None = None,
    n_boot: int = 2000,
    n_perm: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> pd.DataFrame:
    """Table 1 in the paper's layout, ours beside the paper's.

    Columns: component, component_label, model (ours, "" on paper-only rows), paper_model
    ("" if the paper has no such row); per metric stem s in `STEMS`: s, s_lo, s_hi (our estimate
    and CI), s_p (Holm-adjusted permutation p), s_n_clean, s_n_stressed, s_paired (sample sizes:
    with pairing, n_clean counts the clean *sources* used), paper_s (published). Sample sizes
    differ between metrics where a metric is undefined (NaN) for some stimuli.
    """
    deltas = delta_table(
        results_df,
        models=models,
        components=tuple(COMPONENT_LABELS),
        metrics=TABLE1_METRICS,
        K=K,
        control=control,
        stress_families=stress_families,
        clean_families=clean_families,
        pair=pair,
        n_boot=n_boot,
        n_perm=n_perm,
        ci=ci,
        seed=seed,
        method=method,
    )
    deltas = deltas[deltas["layer"] == LAYER_MEAN]
    ours = sorted(
        models if models is not None else deltas["model"].unique(),
        key=lambda m: (model_scale_rank(m), m),
    )
    paper = paper_table1().set_index(["component", "paper_model"])
    rows = []
    for component, label in COMPONENT_LABELS.items():
        entries = [(m, paper_model_for(m) or "") for m in ours]
        covered = {pm for _, pm in entries}
        entries += [("", pm) for pm in PAPER_MODELS if pm not in covered]
        entries.sort(key=lambda e: (model_scale_rank(e[0] or _PAPER_SCALE[e[1]]), e[0] == "", e[0]))
        for model, paper_model in entries:
            row: dict[str, object] = {
                "component": component,
                "component_label": label,
                "model": model,
                "paper_model": paper_model,
            }
            cells = deltas[(deltas["model"] == model) & (deltas["component"] == component)]
            for metric, stem in STEMS.items():
                hit = cells[cells["metric"] == metric]
                rec = hit.iloc[0] if len(hit) else None
                row[stem] = float(rec["estimate"]) if rec is not None else math.nan
                row[f"{stem}_lo"] = float(rec["ci_low"]) if rec is not None else math.nan
                row[f"{stem}_hi"] = float(rec["ci_high"]) if rec is not None else math.nan
                row[f"{stem}_p"] = float(rec["p_adj"]) if rec is not None else math.nan
                row[f"{stem}_n_clean"] = int(rec["n_clean"]) if rec is not None else 0
                row[f"{stem}_n_stressed"] = int(rec["n_stressed"]) if rec is not None else 0
                row[f"{stem}_paired"] = bool(rec["paired"]) if rec is not None else False
                published = paper[stem].get((component, paper_model), math.nan)
                row[f"paper_{stem}"] = float(published) if paper_model else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _num(x: float, digits: int, pct: bool) -> str:
    if not math.isfinite(x):
        return "—"
    text = f"{x:+.{digits}f}".replace("-", "−")
    return text + ("%" if pct else "")


def display_table(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """String cells for reading: "ours [lo, hi]" and "paper" per metric; "—" where absent.

    Our cells carry a star when the Holm-adjusted permutation p < 0.05, and the sample sizes
    "n=clean/stressed" ("paired": clean counts the source utterances resampled).
    """
    out = pd.DataFrame(
        {
            "Component": table["component_label"],
            "Model (ours)": table["model"].replace("", "—"),
            "Paper model": table["paper_model"].replace("", "—"),
        }
    )
    for metric, stem in STEMS.items():
        pct = metric == "n_eff"
        # Δα is published to 3 decimals (e.g. +0.005): show ours at the same precision.
        places = max(digits, 3) if metric == "alpha" else digits
        cells = []
        for _, r in table.iterrows():
            if not math.isfinite(r[stem]):
                cells.append("—")
                continue
            star = "*" if r[f"{stem}_p"] < 0.05 else ""
            lo, hi = _num(r[f"{stem}_lo"], places, False), _num(r[f"{stem}_hi"], places, False)
            n = f"n={r[f'{stem}_n_clean']}/{r[f'{stem}_n_stressed']}"
            n += " paired" if r[f"{stem}_paired"] else ""
            cells.append(f"{_num(r[stem], places, pct)}{star} [{lo}, {hi}] {n}")
        out[f"{METRIC_LABELS[metric]} ours"] = cells
        out[f"{METRIC_LABELS[metric]} paper"] = [
            _num(v, places, pct) for v in table[f"paper_{stem}"]
        ]
    return out


def format_table(table: pd.DataFrame, fmt: str = "text", digits: int = 2) -> str:
    """Render `table1` output as "text" (terminal), "markdown" (pipe table) or "html"."""
    shown = display_table(table, digits)
    if fmt == "text":
        return shown.to_string(index=False)
    if fmt == "markdown":
        header = "| " + " | ".join(shown.columns) + " |"
        rule = "|" + "|".join("---" for _ in shown.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.to_numpy()]
        return "\n".join([header, rule, *body])
    if fmt == "html":
        head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
            for row in shown.to_numpy()
        )
        thead = f"<thead><tr>{head}</tr></thead>"
        return f'<table class="wspec-table1">{thead}<tbody>{body}</tbody></table>'
    raise WspecError(f"unknown format {fmt!r}; use 'text', 'markdown' or 'html'")
