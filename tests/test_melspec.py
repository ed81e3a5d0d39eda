"""The torch log-mel equals WhisperFeatureExtractor's, and is differentiable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from wspec.melspec import N_SAMPLES, log_mel_torch
from wspec.stimuli.nonspeech import colored_noise


def _numpy_reference(fe: WhisperFeatureExtractor, audio: np.ndarray) -> np.ndarray:
    """The extractor's numpy (float64 STFT) path on the padded/trimmed 30 s window."""
    padded = np.zeros(N_SAMPLES)
    padded[: min(audio.size, N_SAMPLES)] = audio[:N_SAMPLES]
    return fe._np_extract_fbank_features(padded[None], "cpu")[0]


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_feature_extractor_on_speech(sentence_audio, n_mels):
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    ours = log_mel_torch(torch.from_numpy(sentence_audio), fe.mel_filters)[0].numpy()
    call = fe(sentence_audio, sampling_rate=16_000, return_tensors="np").input_features[0]
    assert ours.shape == call.shape == (n_mels, 3000)
    # Same float32 torch ops as the extractor's default (torch) path: agreement to 1e-5.
    assert np.abs(ours - call).max() <= 1e-5
    # float32 STFT vs the float64 numpy path: log-mel values of order 1 agree to 1e-4.
    assert np.abs(ours - _numpy_reference(fe, sentence_audio)).max() <= 1e-4


@pytest.mark.parametrize("seconds", [1.0, 31.0])
def test_matches_on_short_and_overlong_noise(seconds):
    fe = WhisperFeatureExtractor(feature_size=80)
    audio = colored_noise(seconds, 0, "pink", -30.0).astype(np.float32)
    ours = log_mel_torch(torch.from_numpy(audio), fe.mel_filters)[0].numpy()
    # tolerance as above: float32 vs float64 STFT
    assert np.abs(ours - _numpy_reference(fe, audio)).max() <= 1e-4


def test_silence_is_the_constant_floor():
    fe = WhisperFeatureExtractor(feature_size=80)
    ours = log_mel_torch(torch.zeros(16_000), fe.mel_filters)
    # log10(1e-10) = -10 everywhere, then (x + 4) / 4 = -1.5 exactly.
    assert torch.all(ours == -1.5)


def test_model_filters_and_gradient(tiny_en, sentence_audio):
    fe = tiny_en.feature_extractor
    x = torch.from_numpy(sentence_audio).requires_grad_(True)
    ours = log_mel_torch(x, fe.mel_filters)
    call = fe(sentence_audio, sampling_rate=16_000, return_tensors="pt").input_features
    assert np.abs(ours.detach().numpy() - call.numpy()).max() <= 1e-5  # as above
    (grad,) = torch.autograd.grad(ours.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
