"""Table 1: deltas from a synthetic tidy results table with planted effects, layout, CLI, and
the paper's published values checked against the seed text."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wspec import paper, stats
from wspec.commands import table as table_command
from wspec.errors import WspecError
from wspec.table import STEMS, format_table, table1, table1_view

# Planted effects, stressed vs clean source: relative for n_eff, additive otherwise.
EFFECTS = {("dec_cross_attn", "n_eff"): -0.10, ("dec_cross_attn", "alpha"): 0.20}
BASE = {"n_eff": 6.0, "log10_kf": 1.5, "alpha": 0.8, "stable_rank": 2.0}


def synth_results(models=("tiny.en", "base"), n_src: int = 40, seed: int = 0) -> pd.DataFrame:
    """Tidy results: clean sources, 2 noisy versions each (paired), unpaired non-speech.

    Each stimulus has a per-stimulus level shared by its layers (SD 5 % of the base value),
    plus per-layer noise (SD 2 %); stressed versions inherit their source's level.
    """
    rng = np.random.default_rng(seed)
    components = ["dec_cross_attn", "dec_self_attn", "dec_ffn", "enc_self_attn"]
    rows = []
    for model in models:
        stimuli = [(f"c{i}", "clean", "", i) for i in range(n_src)]
        stimuli += [(f"n{i}_{j}", "noisy_snr", f"c{i}", i) for i in range(n_src) for j in range(2)]
        stimuli += [(f"s{i}", "nonspeech", "", n_src + i) for i in range(n_src // 2)]
        for component in components:
            for metric, base in BASE.items():
                level = base * (1 + 0.05 * rng.standard_normal(n_src + n_src // 2))
                effect = EFFECTS.get((component, metric), 0.0)
                for sid, family, source, lvl in stimuli:
                    value = level[lvl]
                    if family != "clean":
                        value = value * (1 + effect) if metric == "n_eff" else value + effect
                    for layer in range(4):
                        noisy = value + 0.02 * base * rng.standard_normal()
                        for control in ("raw", "matched_T"):
                            for K in (0, 10):
                                rows.append(
                                    (model, sid, family, source, layer, component, control)
                                    + (metric, K, noisy, 12)
                                )
    columns = [*stats.RESULT_COLUMNS, "n_tokens"]
    return pd.DataFrame(rows, columns=columns)


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synth_results()


def test_delta_table_recovers_planted_effects(results: pd.DataFrame) -> None:
    deltas = stats.delta_table(results, n_boot=1000, n_perm=1000)
    assert set(deltas["layer"]) == {stats.LAYER_MEAN}
    assert len(deltas) == 2 * 3 * 3  # models × Table 1 components × metrics (enc_* filtered)
    assert set(deltas["family"]) == {"noisy_snr+nonspeech"}
    idx = deltas.set_index(["model", "component", "metric"])
    for model in ("tiny.en", "base"):
        neff = idx.loc[(model, "dec_cross_attn", "n_eff")]
        assert neff["kind"] == "pct" and not neff["paired"]  # non-speech has no source
        assert neff["ci_low"] <= -10.0 <= neff["ci_high"] and neff["ci_high"] < 0
        # Holm over 18 cells with p ≥ 1/1001 gives p_adj ≥ 0.018; 0.05 is the claim tested.
        assert neff["p_adj"] < 0.05
        alpha = idx.loc[(model, "dec_cross_attn", "alpha")]
        assert alpha["ci_low"] <= 0.2 <= alpha["ci_high"] and alpha["ci_low"] > 0
        null = idx.loc[(model, "dec_self_attn", "n_eff")]
        assert null["ci_low"] < 0 < null["ci_high"]  # no planted effect


def test_delta_table_pairs_by_source_and_splits_families(results: pd.DataFrame) -> None:
    deltas = stats.delta_table(
        results, models=["tiny.en"], by_family=True, by_layer=True, n_boot=500, n_perm=500
    )
    cell = deltas[(deltas["component"] == "dec_cross_attn") & (deltas["metric"] == "n_eff")]
    assert sorted(cell["layer"].unique()) == [-1, 0, 1, 2, 3]
    noisy = cell[(cell["family"] == "noisy_snr") & (cell["layer"] == -1)].iloc[0]
    nonspeech = cell[(cell["family"] == "nonspeech") & (cell["layer"] == -1)].iloc[0]
    assert noisy["paired"] and noisy["n_clean"] == 40 and noisy["n_stressed"] == 80
    assert not nonspeech["paired"] and nonspeech["n_stressed"] == 20
    # Pairing removes the shared per-stimulus level: the paired CI is much narrower.
    assert (noisy["ci_high"] - noisy["ci_low"]) < 0.5 * (nonspeech["ci_high"] - nonspeech["ci_low"])
    # Layer-mean point estimate by hand: mean over layers per stimulus, then group means.
    sub = results[
        (results["model"] == "tiny.en")
        & (results["component"] == "dec_cross_attn")
        & (results["metric"] == "n_eff")
        & (results["control"] == "matched_T")
        & (results["K"] == 10)
    ]
    per_stim = sub.groupby(["stimulus_id", "family"])["value"].mean().reset_index()
    clean = per_stim[per_stim["family"] == "clean"]["value"].mean()
    noisy_mean = per_stim[per_stim["family"] == "noisy_snr"]["value"].mean()
    # Every source has 2 versions, so the count-weighted clean mean equals the plain mean.
    assert noisy["estimate"] == pytest.approx(100 * (noisy_mean - clean) / clean, rel=1e-9)


def test_delta_table_omits_a_family_with_one_paired_source(results: pd.DataFrame) -> None:
    """Several stressed versions of a single sentence are one bootstrap unit: no interval.

    This is the book's CI case of a model attacked on one sentence only; the family must be
    left out of the table, not crash it or get an interval of zero width.
    """
    one_source = results[~results["family"].eq("noisy_snr") | results["source_id"].eq("c0")]
    deltas = stats.delta_table(one_source, by_family=True, n_boot=200, n_perm=200)
    assert set(deltas["family"]) == {"nonspeech"}
    two_sources = results[
        ~results["family"].eq("noisy_snr") | results["source_id"].isin(["c0", "c1"])
    ]
    deltas = stats.delta_table(two_sources, by_family=True, n_boot=200, n_perm=200)
    assert set(deltas["family"]) == {"nonspeech", "noisy_snr"}


def test_delta_table_errors_name_the_fix(results: pd.DataFrame) -> None:
    with pytest.raises(WspecError, match="available"):
        stats.delta_table(results, control="nonexistent")
    with pytest.raises(WspecError, match="K=7"):
        stats.delta_table(results, K=7)
    with pytest.raises(WspecError, match="lacks columns"):
        stats.delta_table(results.drop(columns=["source_id"]))
    with pytest.raises(WspecError, match="not in the results"):
        stats.delta_table(results, models=["large-v3"])


def test_table1_layout_and_paper_columns(results: pd.DataFrame) -> None:
    table = table1(results, n_boot=500, n_perm=500)
    assert list(table["component"].unique()) == list(paper.COMPONENT_LABELS)
    cross = table[table["component"] == "dec_cross_attn"]
    # Our tiny.en on the paper's Tiny row, base (not in the paper) next, then paper-only rows.
    assert list(zip(cross["model"], cross["paper_model"], strict=True)) == [
        ("tiny.en", "Tiny"),
        ("base", ""),
        ("", "Small"),
        ("", "Large"),
    ]
    for stem in STEMS.values():
        for suffix in ("", "_lo", "_hi", "_p"):
            assert f"{stem}{suffix}" in table.columns
        assert f"paper_{stem}" in table.columns
    published = paper.paper_table1().set_index(["component", "paper_model"])
    for _, row in table[table["paper_model"] != ""].iterrows():
        for stem in STEMS.values():
            expected = published.loc[(row["component"], row["paper_model"]), stem]
            assert (math.isnan(expected) and math.isnan(row[f"paper_{stem}"])) or row[
                f"paper_{stem}"
            ] == expected
    assert table[table["model"] == "base"]["paper_d_neff_pct"].isna().all()
    assert table[table["model"] == ""]["d_neff_pct"].isna().all()
    tiny = cross[cross["model"] == "tiny.en"].iloc[0]
    assert tiny["d_neff_pct_lo"] <= -10 <= tiny["d_neff_pct_hi"]


def test_format_table_text_markdown_html(results: pd.DataFrame) -> None:
    table = table1(results, models=["tiny.en"], n_boot=200, n_perm=200)
    text = format_table(table, "text")
    assert "Dec Cross-Attn" in text and "−7.56%" in text and "tiny.en" in text
    md = format_table(table, "markdown").splitlines()
    assert md[0].startswith("| Component |") and md[1].startswith("|---")
    assert format_table(table, "html") == table1_view(table).html
    with pytest.raises(WspecError):
        format_table(table, "latex")


def _cells(row_html: str) -> list[str]:
    return re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row_html)


def test_table1_view_reads_like_the_paper(results: pd.DataFrame) -> None:
    """One row per component, no index column, the paper's value beside ours, the interval and
    n on lines of their own, and the paper's unmatched models in a footnote."""
    table = table1(results, n_boot=500, n_perm=500)
    view = table1_view(table)
    assert view.html.count("<table") == 1  # tiny.en + base: 9 value columns fit one table
    body = view.html.split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    assert [_cells(r)[0] for r in rows] == list(paper.COMPONENT_LABELS.values())
    head = view.html.split("<thead>")[1].split("</thead>")[0]
    sub = _cells(re.findall(r"<tr>(.*?)</tr>", head)[1])
    assert sub == ["tiny.en", "paper Tiny", "base"] * 3  # no index; paper's Tiny beside ours
    cross = _cells(rows[0])
    assert cross[2] == "−7.56%" and cross[5] == "+2.12" and cross[8] == "+0.250"
    tiny_neff = table.query("component == 'dec_cross_attn' and model == 'tiny.en'").iloc[0]
    main, detail = cross[1].split("<br>", 1)
    assert main == f"{tiny_neff['d_neff_pct']:+.2f}%*".replace("-", "−")  # planted −10 %
    lo, hi = (f"{tiny_neff[c]:+.2f}".replace("-", "−") for c in ("d_neff_pct_lo", "d_neff_pct_hi"))
    assert detail == f'<span class="wspec-detail">[{lo}, {hi}]<br>n=40/100</span>'
    assert "Paper, Small (no model of ours)" in view.notes[1] and "−9.54%" in view.notes[1]
    assert view.notes[2].startswith("Paper, Large") and "Dec FFN — / — / —" in view.notes[2]
    md = view.markdown.split("\n\n")[0].splitlines()
    assert len(md) == 2 + 3 and "<br>" not in view.markdown  # LaTeX cannot take <br>
    assert md[2].startswith("| Dec Cross-Attn | " + main.replace("*", "\\*") + f" [{lo}, {hi}]")


