"""The stress set: design, determinism, SNR arithmetic, levels, manifest and user folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from wspec.audio import read_audio
from wspec.errors import WspecError
from wspec.stimuli import COLUMNS, FAMILIES, build_stimuli, design, load_manifest
from wspec.stimuli.build import GROUP_SIZE, TEMPOS, Spec, add_user_folder, build_specs
from wspec.stimuli.degrade import mix_at_snr, snr_db
from wspec.stimuli.hell import fit_interferer, mix_talkers, rms, time_stretch
from wspec.stimuli.sentences import SENTENCES
from wspec.stimuli.tts import VOICES, espeak_talker


@pytest.fixture(scope="module")
def ci_twice(tmp_path_factory):
    """The 'ci' set generated from scratch in two separate folders."""
    a = build_stimuli("ci", cache=tmp_path_factory.mktemp("a"), progress=False)
    b = build_stimuli("ci", cache=tmp_path_factory.mktemp("b"), progress=False)
    return a, b


def test_build_is_deterministic(ci_twice):
    a, b = ci_twice
    assert list(a["id"]) == list(b["id"])
    assert list(a["sha256"]) == list(b["sha256"])  # TTS, noise and mixing: same bytes


def test_rebuild_skips_existing_and_keeps_manifest(ci_twice, tmp_path):
    a, _ = ci_twice
    root = __import__("pathlib").Path(a["path"].iloc[0]).parent.parent
    again = build_stimuli("ci", cache=root, progress=False)
    pd.testing.assert_frame_equal(a, again)


def test_rebuild_remakes_exactly_what_changed(tmp_path):
    """A stored WAV is reused only for the same recipe; a derived clip follows its source."""
    calls: list[object] = []

    def tone(hz: float):
        def make(_audio_of):
            calls.append(hz)
            return (0.1 * np.sin(2 * np.pi * hz * np.arange(16_000) / 16_000)).astype(np.float32)

        return make

    def louder(audio_of):
        calls.append("louder")
        return 2 * audio_of("src")

    def specs(hz: float, text: str = "a tone") -> list[Spec]:
        return [
            Spec("src", "clean", {"hz": hz}, text, tone(hz)),
            Spec("loud", "noisy", {"gain": 2}, text, louder, "src"),
        ]

    first = build_specs(specs(440), tmp_path, progress=False)
    assert calls == [440, "louder"]
    calls.clear()
    pd.testing.assert_frame_equal(build_specs(specs(440), tmp_path, progress=False), first)
    assert calls == []
    build_specs(specs(440, text="a new tone"), tmp_path, progress=False)
    assert calls == [440, "louder"]  # an edited sentence is re-synthesized, and so is its mix
    calls.clear()
    changed = build_specs(specs(660), tmp_path, progress=False)
    assert calls == [660, "louder"]
    assert (changed["sha256"] != first["sha256"]).all()


def test_manifest_schema_and_links(ci_twice):
    df, _ = ci_twice
    assert tuple(df.columns) == COLUMNS
    assert df["id"].is_unique
    clean = df[df.family == "clean"]
    assert (clean.transcript.str.len() > 0).all()
    assert clean.duration_s.between(2.0, 20.0).all()
    assert (df[df.family.isin(["nonspeech", "reversed"])].transcript == "").all()
    derived = df[df.source_id != ""]
    assert set(derived.source_id) <= set(clean.id) | set(df[df.family == "long_clean"].id)
    for row in df.itertuples():
        json.loads(row.params)
    audio = read_audio(clean.path.iloc[0])
    assert audio.size / 16_000 == pytest.approx(clean.duration_s.iloc[0])


def test_default_design_covers_the_literature():
    specs = design("default")
    fam = pd.Series([s.family for s in specs])
    assert len({s.id for s in specs}) == len(specs)
    clean = [s for s in specs if s.family == "clean"]
    assert len(clean) >= 60 and len({s.params["voice"] for s in clean}) >= 3
    ns = [s.params for s in specs if s.family == "nonspeech"]
    assert {p["seconds"] for p in ns} >= {1.0, 5.0, 10.0, 29.0, 31.0}
    assert {p["kind"] for p in ns} >= {"silence", "dither", "hiss", "hum", "noise", "tone"}
    assert {p["kind"] for p in ns} >= {"chirp", "clicks", "chords"}
    assert {p["level_dbfs"] for p in ns if p["kind"] == "hiss"} == {-60.0, -45.0}
    assert {p["mains_hz"] for p in ns if p["kind"] == "hum"} == {50.0, 60.0}
    assert {p["color"] for p in ns if p["kind"] == "noise"} == {"white", "pink", "brown"}
    snrs = {s.params["snr_db"] for s in specs if s.family == "noisy_snr"}
    assert snrs == {20.0, 10.0, 5.0, 0.0, -5.0}
    for family in ("trailing_silence", "repeated_syllables", "reversed"):
        assert (fam == family).sum() >= 10


@pytest.mark.parametrize("target", [20.0, 10.0, 5.0, 0.0, -5.0])
def test_mix_at_snr_exact(sentence_audio, target):
    noise = np.random.default_rng(1).standard_normal(sentence_audio.size)
    # float32 storage of the mix perturbs the SNR by far less than the 0.1 dB required.
    assert abs(snr_db(sentence_audio, mix_at_snr(sentence_audio, noise, target)) - target) < 0.1


def test_stored_noisy_files_have_requested_snr(ci_twice):
    df, _ = ci_twice
    clean = {r.id: read_audio(r.path) for r in df[df.family == "clean"].itertuples()}
    noisy = df[df.family == "noisy_snr"]
    assert len(noisy) >= 2
    for row in noisy.itertuples():
        want = json.loads(row.params)["snr_db"]
        got = snr_db(clean[row.source_id], read_audio(row.path))
        assert abs(got - want) < 0.1, (row.id, got, want)  # requirement: within 0.1 dB


def test_nonspeech_levels_and_silence(ci_twice):
    df, _ = ci_twice
    by_id = df.set_index("id")
    white = read_audio(by_id.loc["nonspeech-noise-white-m30-10s", "path"])
    assert 20 * np.log10(np.sqrt(np.mean(white.astype(np.float64) ** 2))) == pytest.approx(
        -30.0, abs=0.01
    )
    silence = read_audio(by_id.loc["nonspeech-silence-31s", "path"], allow_long=True)
    assert silence.size == 31 * 16_000 and not silence.any()


def test_trailing_silence_and_reversal(ci_twice):
    df, _ = ci_twice
    by_id = df.set_index("id")
    src = read_audio(by_id.loc["clean-00-piper_joe", "path"])
    trail = read_audio(by_id.loc["trailing_silence-00-piper_joe-28s", "path"])
    assert trail.size == 28 * 16_000
    np.testing.assert_array_equal(trail[: src.size], src)
    assert not trail[src.size :].any()
    rev = read_audio(by_id.loc["reversed-00-piper_joe-rev", "path"])
    np.testing.assert_array_equal(rev, src[::-1])


def test_unknown_set_and_missing_manifest(monkeypatch, tmp_path):
    with pytest.raises(WspecError, match="unknown stimulus set"):
        build_stimuli("nope", cache=tmp_path)
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path))
    with pytest.raises(WspecError, match="wspec stimuli build"):
        load_manifest("ci")


def test_user_folder(monkeypatch, tmp_path, sentence_audio, sentence_text):
    monkeypatch.setenv("WSPEC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "mine"
    folder.mkdir()
    sf.write(folder / "a.wav", np.stack([sentence_audio] * 2, axis=1), 16_000)
    (folder / "a.txt").write_text(sentence_text + "\n")
    df = add_user_folder(folder, set_name="mine", progress=False)
    assert tuple(df.columns) == COLUMNS
    assert df.loc[0, "family"] == "user" and df.loc[0, "transcript"] == sentence_text
    np.testing.assert_allclose(read_audio(df.loc[0, "path"]), sentence_audio, atol=1e-4)
    pd.testing.assert_frame_equal(load_manifest("mine"), df)
    sf.write(folder / "a.wav", 0.5 * sentence_audio, 16_000)  # the user replaces a recording
    again = add_user_folder(folder, set_name="mine", progress=False)
    np.testing.assert_allclose(read_audio(again.loc[0, "path"]), 0.5 * sentence_audio, atol=1e-4)
    (folder / "b.wav").write_bytes((folder / "a.wav").read_bytes())
    with pytest.raises(WspecError, match="no transcript"):
        add_user_folder(folder, set_name="mine2", progress=False)


# --- long and short utterances, and the "Hell" condition ------------------------------


def _params(df: pd.DataFrame) -> pd.Series:
    return df["params"].map(json.loads)


def _hell_rows(df: pd.DataFrame, condition: str | None = None) -> list[tuple]:
    """(manifest row, params) of the Hell clips, of one condition if given."""
    hell = df[df.family == "hell"]
    pairs = zip(hell.itertuples(), _params(hell), strict=True)
    return [(r, p) for r, p in pairs if condition in (None, p["condition"])]


def test_ci_set_has_long_short_and_hell(ci_twice):
    df, _ = ci_twice
    counts = df.family.value_counts()
    assert (counts["long_clean"], counts["short_clean"], counts["hell"]) == (2, 4, 6)
    assert set(df.family) <= set(FAMILIES)
    long = df[df.family == "long_clean"].set_index("id")
    for sid, p in zip(long.index, _params(long), strict=True):
        assert long.loc[sid, "transcript"] == " ".join(SENTENCES[i] for i in p["sentences"])
    short = df[df.family == "short_clean"]
    assert set(short.transcript) == {"Thank you."}
    assert {p["voice"] for p in _params(short)} == set(VOICES)
    hell = df[df.family == "hell"]
    assert set(hell.source_id) == set(long.index)
    assert (hell.transcript == long.loc[hell.source_id, "transcript"].to_numpy()).all()
    levels = {(p["condition"], p["level"]) for _, p in _hell_rows(df)}
    assert levels == {("tempo", "3.5"), ("talkers", "4"), ("noise", "0db-white"),
                      ("noise", "0db-pink")}  # fmt: skip
    # Whisper sees 30 s: no Hell clip may be longer (read_audio refuses longer files).
    assert (hell.duration_s <= 30.0).all()
    for path in hell.path:
        read_audio(path)


def test_default_design_of_long_short_and_hell():
    specs = design("default")
    by_family = pd.Series([s.family for s in specs]).value_counts()
    assert (by_family["long_clean"], by_family["short_clean"]) == (16, 12)
    long = {s.id: s for s in specs if s.family == "long_clean"}
    assert pd.Series([s.params["voice"] for s in long.values()]).value_counts().eq(4).all()
    hell = [s for s in specs if s.family == "hell"]
    per_source = pd.Series([s.source_id for s in hell]).value_counts()
    assert set(per_source.index) == set(long) and (per_source == 10).all()
    assert {(s.params["condition"], s.params["level"].split("-")[0]) for s in hell} == {
        ("tempo", "1.5"), ("tempo", "2.5"), ("tempo", "3.5"), ("tempo", "0.8"),
        ("talkers", "2"), ("talkers", "4"), ("talkers", "6"), ("noise", "0db"),
        ("tempo+noise", "2.5+0db"), ("talkers+tempo", "2+1.5"),
    }  # fmt: skip
    for s in hell:
        if "talkers" in s.params:
            voices, texts = s.params["interferers"], s.params["interferer_sentences"]
            assert len(voices) == len(set(voices)) == s.params["talkers"] - 1
            assert not set(voices) & set(VOICES)
            heard = {i for group in texts for i in group}
            assert len(heard) == GROUP_SIZE * len(texts)  # each interferer: its own text
            assert not heard & set(long[s.source_id].params["sentences"])


@pytest.mark.parametrize("factor", TEMPOS)
def test_time_stretch_scales_duration(sentence_audio, factor):
    out = time_stretch(sentence_audio, factor)
    # sox 14.4 flushes to round(N / F) samples; 2 % leaves room for WSOLA's segment
    # rounding (segments of ~82 ms with -s), which other sox builds may not flush away.
    assert out.size == pytest.approx(sentence_audio.size / factor, rel=0.02)
    assert time_stretch(sentence_audio, factor).tobytes() == out.tobytes()


def test_stored_tempo_clips_have_the_stated_duration(ci_twice):
    df, _ = ci_twice
    duration = df.set_index("id").duration_s
    tempo = [(row, p["tempo"]) for row, p in _hell_rows(df) if "tempo" in p]
    assert tempo
    for row, factor in tempo:
        assert row.duration_s == pytest.approx(duration[row.source_id] / factor, rel=0.02)


def test_talker_mixture_has_equal_rms_talkers(sentence_audio):
    talkers = [
        espeak_talker(SENTENCES[50], "en-us+m3"),  # shorter than the target: looped
        espeak_talker(" ".join(SENTENCES[60:66]), "en-gb+f2"),  # longer: trimmed
    ]
    fitted = [fit_interferer(sentence_audio, t) for t in talkers]
    for f in fitted:
        assert f.size == sentence_audio.size
        # Computed in float64: equal to rounding, far inside the 0.01 dB asked for.
        assert 20 * np.log10(rms(f) / rms(sentence_audio)) == pytest.approx(0.0, abs=0.01)
    mix = mix_talkers(sentence_audio, talkers).astype(np.float64)
    # float32 storage of the sum: the residual stays below 1e-6 of full scale.
    np.testing.assert_allclose(mix - sum(fitted), sentence_audio, atol=1e-6)


def test_stored_talker_clip_is_the_equal_rms_mixture(ci_twice):
    df, _ = ci_twice
    rows = _hell_rows(df, "talkers")
    assert rows
    for row, p in rows:
        source = read_audio(df.set_index("id").loc[row.source_id, "path"])
        talkers = [
            espeak_talker(" ".join(SENTENCES[i] for i in sentences), voice)
            for voice, sentences in zip(p["interferers"], p["interferer_sentences"], strict=True)
        ]
        assert len(talkers) == p["talkers"] - 1
        fitted = [fit_interferer(source, t) for t in talkers]
        assert [rms(f) for f in fitted] == pytest.approx([rms(source)] * len(fitted), rel=1e-9)
        residual = read_audio(row.path).astype(np.float64) - sum(fitted)
        np.testing.assert_allclose(residual, source, atol=1e-6)


def test_stored_hell_noise_is_0db(ci_twice):
    df, _ = ci_twice
    rows = _hell_rows(df, "noise")
    assert {p["color"] for _, p in rows} == {"white", "pink"}
    for row, p in rows:
        source = read_audio(df.set_index("id").loc[row.source_id, "path"])
        got = snr_db(source, read_audio(row.path))
        assert abs(got - p["snr_db"]) < 0.1 and p["snr_db"] == 0.0, (row.id, got)
