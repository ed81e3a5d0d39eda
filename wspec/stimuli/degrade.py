"""Degraded speech: clean utterances made harder in ways known to provoke hallucination.

- speech in noise at a requested SNR (SNR = 10·log10(Σ s² / Σ n²) over the whole clip);
- a long stretch of digital silence after the speech (the decoder must stop on its own);
- time reversal (speech-like spectra and rhythm, no words);
- repeated syllables at 3–9 Hz (invites the decoder to loop).
"""

from __future__ import annotations

import numpy as np

from wspec.audio import SAMPLE_RATE
from wspec.stimuli.nonspeech import colored_noise


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Measured SNR of `noisy` against its clean part: the residual counts as noise."""
    s = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noisy, dtype=np.float64) - s
    return float(10 * np.log10(np.sum(s**2) / np.sum(n**2)))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """Add `noise` scaled so that the SNR over the whole clip is exactly `snr` dB.

    Computed in float64; the float32 result keeps the SNR to ~1e-6 dB. No clipping or
    renormalization is applied (float WAV holds values beyond ±1), so the clean part of
    the mixture is bit-identical to the clean stimulus and the SNR is measurable.
    """
    s = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)[: s.size]
    gain = np.sqrt(np.sum(s**2) / (np.sum(n**2) * 10 ** (snr / 10)))
    return (s + gain * n).astype(np.float32)


def noisy(clean: np.ndarray, snr: float, color: str, seed: int) -> np.ndarray:
    """Clean speech in white/pink/brown Gaussian noise at `snr` dB."""
    noise = colored_noise(clean.size / SAMPLE_RATE, seed, color, level_dbfs=-20.0)
    return mix_at_snr(clean, noise, snr)


def trailing_silence(clean: np.ndarray, total_s: float) -> np.ndarray:
    """Append digital silence so the clip lasts `total_s` seconds."""
    pad = max(int(round(total_s * SAMPLE_RATE)) - clean.size, 0)
    return np.concatenate([clean, np.zeros(pad, dtype=np.float32)]).astype(np.float32)


def reversed_speech(clean: np.ndarray) -> np.ndarray:
    """Time reversal: the same long-term spectrum and loudness, no intelligible words."""
    return np.ascontiguousarray(clean[::-1], dtype=np.float32)


def _active_core(x: np.ndarray, frame: int = 160) -> np.ndarray:
    """The stretch between the first and last 10 ms frame within 30 dB of the loudest one."""
    n = x.size // frame
    energy = (x[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-20
    active = np.flatnonzero(10 * np.log10(energy / energy.max()) > -30)
    return x[active[0] * frame : (active[-1] + 1) * frame]


def repeat_syllable(syllable: np.ndarray, rate_hz: float, count: int) -> np.ndarray:
    """Tile one spoken syllable `count` times at `rate_hz` (truncated to the period, with
    5 ms raised-cosine fades), framed by 0.25 s of silence."""
    core = _active_core(np.asarray(syllable, dtype=np.float64))
    period = int(round(SAMPLE_RATE / rate_hz))
    core = core[:period].copy()
    ramp_n = min(int(0.005 * SAMPLE_RATE), core.size // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp_n))
    core[:ramp_n] *= ramp
    core[-ramp_n:] *= ramp[::-1]
    pad = int(0.25 * SAMPLE_RATE)
    out = np.zeros(2 * pad + period * count)
    for k in range(count):
        out[pad + k * period : pad + k * period + core.size] += core
    return out.astype(np.float32)
