"""The pipeline on real tiny.en and real (synthesised) audio: schema, controls, cache, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wspec import pipeline
from wspec.capture import all_sites
from wspec.cli import build_parser
from wspec.errors import WspecError
from wspec.spectra import METRICS
from wspec.stimuli.tts import synthesize

SETTINGS = pipeline.SpectralSettings(max_new_tokens=64)
LONG_TEXT = (
    "We missed the last bus and had to walk home through the quiet streets. "
    "The soup needs a little more salt, but the bread is perfect. "
    "Please remember to water the plants while I am away next week."
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, clip_row) -> pd.DataFrame:
    """Four real clips: silence (tiny.en says " you"), noise, and two spoken sentences."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    clips = {
        "silence": ("nonspeech", "", np.zeros(3 * 16000, np.float32)),
        "noise": ("nonspeech", "", (0.05 * rng.standard_normal(4 * 16000)).astype(np.float32)),
        "speech-a": ("clean", "The bus was late again this morning.", None),
        "speech-b": ("clean", "She painted the old fence a bright shade of blue.", None),
        "speech-long": ("long_clean", LONG_TEXT, None),
    }
    rows = []
    for cid, (family, text, audio) in clips.items():
        audio = synthesize(text, "espeak_us") if audio is None else audio
        rows.append(clip_row(cid, family, text, audio, folder))
    return pd.DataFrame(rows)


