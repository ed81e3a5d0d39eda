"""Resampling units: which clips are independent, and which are the same model input.

Intervals must resample what was drawn independently, never the derived clip. A noisy,
stretched or attacked version of a sentence shares that sentence's words, voice and prosody
with its source and with every other version of it, so all of them form one unit: the
source sentence. Non-speech clips of one generator kind (white noise at three levels and
five lengths) share the generator, so the kind is the unit. Two clips that Whisper cannot
tell apart (digital silence of 1 s and of 31 s: both become the same zero-padded 30 s
log-mel) are one model input and must be counted once.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from wspec.audio import SAMPLE_RATE

WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's single window


def resampling_unit(family: str, stimulus_id: str, source_id: str, params: str | dict) -> str:
    """The independent unit a clip belongs to (a string shared by all clips of the unit).

    Derived clips (noise, stretch, talkers, attacks, ...) belong to their source; non-speech
    to its generator kind; repeated syllables to their syllable; a short clean phrase to the
    phrase (read by several voices); any other clip is its own unit.
    """
    p = json.loads(params) if isinstance(params, str) else dict(params)
    if source_id:
        return f"source:{source_id}"
    if family == "nonspeech" and "kind" in p:
        return f"nonspeech:{p['kind']}"
    if family == "repeated_syllables" and "syllable" in p:
        return f"syllable:{p['syllable']}"
    if family == "short_clean" and "phrase" in p:
        return f"phrase:{p['phrase']}"
    return f"source:{stimulus_id}"


def model_input_key(audio: np.ndarray) -> str:
    """Hash of what Whisper's front end sees: the first 30 s, zero-padded, as float32.

    Equal keys mean equal log-mel features and so identical decodes: count such clips once.
    """
    x = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    a = np.asarray(audio, dtype=np.float32)[:WINDOW_SAMPLES]
    x[: a.size] = a
    return hashlib.sha256(x.tobytes()).hexdigest()[:16]
