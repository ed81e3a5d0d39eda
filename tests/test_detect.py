"""`wspec detect`: train the probe on tiny.en's ci run, then score audio it never saw; every
way it can be missing or wrong is one clear error that says how to train it."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
import soundfile

from wspec import detector, probe
from wspec.audio import SAMPLE_RATE, write_audio
from wspec.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private probe location: the shared cache's per-stimulus results stay reusable."""
    monkeypatch.setattr(detector, "probe_path", lambda m, s: tmp_path / f"{m}__{s}.probe.joblib")
    return tmp_path


@pytest.mark.slow
def test_train_on_ci_then_detect_a_clip_never_seen(cache, tmp_path, sentence_audio, capsys):
    assert main(["detect", "--train", "--model", "tiny.en", "--set", "ci"]) == 0
    out = capsys.readouterr().out
    assert "cross-validated AUROC" in out
    bundle = joblib.load(cache / "tiny.en__ci.probe.joblib")
    assert bundle["model_identity"].startswith("tiny.en@") and bundle["training_set"] == "ci"
    assert {"scikit-learn", "numpy", "wspec"} <= set(bundle["versions"])
    cv = detector.cv_auroc(bundle)
    assert 0 < cv["auroc_low"] <= cv["auroc"] <= cv["auroc_high"] <= 1

    speech = tmp_path / "fox.wav"  # a sentence the ci set does not contain
    write_audio(speech, sentence_audio)
    noise = tmp_path / "noise.wav"  # white noise: Whisper's classic hallucination trigger
    write_audio(noise, 0.1 * np.random.default_rng(0).standard_normal(4 * SAMPLE_RATE))
    table_csv = tmp_path / "detect.csv"
    assert main(["detect", "--model", "tiny.en", "--set", "ci", "--out", str(table_csv),
                 str(speech), str(noise)]) == 0  # fmt: skip
    table = pd.read_csv(table_csv)
    assert list(table["file"]) == [str(speech), str(noise)]
    assert "quick brown fox" in table.loc[0, "text"].lower()
    assert set(probe.WHISPER_FEATURES) <= set(table.columns)
    assert len(table.columns) == 3 + len(bundle["columns"])  # file, p, text + every feature
    assert table["duration_s"].tolist() == pytest.approx(
        [sentence_audio.size / SAMPLE_RATE, 4.0], abs=1e-3
    )
    p = table["p_hallucination"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert p[0] < 0.5 < p[1]  # clean speech transcribed right is not flagged; noise is


def test_missing_or_foreign_probe_says_how_to_train_it(cache, tmp_path, sentence_audio, capsys):
    clip = tmp_path / "fox.wav"
    write_audio(clip, sentence_audio[: 2 * SAMPLE_RATE])
    assert main(["detect", "--model", "tiny.en", "--set", "ci", str(clip)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wspec: error: no hallucination probe for tiny.en")
    assert "wspec detect --train --model tiny.en --set ci" in err
    joblib.dump({"schema": detector.PROBE_SCHEMA, "model_identity": "base@xyz"},
                cache / "tiny.en__ci.probe.joblib")  # fmt: skip
    assert main(["detect", "--model", "tiny.en", "--set", "ci", str(clip)]) == 1
    err = capsys.readouterr().err
    assert "trained for base@xyz, not tiny.en@" in err and "--train --model tiny.en" in err
    assert "Traceback" not in err


def test_bad_audio_gets_the_transcribe_error(cache, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), SAMPLE_RATE)
    assert main(["detect", "--model", "tiny.en", str(empty)]) == 1
    detect_err = capsys.readouterr().err
    assert main(["transcribe", "--model", "tiny.en", str(empty)]) == 1
    assert detect_err == capsys.readouterr().err
    assert main(["detect", "--model", "tiny.en"]) == 1  # neither files nor --train
    assert "one of the two" in capsys.readouterr().err
