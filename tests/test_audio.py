"""wspec.audio: resampling, downmixing and one clear error per kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from wspec.audio import SAMPLE_RATE, read_audio, wav_bytes, write_audio
from wspec.errors import WspecError


def test_resamples_and_downmixes_stereo_44k(tmp_path):
    rate = 44_100
    t = np.arange(2 * rate) / rate
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    stereo = np.stack([left, left], axis=1)
    path = tmp_path / "tone.flac"
    sf.write(path, stereo, rate)
    audio = read_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == 2 * SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(audio))
    # 2 s at 16 kHz → 0.5 Hz bins: the 1 kHz tone must land in bin 2000.
    assert int(np.argmax(spectrum)) == 2000
    # Polyphase resampling keeps the amplitude to within 1 % away from the edges.
    assert np.abs(audio[1000:-1000]).max() == pytest.approx(0.5, rel=0.01)


def test_wav_roundtrip_is_exact_and_bytes_deterministic(tmp_path):
    x = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    data = write_audio(tmp_path / "x.wav", x)
    assert data == wav_bytes(x)  # no timestamped chunks: same samples, same bytes
    np.testing.assert_array_equal(read_audio(tmp_path / "x.wav"), x)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0), SAMPLE_RATE)
    with pytest.raises(WspecError, match="no samples"):
        read_audio(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(tmp_path, bad):
    x = np.zeros(1600, dtype=np.float32)
    x[100] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(WspecError, match="NaN or infinite"):
        read_audio(path)


def test_unreadable(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(WspecError, match="cannot read"):
        read_audio(path)


def test_missing(tmp_path):
    with pytest.raises(WspecError, match="does not exist"):
        read_audio(tmp_path / "nope.wav")


def test_longer_than_window_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.full(31 * SAMPLE_RATE, 0.01, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(WspecError, match="split it first"):
        read_audio(path)
    assert read_audio(path, allow_long=True).size == 31 * SAMPLE_RATE
