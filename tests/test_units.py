"""Resampling units and model-input keys on real audio and the real stimulus design."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wspec.decoding import log_mel
from wspec.stimuli import degrade, nonspeech
from wspec.stimuli.build import design
from wspec.units import WINDOW_SAMPLES, model_input_key, resampling_unit


def test_digital_silence_of_any_length_is_one_input() -> None:
    # Whisper zero-pads to 30 s and cuts at 30 s: 1 s, 10 s, 29 s, 30 s and 31 s of digital
    # zero all become the same all-zero window, so the same decode.
    keys = {model_input_key(nonspeech.generate("silence", s, seed=0)) for s in (1, 10, 29, 30, 31)}
    assert len(keys) == 1
    # Dither (±1 LSB) is not digital silence: a different input, a different key.
    assert model_input_key(nonspeech.generate("dither", 10.0, seed=0)) not in keys


def test_speech_followed_by_silence_is_its_source(sentence_audio: np.ndarray) -> None:
    assert sentence_audio.size < WINDOW_SAMPLES  # the premise: a sentence shorter than 30 s
    key = model_input_key(sentence_audio)
    # The trailing-silence family (28 s in the ci set): the same window as the clean clip.
    assert model_input_key(degrade.trailing_silence(sentence_audio, 28.0)) == key
    # Past 30 s the extra silence is cut off, so it is still the same input.
    assert model_input_key(degrade.trailing_silence(sentence_audio, 40.0)) == key


def test_noise_or_any_change_makes_another_input(sentence_audio: np.ndarray) -> None:
    key = model_input_key(sentence_audio)
    assert model_input_key(degrade.noisy(sentence_audio, 20.0, "white", seed=1)) != key
    assert model_input_key(degrade.reversed_speech(sentence_audio)) != key
    # One sample changed by one 16-bit step is already another input (the key hashes bytes).
    nudged = sentence_audio.copy()
    nudged[100] += 1.0 / 32768.0
    assert model_input_key(nudged) != key
    # Leading silence shifts the speech within the window: a different input.
    shifted = np.concatenate([np.zeros(1600, np.float32), sentence_audio])
    assert model_input_key(shifted) != key


def test_equal_keys_are_equal_model_inputs(tiny_en, sentence_audio: np.ndarray) -> None:
    # The premise of the key: Whisper's own front end (the model's feature extractor) gives
    # bit-identical log-mel features for clips with one key, and different ones otherwise.
    def features(audio: np.ndarray) -> torch.Tensor:
        return log_mel(tiny_en, audio)

    silence_1s, silence_31s = (nonspeech.generate("silence", s, seed=0) for s in (1.0, 31.0))
    assert torch.equal(features(silence_1s), features(silence_31s))
    padded = degrade.trailing_silence(sentence_audio, 28.0)
    assert torch.equal(features(sentence_audio), features(padded))
    noisy = degrade.noisy(sentence_audio, 20.0, "white", seed=1)
    assert not torch.equal(features(sentence_audio), features(noisy))


@pytest.mark.parametrize(
    ("family", "stimulus_id", "source_id", "params", "unit"),
    [
        ("clean", "clean-00-piper_joe", "", {"voice": "piper_joe"}, "source:clean-00-piper_joe"),
        (
            "noisy_snr",
            "noisy_snr-00-piper_joe-white-10db",
            "clean-00-piper_joe",
            {"snr_db": 10.0},
            "source:clean-00-piper_joe",
        ),
        ("nonspeech", "nonspeech-silence-10s", "", {"kind": "silence"}, "nonspeech:silence"),
        ("nonspeech", "nonspeech-noise-pink-m30-5s", "", {"kind": "noise"}, "nonspeech:noise"),
        (
            "repeated_syllables",
            "repeated_syllables-go-piper_joe-3hz",
            "",
            {"syllable": "go"},
            "syllable:go",
        ),
        ("short_clean", "short-yes-espeak_us", "", {"phrase": "Yes."}, "phrase:Yes."),
        # A family without a rule, and without a source: its own unit.
        ("user", "user-take1", "", {}, "source:user-take1"),
    ],
)
def test_unit_rules(family: str, stimulus_id: str, source_id: str, params: dict, unit: str) -> None:
    assert resampling_unit(family, stimulus_id, source_id, params) == unit
    # The manifest stores params as JSON text; both forms give the same unit.
    assert resampling_unit(family, stimulus_id, source_id, json.dumps(params)) == unit


def test_every_derived_clip_of_the_design_shares_its_source_unit() -> None:
    specs = design("default")
    unit = {s.id: resampling_unit(s.family, s.id, s.source_id, s.params) for s in specs}
    derived = [s for s in specs if s.source_id]
    assert {s.family for s in derived} >= {"noisy_snr", "trailing_silence", "reversed", "hell"}
    for s in derived:
        assert unit[s.id] == unit[s.source_id], s.id
    # All silences (five lengths) are one unit, and one unit per non-speech generator kind.
    silences = {unit[s.id] for s in specs if s.family == "nonspeech" and "silence" in s.id}
    assert silences == {"nonspeech:silence"}
    kinds = {s.params["kind"] for s in specs if s.family == "nonspeech"}
    assert {unit[s.id] for s in specs if s.family == "nonspeech"} == {
        f"nonspeech:{k}" for k in kinds
    }
    # The four voices reading one short phrase are one unit; clean sentences are one each.
    phrases = {unit[s.id] for s in specs if s.family == "short_clean"}
    assert len(phrases) == len({s.params["phrase"] for s in specs if s.family == "short_clean"})
    clean = [s for s in specs if s.family == "clean"]
    assert len({unit[s.id] for s in clean}) == len(clean)
