"""The paper's protocol: per-model Hell selection, paired natural-row deltas, forced rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wspec import labels as wlabels
from wspec import pipeline, protocol
from wspec.stats import LAYER_MEAN


def _results(shift: float, n_sources: int = 6, seed: int = 0) -> pd.DataFrame:
    """Long clean sources, three hell versions each, one cross-attention n_eff per clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_sources):
        src = f"long-{i:02d}"
        base = 8.0 + rng.normal(0, 0.3)
        clips = [(src, "long_clean", "", base)]
        clips += [
            (f"hell-{i:02d}-v-{c}", "hell", src, base + shift + rng.normal(0, 0.1))
            for c in ("tempo3p5", "talkers4", "noise0db-white")
        ]
        for sid, fam, source, value in clips:
            for control in ("natural_T", "budget_T"):
                rows.append(
                    {
                        "model": "m",
                        "stimulus_id": sid,
                        "family": fam,
                        "source_id": source,
                        "layer": 0,
                        "component": "dec_cross_attn",
                        "control": control,
                        "metric": "n_eff",
                        "K": 10,
                        "value": value,
                    }
                )
    return pd.DataFrame(rows)


def _labels(results: pd.DataFrame, wer_of) -> pd.DataFrame:
    clips = results.drop_duplicates("stimulus_id")
    return pd.DataFrame(
        {
            "model": clips["model"],
            "stimulus_id": clips["stimulus_id"],
            "family": clips["family"],
            "wer": [wer_of(s) for s in clips["stimulus_id"]],
        }
    )


def test_only_clips_the_model_got_wrong_are_kept() -> None:
    results = _results(-1.0)
    labels = _labels(results, lambda s: 0.9 if "tempo" in s else 0.2)
    kept = protocol.select_hell(labels)
    assert set(kept.loc[kept["kept"], "stimulus_id"].str.split("-").str[-1]) == {"tempo3p5"}
    summary = protocol.selection_summary(labels).set_index("condition")
    assert summary.loc["tempo3p5", "kept"] == 6 and summary.loc["talkers4", "kept"] == 0
    sub = protocol.protocol_results(results, labels)
    assert set(sub["family"]) == {"long_clean", "hell"}
    assert sub.loc[sub["family"] == "hell", "stimulus_id"].str.endswith("tempo3p5").all()
    # a threshold is a parameter: at 0.1 every hell clip counts as wrong
    assert protocol.select_hell(labels, wer_threshold=0.1)["kept"].all()


def test_paired_delta_recovers_the_planted_shift() -> None:
    results = _results(-1.0)
    labels = _labels(results, lambda s: 0.9)
    table = protocol.protocol_table(
        results,
        labels,
        components=("dec_cross_attn",),
        metrics=("n_eff",),
        n_boot=500,
        n_perm=500,
    )
    cell = table[table["layer"] == LAYER_MEAN].iloc[0]
    assert bool(cell["paired"]) and cell["n_clean"] == 6 and cell["n_stressed"] == 18
    assert cell["ci_low"] < -100 / 8.0 < cell["ci_high"]  # -1 on ~8 is about -12.5 %


def test_a_source_without_value_drops_its_clips_not_the_pairing() -> None:
    results = _results(-1.0)
    short = results["stimulus_id"] == "long-00"
    results.loc[short, "value"] = np.nan  # too short for natural_T
    labels = _labels(results, lambda s: 0.9)
    table = protocol.protocol_table(
        results,
        labels,
        components=("dec_cross_attn",),
        metrics=("n_eff",),
        n_boot=200,
        n_perm=200,
    )
    cell = table[table["layer"] == LAYER_MEAN].iloc[0]
    assert bool(cell["paired"]) and cell["n_clean"] == 5 and cell["n_stressed"] == 15


def test_no_kept_clip_gives_an_empty_table() -> None:
    results = _results(-1.0)
    labels = _labels(results, lambda s: 0.0)
    assert protocol.protocol_table(results, labels, n_boot=50, n_perm=50).empty


def test_forced_share_and_natural_length_counts() -> None:
    decodes = pd.DataFrame(
        {
            "model": "m",
            "stimulus_id": ["a", "b", "c", "d"],
            "family": ["nonspeech", "nonspeech", "long_clean", "long_clean"],
            "n_tokens": [1, 3, 40, 22],
        }
    )
    forced = protocol.forced_row_share(decodes, 24).set_index("family")
    # " you" (1 token) has 2 natural rows: 22 of 24 forced; 3 tokens: 20 of 24
    assert forced.loc["nonspeech", "forced_share"] == pytest.approx((22 + 20) / 48)
    assert forced.loc["long_clean", "forced_share"] == pytest.approx(1 / 48)  # 22 tokens: 1 row
    lengths = protocol.natural_length_report(decodes, 24).set_index("family")
    assert lengths.loc["long_clean", "measured"] == 1  # 40 tokens yes; 22 + 1 = 23 rows no
    assert lengths.loc["nonspeech", "left_out"] == 2


def test_sensitivity_table_names_every_variant_and_maps_the_kf_column() -> None:
    results = _results(-1.0)
    extra = results[results["control"] == "natural_T"].assign(metric="log10_cond")
    results = pd.concat([results, extra], ignore_index=True)
    labels = _labels(results, lambda s: 0.9)
    variants = [
        v for v in protocol.sensitivity_variants(24) if v.control in {"natural_T", "budget_T"}
    ]
    table = protocol.sensitivity_table(results, labels, variants, n_boot=100, n_perm=100)
    assert list(table["variant"].unique()) == [v.name for v in variants]
    cond = table[table["variant"].str.startswith("condition number")]
    # the condition-number row reports log10_cond in the K_f column; the primary row has no
    # Kirchhoff values planted, so it shows n_eff only
    assert set(cond["metric"]) == {"n_eff", "log10_kf"}
    assert set(table.loc[table["kind"] == "primary", "metric"]) == {"n_eff"}
    with pytest.raises(Exception, match="not in the results"):
        protocol.sensitivity_table(
            results, labels, [protocol.sensitivity_variants(24)[1]], n_boot=10
        )


def test_labels_from_the_run_equal_a_fresh_labelling(tiny_en, tmp_path, clip_row) -> None:
    """The spectral run's decode (with its budget) labels exactly like a plain decode."""
    from wspec.stimuli.tts import synthesize

    rows = [
        clip_row("sil", "nonspeech", "", np.zeros(2 * 16000, np.float32), tmp_path),
        clip_row(
            "sp",
            "clean",
            "The bus was late again.",
            synthesize("The bus was late again.", "espeak_us"),
            tmp_path,
        ),
    ]
    manifest = pd.DataFrame(rows)
    pipeline.run_model(
        "tiny.en",
        "t",
        out=tmp_path / "r.parquet",
        progress=False,
        manifest=manifest,
        settings=pipeline.SpectralSettings(max_new_tokens=32),
        loaded=tiny_en,
        cache=tmp_path / "c",
    )
    decodes = pd.read_parquet(tmp_path / "r.decodes.parquet")
    from_run = wlabels.labels_from_decodes(decodes, manifest)
    fresh = wlabels.label_stimuli(tiny_en, manifest, progress=False, cache=False)
    pd.testing.assert_frame_equal(
        from_run.drop(columns="model"), fresh.drop(columns="model"), check_dtype=False
    )
