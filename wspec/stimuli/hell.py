"""Signal processing of the "Hell" condition: long utterances made as hard as the paper's.

- time stretch with sox's `tempo` effect: WSOLA (overlap-add of waveform segments aligned by
  cross-correlation) changes the speaking rate and keeps the pitch and formants, so the
  clip stays speech of the same talker, only faster or slower. Plain resampling would
  shift every formant with the rate and test a different voice, not a different tempo;
- overlapping talkers: the target plus interfering talkers, each scaled to the target's
  RMS, so every competing talker is as loud as the target (0 dB target-to-interferer
  ratio per talker) and the difficulty grows only with the number of talkers.

0 dB noise reuses `degrade.noisy`. As in the other mixtures, nothing is clipped or
renormalized (float WAV holds values beyond ±1), so the stated levels hold in the files.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from wspec.audio import SAMPLE_RATE, wav_bytes
from wspec.errors import WspecError


def time_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster (factor < 1: slower) with `sox tempo -s`, same pitch.

    `-s` tunes WSOLA's segment, search and overlap lengths for speech. sox holds samples
    as 32-bit integers, so a mixture louder than ±1 is scaled into range and back (tempo
    is linear); `-D` turns off dither, so the result depends on the input only.
    """
    x = np.asarray(x, dtype=np.float64)
    scale = max(1.0, float(np.abs(x).max()))
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        src.write_bytes(wav_bytes((x / scale).astype(np.float32)))
        cmd = ["sox", "-D", str(src), str(dst), "tempo", "-s", f"{factor:g}"]
        try:
            subprocess.run(cmd, capture_output=True, check=True)
        except FileNotFoundError as err:
            raise WspecError("sox is not installed; install it (apt-get install sox).") from err
        rate, y = wavfile.read(dst)
    if rate != SAMPLE_RATE:
        raise WspecError(f"sox wrote {rate} Hz instead of {SAMPLE_RATE} Hz; this is a bug.")
    return (np.asarray(y, dtype=np.float64) * scale).astype(np.float32)


def rms(x: np.ndarray) -> float:
    """Root mean square over the whole clip (float64)."""
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)))


def fit_interferer(target: np.ndarray, talker: np.ndarray) -> np.ndarray:
    """`talker` looped or trimmed to the target's length and scaled to the target's RMS.

    Looping (rather than zero-padding) keeps the interferer talking for the whole target,
    so the 0 dB ratio holds over the clip and not only where both speak.
    """
    fitted = np.resize(np.asarray(talker, dtype=np.float64), np.asarray(target).size)
    return fitted * (rms(target) / rms(fitted))


def mix_talkers(target: np.ndarray, talkers: list[np.ndarray]) -> np.ndarray:
    """The target plus every interfering talker at 0 dB target-to-interferer ratio each."""
    mix = np.asarray(target, dtype=np.float64).copy()
    for talker in talkers:
        mix += fit_interferer(target, talker)
    return mix.astype(np.float32)
