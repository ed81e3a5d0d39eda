"""Whisper's log-mel front end in torch, so gradients flow from the loss back to the waveform.

transformers' WhisperFeatureExtractor is the reference, but its numpy path cannot be
differentiated. This is the same computation as openai-whisper's `log_mel_spectrogram`:
pad/trim to 30 s (480 000 samples), STFT (n_fft 400, hop 160, periodic Hann window,
centred with reflect padding), power spectrum without the last frame, mel filterbank
(taken from the model's own feature extractor, 80 or 128 bins), log10 clamped at 1e-10,
floor at (per-clip maximum − 8), then (x + 4) / 4. Output: (batch, n_mels, 3000).
tests/test_melspec.py checks it against the extractor.
"""

from __future__ import annotations

import numpy as np
import torch

N_FFT = 400
HOP = 160
N_SAMPLES = 480_000  # 30 s at 16 kHz
N_FRAMES = N_SAMPLES // HOP


def pad_or_trim(audio: torch.Tensor, length: int = N_SAMPLES) -> torch.Tensor:
    """Zero-pad or cut the last axis to `length` samples (Whisper's 30 s window)."""
    n = audio.shape[-1]
    if n > length:
        return audio[..., :length]
    return torch.nn.functional.pad(audio, (0, length - n))


def log_mel_torch(audio: torch.Tensor, mel_filters: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Differentiable log-mel of (samples,) or (batch, samples) 16 kHz audio.

    `mel_filters` is (n_fft/2 + 1, n_mels), as stored in `feature_extractor.mel_filters`.
    """
    x = pad_or_trim(audio if audio.dim() == 2 else audio.unsqueeze(0)).float()
    window = torch.hann_window(N_FFT, device=x.device)  # periodic, like the extractor's
    stft = torch.stft(x, N_FFT, HOP, window=window, center=True, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (batch, 201, 3000)
    filters = torch.as_tensor(np.asarray(mel_filters), dtype=torch.float32, device=x.device)
    mel = filters.T @ power  # (batch, n_mels, 3000)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel_for(loaded, audio: torch.Tensor) -> torch.Tensor:
    """log_mel_torch with the filters of a loaded model, on its device."""
    return log_mel_torch(audio.to(loaded.device), loaded.feature_extractor.mel_filters)
