"""The cross-model joins and measurements behind the Results, Referee, Controls and Detection
chapters: real tiny.en decodes of real synthesized speech and silence, plus small tables whose
answer is known by construction for the selection logic."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from wspec import crossmodel as xm
from wspec import stats
from wspec.audio import read_audio
from wspec.errors import WspecError
from wspec.interventions import run_with_cache
from wspec.pipeline import EIGEN_COLUMNS, EIGEN_PARTS, SpectralSettings, run_model
from wspec.spectra import gram_eigenvalues
from wspec.stimuli.tts import synthesize
from wspec.verdicts import ModelVerdict, Verdict

N_ROWS = 12  # a short T0, so that the test decodes stay short
SETTINGS = SpectralSettings(matched_rows=N_ROWS, max_new_tokens=48)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, clip_row) -> pd.DataFrame:
    """Two spoken sentences and two silent clips (tiny.en writes " you" on silence)."""
    folder = tmp_path_factory.mktemp("clips")
    sentences = {
        "speech-a": "The bus was late again this morning, so we walked to the station.",
        "speech-b": "She painted the old fence a bright shade of blue last summer.",
    }
    rows = [
        clip_row(cid, "clean", text, synthesize(text, "espeak_us"), folder)
        for cid, text in sentences.items()
    ]
    for seconds in (3, 4):
        silence = np.zeros(seconds * 16000, np.float32)
        rows.append(clip_row(f"silence-{seconds}", "nonspeech", "", silence, folder))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def eig_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("eigen")


def _eigen_run(loaded, manifest: pd.DataFrame, folder) -> pd.DataFrame:
    """The eigen-spectra the pipeline keeps beside a run (what the chapters read)."""
    run_model(
        "tiny.en",
        "test",
        out=folder / "r.parquet",
        progress=False,
        manifest=manifest,
        settings=SETTINGS,
        loaded=loaded,
        cache=folder,
    )
    return pd.read_parquet(folder / "r.eigen.parquet")


@pytest.fixture(scope="module")
def eigs(manifest, eig_cache, tiny_en) -> pd.DataFrame:
    return _eigen_run(tiny_en, manifest, eig_cache)


def test_eigen_table_has_its_columns(eigs) -> None:
    assert list(eigs.columns) == list(EIGEN_COLUMNS)
    assert set(eigs["component"]) == {"dec_cross_attn", "dec_self_attn", "dec_ffn"}


def test_budget_spectra_have_the_common_shape_and_raw_ones_do_not(eigs) -> None:
    shapes = eigs.groupby(["stimulus_id", "control"])["n_rows"].agg(["min", "max"])
    budget = shapes.xs("budget_T", level="control")
    assert (budget["min"] == N_ROWS).all() and (budget["max"] == N_ROWS).all()
    silence = eigs[(eigs["stimulus_id"] == "silence-3") & (eigs["control"] == "raw")]
    n_tokens = int(silence["n_tokens"].iloc[0])
    assert n_tokens + 1 < N_ROWS  # the short hallucination the control exists for
    assert (silence["n_rows"] == n_tokens + 1).all()
    # Centred N rows have at most N − 1 non-zero eigenvalues. Tolerance: float64 round-off of
    # eigenvalues of order 1 is ~1e-12 relative; 1e-9 × λ1 separates true zeros from modes.
    for _, spec in silence.groupby(["layer", "component"]):
        lam = spec["eigenvalue"].to_numpy()
        assert np.sum(lam > 1e-9 * lam.max()) <= n_tokens


def test_budget_rows_equal_the_natural_decodes_first_rows(eigs, manifest, tiny_en) -> None:
    """The decoder is causal: suppressing end-of-text later cannot change the first T0 rows."""
    stim = manifest.set_index("id").loc["speech-a"]
    loaded = tiny_en
    audio = read_audio(stim["path"])
    site = "decoder.3.cross_attn"
    decoded, captured = run_with_cache(loaded, audio, [site], max_new_tokens=48)
    matrix = captured.matrices[site]
    assert len(decoded.tokens) + 1 >= N_ROWS  # a full sentence is longer than T0
    expected = gram_eigenvalues(matrix[:N_ROWS]).numpy()
    got = eigs[
        (eigs["stimulus_id"] == "speech-a")
        & (eigs["control"] == "budget_T")
        & (eigs["component"] == "dec_cross_attn")
        & (eigs["layer"] == 3)
    ].sort_values("rank")["eigenvalue"]
    # Same float32 forward pass with and without the budget: agreement to float32 round-off
    # of the activations (1e-5 relative), far below any spectral difference we report.
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_eigenvalues_come_from_the_run_cache_without_decoding(
    eigs, manifest, eig_cache, monkeypatch, tiny_en
) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although every stimulus is cached")

    monkeypatch.setattr("wspec.pipeline.run_with_cache", no_decoding)
    pd.testing.assert_frame_equal(_eigen_run(tiny_en, manifest, eig_cache), eigs)


def test_mean_spectra_are_distributions_over_rank(eigs) -> None:
    spectra = xm.mean_spectra(eigs, control="budget_T", n_modes=30)
    assert set(spectra["group"]) == {"clean", "stressed"}
    assert set(spectra["layer"]) == {3}  # the last decoder layer of tiny.en
    for _, curve in spectra.groupby(["component", "group"]):
        share = curve.sort_values("rank")["share"].to_numpy()
        assert share.sum() == pytest.approx(1.0, abs=1e-9)  # normalised per stimulus
        assert np.all(np.diff(share) <= 1e-12)  # descending eigenvalues stay descending
        # T0 centred rows have at most T0 − 1 modes; the rest is float64 round-off (~1e-16).
        assert np.all(share[N_ROWS - 1 :] < 1e-12)


def test_kl_table_covers_every_layer_and_adjusts_p(eigs) -> None:
    table = xm.kl_table(eigs, control="budget_T", n_perm=200)
    assert len(table) == 4 * len(EIGEN_PARTS)
    assert (table["kl"] >= 0).all()
    assert (table["p_adj"] >= table["p_value"] - 1e-12).all()
    # 2 clean and 2 stressed spectra allow 6 splits, so no p-value can be below ~1/6.
    assert table["p_value"].min() > 0.1


def test_untrained_twin_never_stops_and_keeps_the_budget_rows(manifest, tmp_path) -> None:
    one = manifest[manifest["id"] == "silence-3"]
    table = xm.untrained_results("tiny.en", one, "test", max_new_tokens=30, cache=tmp_path)
    assert set(table["model"]) == {"random:tiny.en"}
    assert (table["n_tokens"] == 30).all()  # an untrained decoder never chooses end-of-text
    budget = table[(table["control"] == "budget_T") & (table["metric"] == "n_eff")]
    t0 = SpectralSettings().matched_rows
    assert (budget["n_rows"] == t0).all() and np.isfinite(budget["value"]).all()


# --------------------------------------------------------------------------- selection logic


def _results(controls: dict[str, float]) -> pd.DataFrame:
    """A tidy results table: 4 clean and 4 stressed stimuli, 2 layers, 3 components."""
    rows = []
    for control, nan_share in controls.items():
        for i in range(8):
            family = "clean" if i < 4 else "nonspeech"
            for component in ("dec_cross_attn", "dec_self_attn", "dec_ffn"):
                for layer in (0, 1):
                    for metric in ("n_eff", "alpha", "log10_kf"):
                        value = (10.0 if family == "clean" else 8.0) + 0.1 * i + layer
                        if component == "dec_ffn" and nan_share:
                            value = np.nan
                        rows.append(
                            {
                                "model": "tiny.en",
                                "stimulus_id": f"s{i}",
                                "family": family,
                                "source_id": "",
                                "layer": layer,
                                "component": component,
                                "control": control,
                                "metric": metric,
                                "K": 10,
                                "value": value,
                                "n_tokens": 3 + 4 * i,
                            }
                        )
    return pd.DataFrame(rows)


def test_null_control_reads_each_metric_under_its_own_null() -> None:
    """`NULL_CONTROL` (the broad reading) takes n_eff from null_ratio and alpha/log10_kf from
    null_diff; the wrong pairing would shift a value by the offset marked here."""
    table = _results({"null_ratio": 0, "null_diff": 0, "budget_T": 0})
    offset = table["control"].map({"null_ratio": 0.0, "null_diff": 100.0, "budget_T": 1000.0})
    table["value"] = table["value"] + offset
    picked = stats.select_results(table, control=xm.BROAD_CONTROL, K=10)
    assert dict(picked.groupby("metric")["control"].unique().map(tuple)) == {
        "n_eff": ("null_ratio",),
        "alpha": ("null_diff",),
        "log10_kf": ("null_diff",),
    }
    assert len(picked) == len(table) // 3
    with pytest.raises(WspecError, match="no null-normalised rows"):
        stats.select_results(_results({"budget_T": 0}), control=xm.BROAD_CONTROL, K=10)


def test_deltas_by_control_maps_null_to_each_metrics_null() -> None:
    table = _results({"raw": 0, "null_ratio": 0, "null_diff": 0})
    out = xm.deltas_by_control(table, ("raw", "null", "budget_T"), n_boot=200, n_perm=200)
    assert set(out["control"]) == {"raw", "null"}  # budget_T absent: skipped
    raw = out[(out["control"] == "raw") & (out["component"] == "dec_cross_attn")]
    # Layer means: clean 10.65, stressed 9.05 (values +0.1·i, layers 0 and 1).
    neff = raw[raw["metric"] == "n_eff"]["estimate"].iloc[0]
    assert neff == pytest.approx(100 * (9.05 - 10.65) / 10.65)
    alpha = raw[raw["metric"] == "alpha"]["estimate"].iloc[0]
    assert alpha == pytest.approx(9.05 - 10.65)
    null = out[out["control"] == "null"]
    assert set(null["metric"]) == {"n_eff", "alpha", "log10_kf"}


def test_length_table_and_correlation() -> None:
    lengths = xm.length_table(_results({"raw": 0}), controls=("raw", "matched_T"))
    assert set(lengths["control"]) == {"raw"}
    assert len(lengths) == 8
    corr = xm.length_correlation(lengths)
    # Length rises with i; values rise with i within each group, but every stressed value is
    # below every clean one, so the value ranks are 5..8 (clean) then 1..4 (stressed).
    ranks_value = pd.Series([5, 6, 7, 8, 1, 2, 3, 4])
    expected = ranks_value.corr(pd.Series(range(8)), method="spearman")
    assert corr["rho"].iloc[0] == pytest.approx(expected)


def test_pick_clips_is_deterministic_and_spreads_families() -> None:
    stim = pd.DataFrame(
        {
            "id": ["c0", "c1", "c2", "n0", "n1", "r0", "long"],
            "family": ["clean", "clean", "clean", "nonspeech", "nonspeech", "reversed", "clean"],
            "duration_s": [4, 4, 4, 10, 31, 4, 40],
        }
    )
    chosen = xm.pick_clips(stim, n_clean=2, n_stressed=2)
    assert chosen["id"].tolist() == ["c0", "c1", "n0", "r0"]
    assert (chosen["duration_s"] <= xm.MAX_CLIP_S).all()
    with pytest.raises(WspecError):
        xm.pick_clips(stim[stim["family"] == "clean"])


def test_balanced_subset_caps_each_group() -> None:
    stim = pd.DataFrame({"family": ["clean"] * 5 + ["nonspeech"] * 7, "id": range(12)})
    sub = xm.balanced_subset(stim, 3)
    assert (sub["family"] == "clean").sum() == 3 and (sub["family"] != "clean").sum() == 3
    assert sub.index.is_monotonic_increasing
    assert xm.balanced_subset(stim, None) is stim


def test_run_outputs_joins_runs_and_names_missing_ones(tmp_path) -> None:
    for name in ("a", "b"):
        pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / f"{name}.parquet")
    manifest = {
        "runs": [
            {"model": "tiny.en", "outputs": {"labels": str(tmp_path / "a.parquet")}},
            {"model": "base", "outputs": {"labels": str(tmp_path / "b.parquet")}},
        ]
    }
    joined = xm.run_outputs(manifest, "labels")
    assert joined["model"].tolist() == ["tiny.en", "tiny.en", "base", "base"]
    assert xm.run_models(json.loads(json.dumps(manifest))) == ["tiny.en", "base"]
    with pytest.raises(WspecError, match="no 'spectra' output"):
        xm.run_outputs(manifest, "spectra")


def test_run_scales_come_from_each_runs_recorded_architecture() -> None:
    arch = {"d_model": 384, "family": "tiny", "scale": "intermediate"}
    manifest = {
        "runs": [
            {"model": "my-large-copy", "outputs": {"architecture": arch}},
            {"model": "big", "outputs": {"architecture": {**arch, "scale": "large"}}},
        ]
    }
    assert xm.run_scales(manifest) == {"my-large-copy": "intermediate", "big": "large"}
    with pytest.raises(WspecError, match="did not record its architecture"):
        xm.run_scales({"runs": [{"model": "old", "outputs": {}}]})


def test_prose_formatting() -> None:
    assert xm.format_interval(-3.214, -6.1, 0.4, unit="%") == "−3.21 % [−6.10, +0.40]"
    assert xm.format_interval(0.91, 0.73, 1.0, sign=False) == "0.91 [0.73, 1.00]"
    assert xm.format_interval(float("nan"), 0, 1) == "—"
    v = Verdict(
        "C1",
        "t",
        "s",
        "r",
        "confirmed",
        "why",
        (ModelVerdict("tiny.en", "confirmed", "", -4, -6, -2),),
    )
    assert xm.verdict_summary(v, unit="%") == "`tiny.en`: −4.00 % [−6.00, −2.00] → *confirmed*"
    reasoned = (ModelVerdict("base", "not confirmed", "CI excludes the claimed range", 1, 0.5, 2),)
    text = xm.verdict_summary(Verdict("C3", "t", "s", "r", "not confirmed", "", reasoned))
    assert text.endswith("→ *not confirmed* (CI excludes the claimed range)")
    empty = Verdict("C2", "t", "s", "r", "inconclusive", "not tested")
    assert xm.verdict_summary(empty) == "not tested"


def test_decode_cap_limits_only_untrained_models() -> None:
    from wspec.pipeline import SpectralSettings

    assert xm.decode_cap("random:tiny.en") == xm.UNTRAINED_MAX_NEW_TOKENS
    assert xm.decode_cap("tiny.en") == SpectralSettings().max_new_tokens
    assert xm.untrained_twin("base") == "random:base"
    assert xm.untrained_twin("random:base") == "random:base"
