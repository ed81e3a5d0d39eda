"""A loaded Whisper plus everything needed to decode it the same way every time."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import (
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)

from wspec.models.architectures import scale_of


@dataclass
class LoadedWhisper:
    """Model in eval mode with its tokenizer, feature extractor and decoding prompt.

    `suppress_tokens` already contains openai-whisper's special-token suppressions and
    all timestamp tokens, because wspec always decodes with `<|notimestamps|>`.
    """

    spec: str
    name: str
    source: str
    model: WhisperForConditionalGeneration
    tokenizer: WhisperTokenizerFast
    feature_extractor: WhisperFeatureExtractor
    device: torch.device
    n_mels: int
    is_multilingual: bool
    sot_sequence: list[int]
    eot_id: int
    no_speech_id: int
    suppress_tokens: list[int]
    begin_suppress_tokens: list[int]
    alignment_heads: list[tuple[int, int]] = field(default_factory=list)
    weights_id: str = ""  # which weights stand behind `name` (see `identity`)

    @property
    def identity(self) -> str:
        """Name plus weights version: what every result cache is keyed on.

        A name alone is not enough: a hub id moves to new commits and a local folder can be
        overwritten with another checkpoint, and neither may reuse the old numbers.
        """
        return f"{self.name}@{self.weights_id}"

    @property
    def scale(self) -> str:
        """The paper's scale class of these weights, from their config (`architectures`)."""
        return scale_of(self.model.config)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