def test_table1_view_splits_metrics_rather_than_scroll(results: pd.DataFrame) -> None:
    table = table1(results, n_boot=200, n_perm=200)
    split = table1_view(table, max_columns=3)  # 3 columns per metric: one table each
    assert split.html.count("<table") == 3
    assert [m.count("| Dec ") for m in split.markdown.split("\n\n")[:3]] == [3, 3, 3]
    with pytest.raises(WspecError, match="no model of ours"):
        table1_view(table[table["model"] == ""])


def _table_command(argv: list[str]) -> int:
    """Run `wspec table` through its own parser (the full CLI imports every command module)."""
    parser = argparse.ArgumentParser(prog="wspec")
    table_command.register(parser.add_subparsers())
    args = parser.parse_args(["table", *argv])
    return args.func(args)


def test_cli_table_reads_results_parquet(results, tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.parquet"
    results.to_parquet(path)
    argv = ["--results", str(path), "--models", "tiny.en", "--n-boot", "200", "--protocol", "broad"]
    rc = _table_command([*argv, "--control", "matched_T"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Dec Self-Attn" in out and "+0.250" in out and "K=10, control=matched_T" in out
    # The broad protocol's own reading is the null-normalised natural decode; a table
    # without it says so instead of falling back to another control.
    with pytest.raises(WspecError, match="no null-normalised rows"):
        _table_command(argv)
    with pytest.raises(WspecError, match="not found"):
        _table_command(["--results", str(tmp_path / "missing.parquet")])


# --------------------------------------------------------------------------- paper values

#: The abstract and Table 1 lines of the paper, copied verbatim from the project's seed.
PAPER_EXCERPT = Path(__file__).parent / "data" / "paper_excerpt.txt"


def _seed_text() -> str:
    return PAPER_EXCERPT.read_text(encoding="utf-8")


def _number(text: str) -> float:
    return float(text.replace("−", "-").replace("%", ""))


def test_paper_table1_equals_seed_text() -> None:
    text = _seed_text()
    start = text.index("Comparison of spectral shifts between Clean and Adversarial states.")
    segment = text[start : start + 600].split("\n")[0]
    blocks = re.split(r"(Dec Cross-Attn|Dec Self-Attn|Dec FFN)", segment)[1:]
    labels = {v: k for k, v in paper.COMPONENT_LABELS.items()}
    parsed: dict[tuple[str, str], list[float]] = {}
    for label, body in zip(blocks[::2], blocks[1::2], strict=True):
        for model, values in re.findall(r"(Tiny|Small|Large)([^A-Za-z]*)", body):
            numbers = re.findall(r"[+−-]?\d+\.\d+", values)
            parsed[(labels[label], model)] = [_number(n) for n in numbers]
    assert len(parsed) == 8  # the seed's table stops inside the Dec FFN / Small row
    for row in paper.TABLE1:
        published = [row.d_neff_pct, row.d_log10_kf, row.d_alpha]
        seen = parsed.get((row.component, row.paper_model), [])
        assert published[: len(seen)] == seen
        assert all(math.isnan(v) for v in published[len(seen) :])  # truncated → NaN
        if len(seen) < 3:
            assert "truncated" in row.note


def test_paper_abstract_numbers_equal_seed_text() -> None:
    text = _seed_text()
    collapse = re.search(r"\$?(\d+\.\d+)\\?%\$? collapse in Cross-Attention rank", text)
    compress = re.search(r"compresses rank \(\$?([−-]\d+\.\d+)\\?%", text)
    assert collapse and compress
    assert paper.abstract_value("cross_attn_collapse") == -float(collapse.group(1))
    assert paper.abstract_value("self_attn_compression") == _number(compress.group(1))


def test_model_mapping() -> None:
    assert paper.paper_model_for("tiny.en") == "Tiny"
    assert paper.paper_model_for("openai/whisper-large-v3-turbo") == "Large"
    assert paper.paper_model_for("base") is None
    assert paper.paper_model_for("random:tiny") is None
    assert paper.model_scale("openai/whisper-large-v3-turbo") == "large"
    assert paper.model_scale("base") == "intermediate"
