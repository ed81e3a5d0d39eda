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
    # The budget extends what hooks see; what is reported stays the natural decode.
    assert len(forced.budget_tokens) == 12
    assert forced.budget_tokens[: len(natural.tokens)] == natural.tokens
    assert (forced.tokens, forced.text, forced.avg_logprob) == (
        natural.tokens,
        natural.text,
        natural.avg_logprob,
    )
    assert forced.n_steps == 12


def test_budget_does_not_touch_long_decodes(tiny_en, sentence_audio):
    natural = greedy_decode(tiny_en, sentence_audio)
    assert len(natural.tokens) > 12
    forced = greedy_decode(tiny_en, sentence_audio, min_new_tokens=12)
    assert forced.tokens == forced.budget_tokens == natural.tokens
    assert forced.avg_logprob == natural.avg_logprob


def test_avg_logprob_counts_eot(tiny_en, sentence_audio):
    d = greedy_decode(tiny_en, sentence_audio)
    assert len(d.token_logprobs) == len(d.tokens) + 1  # EOT reached and counted
    assert d.avg_logprob == sum(d.token_logprobs) / (len(d.tokens) + 1)


def test_compression_ratio_flags_loops():
    assert compression_ratio("thank you " * 30) > 2.4  # openai-whisper's loop threshold
    assert compression_ratio("The quick brown fox jumps over the lazy dog.") < 1.5
    assert compression_ratio("") == 0.0
