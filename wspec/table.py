"""The paper's Table 1 reproduced: our deltas with CIs beside the published values.

`table1` is the data: one row per component (Dec Cross-Attn, Dec Self-Attn, Dec FFN) × model,
with ΔN_eff (%), Δlog10 K_f, Δα at K dominant modes, their intervals, p-values and sample
sizes. Our models are placed by size among the paper's Tiny/Small/Large rows (tiny.en on the
Tiny row; base, which the paper did not run, gets its own row without published values);
paper rows without a model of ours stay, with our columns empty. Deltas come from
`wspec.stats.delta_table` (layer mean per stimulus, bootstrap over stimuli, permutation
p-values Holm-corrected across the table's cells).

`table1_view` is how the book shows it, laid out as the paper prints it: a row per component,
per metric our value beside the paper's; `display_table` is the long form for a terminal.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from wspec.errors import WspecError
from wspec.numbers import format_number
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
    deltas: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Table 1 in the paper's layout, ours beside the paper's.

    `deltas`: the build's delta table when it is already computed (`wspec.context`), so a
    page shows the very numbers its neighbours show; else computed here from `results_df`.

    Columns: component, component_label, model (ours, "" on paper-only rows), paper_model
    ("" if the paper has no such row); per metric stem s in `STEMS`: s, s_lo, s_hi (our estimate
    and CI), s_p (Holm-adjusted permutation p), s_n_clean, s_n_stressed, s_paired (sample sizes:
    with pairing, n_clean counts the clean *sources* used), paper_s (published). Sample sizes
    differ between metrics where a metric is undefined (NaN) for some stimuli.
    """
    if deltas is None:
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
    text = format_number(x, digits)
    return text + ("%" if pct and math.isfinite(x) else "")


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


@dataclass(frozen=True)
class Table1View:
    """Table 1 laid out the way papers print it, for a notebook cell.

    One row per component; for each metric, one column per model of ours and, beside it, the
    paper's value for the matching paper model. A cell shows the estimate (with a star when the
    Holm-adjusted p < 0.05) and, on the lines below it, the 95 % interval and the sample sizes.
    Jupyter shows `html` on the web pages; the PDF gets `markdown` (`_config.yml` ranks it first
    for LaTeX), whose cells wrap inside the column because LaTeX cannot take `<br>`.
    """

    html: str
    markdown: str
    notes: tuple[str, ...]

    def _repr_html_(self) -> str:
        return self.html

    def _repr_markdown_(self) -> str:
        return self.markdown


def _places(metric: str, digits: int) -> int:
    # Δα is published to 3 decimals (e.g. +0.005): show ours at the same precision.
    return max(digits, 3) if metric == "alpha" else digits


def _columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(model, paper model) per model of ours, in the table's order ("" = the paper has none)."""
    ours = table[table["model"] != ""].drop_duplicates("model")
    return list(zip(ours["model"], ours["paper_model"], strict=True))


def _our_cell(r: pd.Series, metric: str, digits: int) -> tuple[str, str, str]:
    """(estimate with star, "[lo, hi]", "n=clean/stressed") of one cell; "—" when absent."""
    stem, places = STEMS[metric], _places(metric, digits)
    if not math.isfinite(r[stem]):
        return "—", "", ""
    star = "*" if r[f"{stem}_p"] < 0.05 else ""
    lo, hi = _num(r[f"{stem}_lo"], places, False), _num(r[f"{stem}_hi"], places, False)
    dagger = "†" if r[f"{stem}_paired"] else ""
    n = f"n={r[f'{stem}_n_clean']}/{r[f'{stem}_n_stressed']}{dagger}"
    return f"{_num(r[stem], places, metric == 'n_eff')}{star}", f"[{lo}, {hi}]", n


#: Most value columns one table may have and still fit the HTML text column at 1280 px (the
#: book's default tiny.en + base make 9: ours, the paper's Tiny and ours again per metric).
MAX_VALUE_COLUMNS = 10


