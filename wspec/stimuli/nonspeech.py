"""Non-speech signals: the inputs on which any transcript is a hallucination.

Levels are RMS levels in dBFS relative to a full-scale constant (20·log10 RMS), so a
full-scale sine sits at −3 dBFS. Generators are pure functions of (seconds, seed,
parameters), seeded with numpy's default_rng, so the same request gives the same samples.
The kinds follow the literature collected in the project notes: digital silence and
dither (the floor), hiss, mains hum, coloured noise at several levels, tones, chirps,
clicks and music-like chords (Barański et al. 2025; Calm-Whisper 2025).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, chirp, sosfilt

from wspec.audio import SAMPLE_RATE


def _set_rms(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2))
    return x * (10 ** (level_dbfs / 20) / rms) if rms > 0 else x


def _fade(x: np.ndarray, ms: float = 10.0) -> np.ndarray:
    """Raised-cosine fade in/out so tones start without a click."""
    n = min(int(SAMPLE_RATE * ms / 1000), x.size // 2)
    if n:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n))
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def silence(seconds: float, seed: int) -> np.ndarray:
    """Digital zero."""
    return np.zeros(int(round(seconds * SAMPLE_RATE)))


def dither(seconds: float, seed: int) -> np.ndarray:
    """Triangular (TPDF) dither of ±1 LSB at 16 bit: the floor of a 'silent' recording."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    return (rng.random(n) - rng.random(n)) / 32768.0


def colored_noise(seconds: float, seed: int, color: str, level_dbfs: float) -> np.ndarray:
    """White, pink (1/f power) or brown (1/f² power) Gaussian noise, shaped in the FFT domain."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[color]
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    gain = np.zeros_like(freqs)
    gain[1:] = freqs[1:] ** (-exponent / 2)  # amplitude ∝ f^(-exponent/2); no DC
    return _set_rms(np.fft.irfft(spec * gain, n), level_dbfs)


def hiss(seconds: float, seed: int, level_dbfs: float) -> np.ndarray:
    """Tape/preamp hiss: white noise high-passed at 2 kHz (4th-order Butterworth)."""
    rng = np.random.default_rng(seed)
    sos = butter(4, 2000, btype="highpass", fs=SAMPLE_RATE, output="sos")
    return _set_rms(
        sosfilt(sos, rng.standard_normal(int(round(seconds * SAMPLE_RATE)))), level_dbfs
    )


def hum(seconds: float, seed: int, mains_hz: float, level_dbfs: float) -> np.ndarray:
    """Mains hum: fundamental plus four decaying harmonics, random phases."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    amps = (1.0, 0.5, 0.3, 0.2, 0.1)
    x = sum(
        a * np.sin(2 * np.pi * mains_hz * (k + 1) * t + rng.uniform(0, 2 * np.pi))
        for k, a in enumerate(amps)
    )
    return _set_rms(x, level_dbfs)


def tone(seconds: float, seed: int, freq_hz: float, level_dbfs: float) -> np.ndarray:
    """A steady sine."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    return _fade(_set_rms(np.sin(2 * np.pi * freq_hz * t), level_dbfs))


def sweep(seconds: float, seed: int, f0_hz: float, f1_hz: float, level_dbfs: float) -> np.ndarray:
    """A logarithmic chirp from f0 to f1 over the whole duration."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    x = chirp(t, f0=f0_hz, t1=max(t[-1], 1e-3), f1=f1_hz, method="logarithmic")
    return _fade(_set_rms(x, level_dbfs))


def clicks(seconds: float, seed: int, rate_hz: float, peak: float) -> np.ndarray:
    """A train of 2 ms exponentially decaying noise bursts at `rate_hz`, jittered ±10 %."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    x = np.zeros(n)
    burst = rng.standard_normal(int(0.002 * SAMPLE_RATE)) * np.exp(
        -np.arange(int(0.002 * SAMPLE_RATE)) / 8
    )
    burst *= peak / np.abs(burst).max()
    period = SAMPLE_RATE / rate_hz
    pos = period / 2
    while pos + burst.size < n:
        start = int(pos)
        x[start : start + burst.size] += burst
        pos += period * rng.uniform(0.9, 1.1)
    return x


def chords(seconds: float, seed: int, level_dbfs: float) -> np.ndarray:
    """Music-like: a random progression of major/minor triads, one per second, harmonic tones
    with an attack-decay envelope (a plucked/keyboard timbre, no voice)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    x = np.zeros(n)
    chord_len = SAMPLE_RATE
    t = np.arange(chord_len) / SAMPLE_RATE
    env = np.minimum(t / 0.01, 1.0) * np.exp(-t / 0.6)
    for start in range(0, n, chord_len):
        root = 48 + int(rng.integers(0, 12))  # MIDI C3..B3
        third = 4 if rng.random() < 0.5 else 3
        note = np.zeros(chord_len)
        for midi in (root, root + third, root + 7, root + 12):
            f = 440.0 * 2 ** ((midi - 69) / 12)
            for h in range(1, 6):
                if f * h < SAMPLE_RATE / 2:
                    note += np.sin(2 * np.pi * f * h * t) / h**1.5
        seg = (note * env)[: n - start]
        x[start : start + seg.size] += seg
    return _fade(_set_rms(x, level_dbfs))


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "silence": silence,
    "dither": dither,
    "noise": colored_noise,
    "hiss": hiss,
    "hum": hum,
    "tone": tone,
    "chirp": sweep,
    "clicks": clicks,
    "chords": chords,
}


def generate(kind: str, seconds: float, seed: int, **params: float | str) -> np.ndarray:
    """Dispatch to a generator by kind; float32 output."""
    return GENERATORS[kind](seconds, seed, **params).astype(np.float32)
