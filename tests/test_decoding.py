"""Greedy decoding: openai-whisper's signals and the fixed decode budget."""

from __future__ import annotations

import numpy as np

from wspec.decoding import compression_ratio, greedy_decode


def test_silence_hallucination_and_budget(tiny_en):
    silence = np.zeros(16_000 * 5, dtype=np.float32)
    natural = greedy_decode(tiny_en, silence)
    # tiny.en answers digital silence with a very short output and a high no-speech prob.
    assert len(natural.tokens) < 12
    assert natural.no_speech_prob > 0.5
    forced = greedy_decode(tiny_en, silence, min_new_tokens=12, max_new_tokens=12)
    assert len(forced.tokens) == 12
    # The budget only removes the option to stop: the first tokens are the same choices.
    assert forced.tokens[: len(natural.tokens)] == natural.tokens
    assert forced.no_speech_prob == natural.no_speech_prob


def test_avg_logprob_counts_eot(tiny_en, sentence_audio):
    d = greedy_decode(tiny_en, sentence_audio)
    assert len(d.token_logprobs) == len(d.tokens) + 1  # EOT reached and counted
    assert d.avg_logprob == sum(d.token_logprobs) / (len(d.tokens) + 1)


def test_compression_ratio_flags_loops():
    assert compression_ratio("thank you " * 30) > 2.4  # openai-whisper's loop threshold
    assert compression_ratio("The quick brown fox jumps over the lazy dog.") < 1.5
    assert compression_ratio("") == 0.0