def table1_view(
    table: pd.DataFrame, digits: int = 2, max_columns: int = MAX_VALUE_COLUMNS
) -> Table1View:
    """Render `table1` output as a paper-style table (see `Table1View`) with its footnotes.

    The paper's rows for models of its own that none of ours matches are not columns (they
    would double the width for values without a counterpart): a footnote lists them. With
    more models than fit in `max_columns` value columns, the metrics are split over several
    tables (one per metric at most) instead of one table that scrolls sideways.
    """
    columns = _columns(table)
    if not columns:
        raise WspecError("the table holds no model of ours; pass the results of a model run")
    # Per metric: (our or the paper's model, "ours" | "paper"), ours first, the paper's beside.
    heads: list[tuple[str, str]] = []
    for model, paper_model in columns:
        heads.append((model, "ours"))
        if paper_model:
            heads.append((paper_model, "paper"))
    per_table = max(1, max_columns // len(heads))
    metrics = list(STEMS)
    groups = [metrics[i : i + per_table] for i in range(0, len(metrics), per_table)]
    notes = _notes(table)
    parts = [_render(table, group, heads, digits) for group in groups]
    foot = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    html_text = "".join(h for h, _ in parts) + f'<div class="wspec-table1-notes">{foot}</div>'
    markdown = "\n\n".join([*(md for _, md in parts), *(_escape_md(n) for n in notes)])
    return Table1View(html=html_text, markdown=markdown + "\n", notes=notes)


def _render(
    table: pd.DataFrame, metrics: list[str], heads: list[tuple[str, str]], digits: int
) -> tuple[str, str]:
    """(HTML, Markdown) of one table: a row per component, `heads` columns per metric."""
    html_rows, md_rows = [], []
    for component, label in COMPONENT_LABELS.items():
        rows = table[table["component"] == component].set_index("model")
        html_cells, md_cells = [f"<th>{html.escape(label)}</th>"], [label]
        for metric in metrics:
            for name, kind in heads:
                if kind == "paper":
                    pick = rows["paper_model"] == name
                    value = float(rows.loc[pick, f"paper_{STEMS[metric]}"].iloc[0])
                    text = _num(value, _places(metric, digits), metric == "n_eff")
                    html_cells.append(f'<td class="wspec-paper">{html.escape(text)}</td>')
                    md_cells.append(text)
                    continue
                main, interval, n = _our_cell(rows.loc[name], metric, digits)
                detail = "<br>".join(html.escape(t) for t in (interval, n) if t)
                detail = f'<br><span class="wspec-detail">{detail}</span>' if detail else ""
                html_cells.append(f"<td>{html.escape(main)}{detail}</td>")
                md_cells.append(" ".join(t for t in (main, interval, n) if t))
        html_rows.append("<tr>" + "".join(html_cells) + "</tr>")
        md_rows.append("| " + " | ".join(_escape_md(c) for c in md_cells) + " |")
    names = [name if kind == "ours" else f"paper {name}" for name, kind in heads]
    top = "".join(
        f'<th colspan="{len(heads)}">{html.escape(METRIC_LABELS[m])}</th>' for m in metrics
    )
    sub = "".join(f"<th>{html.escape(n)}</th>" for _ in metrics for n in names)
    thead = f'<thead><tr><th rowspan="2">Component</th>{top}</tr><tr>{sub}</tr></thead>'
    html_text = f'<table class="wspec-table1">{thead}<tbody>{"".join(html_rows)}</tbody></table>'
    md_head = ["Component"] + [f"{METRIC_LABELS[m]} {n}" for m in metrics for n in names]
    markdown = "\n".join(
        [
            "| " + " | ".join(_escape_md(h) for h in md_head) + " |",
            "|" + "|".join("---" for _ in md_head) + "|",
            *md_rows,
        ]
    )
    return html_text, markdown


def _notes(table: pd.DataFrame) -> tuple[str, ...]:
    """Footnotes: how to read a cell, and the paper's values for its unmatched models."""
    notes = [
        "Each of our cells: estimate (* Holm-adjusted permutation p < 0.05), its 95 % "
        "bootstrap interval, and n = clean/stressed independent units († paired: the clean "
        "count is the source utterances resampled). — : no value."
    ]
    unmatched = table[(table["model"] == "") & (table["paper_model"] != "")]
    for paper_model, rows in unmatched.groupby("paper_model", sort=False):
        parts = []
        for _, r in rows.iterrows():
            values = " / ".join(
                _num(r[f"paper_{stem}"], _places(m, 2), m == "n_eff") for m, stem in STEMS.items()
            )
            parts.append(f"{r['component_label']} {values}")
        labels = " / ".join(METRIC_LABELS[m] for m in STEMS)
        notes.append(f"Paper, {paper_model} (no model of ours), {labels}: " + "; ".join(parts))
    return tuple(notes)


def _escape_md(text: str) -> str:
    """A Markdown table cell: pipes and emphasis marks shown as themselves."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def format_table(table: pd.DataFrame, fmt: str = "text", digits: int = 2) -> str:
    """Render `table1` output as "text" (terminal: one line per component × model), or as the
    paper-style "markdown" or "html" of `table1_view`."""
    if fmt == "text":
        return display_table(table, digits).to_string(index=False)
    if fmt == "markdown":
        return table1_view(table, digits).markdown
    if fmt == "html":
        return table1_view(table, digits).html
    raise WspecError(f"unknown format {fmt!r}; use 'text', 'markdown' or 'html'")