def _run(loaded, manifest: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """The test settings' run of `manifest`, table and result cache under `folder`."""
    return pipeline.run_model(
        "tiny.en",
        "test",
        out=folder / "t.parquet",
        progress=False,
        manifest=manifest,
        settings=SETTINGS,
        loaded=loaded,
        cache=folder / "cache",
    )


_ANALYSE = pipeline._analyse_stimulus  # the real one, whatever a test patches in later


def _count_analyses(monkeypatch) -> list[str]:
    """Record the id of every stimulus the pipeline analyses (not read from its cache)."""
    calls: list[str] = []

    def counting(loaded, stim, settings):
        calls.append(stim["id"])
        return _ANALYSE(loaded, stim, settings)

    monkeypatch.setattr(pipeline, "_analyse_stimulus", counting)
    return calls


@pytest.fixture(scope="module")
def full_run(manifest, tmp_path_factory, tiny_en) -> pd.DataFrame:
    return _run(tiny_en, manifest, tmp_path_factory.mktemp("run"))


def test_table_schema_and_completeness(full_run: pd.DataFrame, tiny_en) -> None:
    assert list(full_run.columns) == list(pipeline.COLUMNS)
    assert set(full_run["metric"]) == set(METRICS)
    assert set(full_run["K"]) == {10, 0, SETTINGS.sensitivity_k}
    natural = {"natural_T", "natural_win", "budget_T"}
    sens = {
        "sens:uncentred",
        "sens:singular",
        f"sens:K{SETTINGS.sensitivity_k}",
        "sens:no_prompt_row",
        *(f"sens:T{t}" for t in SETTINGS.sensitivity_rows),
    }
    assert set(full_run["control"]) == {"raw", "matched_T", "null_ratio", "null_diff"} | (
        natural | sens
    )
    by_control = full_run.groupby("control")["component"].agg(set)
    decoder = {c for c in set(full_run["component"]) if c.startswith("dec_")}
    for control in natural:
        assert by_control[control] == decoder  # decoding positions only
    for control in sens:
        assert by_control[control] == {"dec_cross_attn"}  # Table 1's first row only
    # every site of every stimulus has every (control, metric, K) it is measured under
    sites = all_sites(tiny_en.model.config)
    per_site = full_run.groupby(["stimulus_id", "component", "layer"]).size()
    assert per_site.index.droplevel(0).nunique() == len(sites)
    assert per_site.groupby(level=[1, 2]).nunique().eq(1).all()
    # every NaN says why; no finite value carries a note
    nan = full_run["value"].isna()
    assert (full_run.loc[nan, "note"] != "").all()
    assert (full_run.loc[~nan, "note"] == "").all()


def test_primary_control_never_contains_a_forced_row(full_run, manifest, tiny_en) -> None:
    """natural_T of a long clip equals the metrics of a decode that was never forced; a short
    decode gets no value at all (it is not padded)."""
    from wspec.audio import read_audio
    from wspec.interventions import run_with_cache
    from wspec.spectra import gram_eigenvalues, graph_laplacian_eigenvalues, metric_values

    t0 = SETTINGS.matched_rows
    natural = full_run[full_run.control == "natural_T"]
    silence = natural[natural.stimulus_id == "silence"]
    assert silence["value"].isna().all()
    assert (silence["note"] == f"fewer than {t0} natural rows").all()

    path = manifest.set_index("id").loc["speech-long", "path"]
    audio = read_audio(path)
    plain, captured = run_with_cache(
        tiny_en, audio, ["decoder.1.cross_attn"], max_new_tokens=SETTINGS.max_new_tokens
    )
    x = captured.matrices["decoder.1.cross_attn"]
    assert len(plain.tokens) + 1 >= t0  # the long clip has enough natural rows
    head = x[:t0]
    cell = natural[
        (natural.stimulus_id == "speech-long")
        & (natural.component == "dec_cross_attn")
        & (natural.layer == 1)
        & (natural.K == 10)
    ].set_index("metric")["value"]
    lam = gram_eigenvalues(head).numpy()
    mu = graph_laplacian_eigenvalues(head).numpy()
    width = max(t0, head.shape[1])
    # Same rows through the same float64 eigen-solve: equal to round-off (1e-9 relative).
    assert cell["n_eff"] == pytest.approx(metric_values(lam, "n_eff", 10, width), rel=1e-9)
    assert cell["alpha"] == pytest.approx(metric_values(lam, "alpha", 10, width), rel=1e-9)
    assert cell["log10_kf"] == pytest.approx(metric_values(mu, "log10_kf", 10), rel=1e-9)


def test_short_decode_is_flagged_not_called_collapse(full_run: pd.DataFrame) -> None:
    silence = full_run[(full_run.stimulus_id == "silence") & (full_run.component == "dec_residual")]
    n_tokens = int(silence["n_tokens"].iloc[0])
    assert n_tokens <= 2  # " you"
    raw = silence[(silence.control == "raw") & (silence.metric == "n_eff") & (silence.K == 0)]
    # T = n_tokens + 1 centred rows: at most n_tokens nonzero eigenvalues
    assert (raw["value"] <= n_tokens + 1e-9).all()
    matched = silence[silence.control == "matched_T"]
    assert matched["value"].isna().all()
    assert (matched["note"] == f"fewer than {SETTINGS.matched_rows} rows").all()
    null = silence[(silence.control == "null_ratio") & (silence.metric == "n_eff")]
    assert null["value"].notna().all()
    speech = full_run[(full_run.stimulus_id == "speech-b") & (full_run.control == "matched_T")]
    assert speech["value"].notna().any()


def test_budget_control_measures_short_decodes_at_the_common_shape(full_run) -> None:
    budget = full_run[full_run.control == "budget_T"]
    assert set(budget["component"]) == {
        c for c in set(full_run["component"]) if c.startswith("dec_")
    }
    assert (budget["n_rows"] == SETTINGS.matched_rows).all()
    silence = budget[(budget.stimulus_id == "silence") & (budget.metric == "n_eff")]
    # " you" is 1 token, yet under the fixed budget it has a defined K = 10 effective rank
    assert silence["value"].notna().all()
    assert (silence["value"] > 1.0).all()


def test_decodes_are_written_beside_the_table(full_run, tmp_path_factory) -> None:
    out = pipeline.default_output("tiny.en", "x")  # naming only
    assert out.name == "tiny.en__x.parquet"
    runs = list(tmp_path_factory.getbasetemp().glob("run*/t.decodes.parquet"))
    decodes = pd.read_parquet(runs[0])
    assert list(decodes.columns) == list(pipeline.DECODE_COLUMNS)
    text = decodes.set_index("stimulus_id")["text"]
    assert "fence" in text["speech-b"].lower()


def test_probe_features_are_stored_from_the_same_decode(
    full_run, manifest, tmp_path_factory, tiny_en
) -> None:
    """LapEigvals of every layer × head and the middle layer's mean residual, one row per clip,
    equal to what a fresh capture of the natural rows gives."""
    from wspec.audio import read_audio
    from wspec.interventions import run_with_cache
    from wspec.spectra import cross_attention_lap_eigvals

    path = next(tmp_path_factory.getbasetemp().glob("run*/t.features.parquet"))
    feats = pd.read_parquet(path).set_index("stimulus_id")
    assert sorted(feats.index) == sorted(manifest["id"])
    config = tiny_en.model.config
    lap = [c for c in feats.columns if c.startswith(pipeline.LAP_COMPONENT + "/")]
    hidden = [c for c in feats.columns if c.startswith(pipeline.HIDDEN_PREFIX)]
    n_heads = config.decoder_attention_heads
    assert len(lap) == config.decoder_layers * n_heads * pipeline.LAP_K
    middle = config.decoder_layers // 2
    assert len(hidden) == config.d_model and hidden[0] == f"hidden:L{middle}:0000"

    audio = read_audio(manifest.set_index("id").loc["speech-b", "path"])
    names = [f"decoder.{middle}.residual", "decoder.1.cross_attn_map"]
    decoded, got = run_with_cache(tiny_en, audio, names, max_new_tokens=SETTINGS.max_new_tokens)
    rows = len(decoded.tokens) + 1  # natural rows: prompt row + every chosen token
    # Same float32 forward pass, same reductions: 1e-5 absolute on O(1) activations.
    expect = got.matrices[f"decoder.{middle}.residual"][:rows].mean(0).numpy()
    np.testing.assert_allclose(feats.loc["speech-b", hidden].to_numpy(float), expect, atol=1e-5)
    eig = cross_attention_lap_eigvals(got.head_maps["decoder.1.cross_attn_map"][:, :rows], 4)
    cols = [
        f"{pipeline.LAP_COMPONENT}/h{h}_eig{j + 1}/L1" for h in range(n_heads) for j in range(4)
    ]
    np.testing.assert_allclose(feats.loc["speech-b", cols].to_numpy(float), eig.ravel(), atol=1e-5)


def test_a_result_without_the_probe_features_is_never_read(full_run, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = pa.Table.from_pandas(full_run.head(3), preserve_index=False)
    meta = {b"wspec_decode": b"{}", b"wspec_eigen": b"[]"}  # written before the features
    pq.write_table(old.replace_schema_metadata(meta), tmp_path / "old.parquet")
    with pytest.raises(WspecError, match="older wspec; delete it"):
        pipeline.read_result(tmp_path / "old.parquet")


def test_interrupted_run_resumes_and_recomputes_only_missing(
    manifest, full_run, tmp_path, monkeypatch, tiny_en
) -> None:
    started: list[str] = []

    def crash_after_two(loaded, stim, settings):
        if len(started) == 2:
            raise KeyboardInterrupt  # what Ctrl-C mid-run looks like
        started.append(stim["id"])
        return _ANALYSE(loaded, stim, settings)

    monkeypatch.setattr(pipeline, "_analyse_stimulus", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_en, manifest, tmp_path)
    done = sorted(p.name for p in (tmp_path / "cache").rglob("*.parquet"))
    assert len(done) == 2
    assert not list((tmp_path / "cache").rglob("*.part"))  # nothing partial on disk
    assert not (tmp_path / "t.parquet").exists()

    calls = _count_analyses(monkeypatch)
    resumed = _run(tiny_en, manifest, tmp_path)
    assert calls == list(manifest["id"][2:])  # only the missing ones
    # identical numbers to an uninterrupted run (CPU reruns are bit-for-bit)
    pd.testing.assert_frame_equal(resumed, full_run)
    calls.clear()
    _run(tiny_en, manifest, tmp_path)
    assert calls == []  # everything cached


KILLED_RUN = """
import sys
import pandas as pd
from wspec import pipeline
pipeline.run_model(
    "tiny.en", "test", out=sys.argv[2], progress=False, manifest=pd.read_parquet(sys.argv[1]),
    settings=pipeline.SpectralSettings(max_new_tokens=64), cache=sys.argv[3],
)
"""


def test_run_killed_with_sigkill_resumes(
    manifest, full_run, tmp_path, monkeypatch, tiny_en
) -> None:
    """A real `kill -9` (no cleanup code runs) as soon as the first stimulus is cached: the
    rerun computes only the rest and gives the uninterrupted run's numbers bit for bit."""
    assert pipeline.SpectralSettings(max_new_tokens=64) == SETTINGS  # the script's settings
    manifest.to_parquet(tmp_path / "manifest.parquet")
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_RUN,
            str(tmp_path / "manifest.parquet"),
            str(tmp_path / "killed.parquet"),
            str(cache),
        ],
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    deadline = time.monotonic() + 300
    while not list(cache.rglob("*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline, "the run cached nothing within 300 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list(cache.rglob("*.parquet"))
    assert 1 <= len(done) < len(manifest), "killed too late to test resuming"
    assert not (tmp_path / "killed.parquet").exists()

    calls = _count_analyses(monkeypatch)
    resumed = _run(tiny_en, manifest, tmp_path)  # same cache folder as the killed run
    assert len(calls) == len(manifest) - len(done)
    pd.testing.assert_frame_equal(resumed, full_run)


def test_cache_key_depends_on_what_changes_the_numbers() -> None:
    key = pipeline.stimulus_key("tiny.en", "ab" * 32, SETTINGS)
    assert key == pipeline.stimulus_key("tiny.en", "ab" * 32, SETTINGS)
    other = pipeline.SpectralSettings(matched_rows=16)
    assert key != pipeline.stimulus_key("tiny.en", "ab" * 32, other)
    assert key != pipeline.stimulus_key("base", "ab" * 32, SETTINGS)
    assert key != pipeline.stimulus_key("tiny.en", "cd" * 32, SETTINGS)
    assert key != pipeline.stimulus_key("tiny.en", "ab" * 32, SETTINGS, "cuda")


def test_empty_set_is_a_clear_error(manifest, tiny_en) -> None:
    with pytest.raises(WspecError, match="empty"):
        pipeline.run_model("tiny.en", "x", manifest=manifest.iloc[:0], loaded=tiny_en)


def test_cli_registers_run() -> None:
    args = build_parser().parse_args(["run", "--model", "tiny.en", "--set", "ci"])
    assert args.model == "tiny.en" and args.set == "ci" and callable(args.func)
