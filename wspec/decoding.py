"""Fixed greedy decoding, written out step by step.

A hand-written loop (rather than `generate`) keeps the decoding identical across
transformers versions and makes the steps explicit for hooks: step 0 feeds the whole
prompt, every later step feeds one token against the KV cache. Settings follow
openai-whisper's `transcribe` at temperature 0 with no fallback: language forced to
English, no timestamps, special tokens suppressed, blank/EOT suppressed at step 0.
"""

from __future__ import annotations

import inspect
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from wspec.audio import SAMPLE_RATE
from wspec.models.loaded import LoadedWhisper

DEFAULT_MAX_NEW_TOKENS = 224  # openai-whisper's sample_len: half the 448-token context


@dataclass
class Decoded:
    tokens: list[int]  # generated, without prompt and without EOT (the natural decode)
    text: str
    token_logprobs: list[float]  # one per generated token, plus EOT's if it was reached
    avg_logprob: float  # openai-whisper: sum(logprobs incl. EOT) / (len(tokens) + 1)
    no_speech_prob: float  # P(no-speech token) at the start-of-transcript position, step 0
    compression_ratio: float  # len(text bytes) / len(zlib(text bytes)), as openai-whisper
    n_steps: int  # forward passes of the decoder
    budget_tokens: list[int]  # `tokens`, extended to min_new_tokens if the model stopped early


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def log_mel(loaded: LoadedWhisper, audio: np.ndarray) -> torch.Tensor:
    """(1, n_mels, 3000) log-mel features of 16 kHz mono audio, padded/trimmed to 30 s."""
    feats = loaded.feature_extractor(
        np.asarray(audio, dtype=np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    return feats.to(loaded.device)


@torch.no_grad()
def encode(loaded: LoadedWhisper, features: torch.Tensor) -> torch.Tensor:
    """Encoder output (1, 1500, d_model)."""
    return loaded.model.model.encoder(features.to(loaded.device)).last_hidden_state


def _suppress_mask(loaded: LoadedWhisper, ids: list[int]) -> torch.Tensor:
    mask = torch.zeros(loaded.model.config.vocab_size, dtype=torch.bool, device=loaded.device)
    mask[ids] = True
    return mask


def _cache_argument(model: torch.nn.Module) -> str:
    """The KV-cache keyword of this transformers release: `cache` since 5.x (where the old
    `past_key_values` prints a deprecation warning on every step, into the book's pages),
    `past_key_values` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def greedy_decode(
    loaded: LoadedWhisper,
    audio: np.ndarray | None = None,
    *,
    features: torch.Tensor | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    min_new_tokens: int = 0,
) -> Decoded:
    """Greedy transcript of one clip (give `audio` or precomputed `features`).

    `min_new_tokens` > 0 sets a fixed decode budget for the sequence-length control: when
    the model chooses end-of-text before that many tokens exist, the stop is recorded and
    decoding goes on with its best non-EOT choice until the budget is met, so a 1-token
    hallucination such as " you" still yields a matrix of the common size. Everything
    reported (tokens, text, log-probs) is the natural decode; the continuation is only in
    `budget_tokens` and in what hooks saw. Activations of the natural steps are unchanged
    because the decoder is causal.
    """
    if features is None:
        if audio is None:
            raise ValueError("greedy_decode needs audio or features")
        features = log_mel(loaded, audio)
    model = loaded.model
    enc = encode(loaded, features)
    suppress = _suppress_mask(loaded, loaded.suppress_tokens)
    suppress_begin = suppress | _suppress_mask(loaded, loaded.begin_suppress_tokens)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    cache_name = _cache_argument(model)
    step_input = torch.tensor([loaded.sot_sequence], device=loaded.device)
    tokens: list[int] = []
    logprobs: list[float] = []
    natural_end: int | None = None  # len(tokens) when the model first chose EOT
    no_speech_prob = float("nan")
    n_steps = 0
    for step in range(max_new_tokens):
        out = model(
            encoder_outputs=(enc,),
            decoder_input_ids=step_input,
            use_cache=True,
            **{cache_name: cache},
        )
        n_steps += 1
        cache = getattr(out, cache_name)
        logits = out.logits[0, -1].float()
        if step == 0:
            sot_logits = out.logits[0, 0].float()
            no_speech_prob = float(sot_logits.softmax(-1)[loaded.no_speech_id])
        logits = logits.masked_fill(suppress_begin if step == 0 else suppress, float("-inf"))
        step_logprobs = torch.log_softmax(logits, dim=-1)
        nxt = int(torch.argmax(logits))
        if nxt == loaded.eot_id:
            if natural_end is None:
                natural_end = len(tokens)
                logprobs.append(float(step_logprobs[nxt]))
            if len(tokens) >= min_new_tokens:
                break
            logits[loaded.eot_id] = float("-inf")
            nxt = int(torch.argmax(logits))
        if natural_end is None:
            logprobs.append(float(step_logprobs[nxt]))
        tokens.append(nxt)
        if natural_end is not None and len(tokens) >= min_new_tokens:
            break
        step_input = torch.tensor([[nxt]], device=loaded.device)
    budget_tokens = tokens
    tokens = tokens[:natural_end] if natural_end is not None else tokens
    text = loaded.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return Decoded(
        tokens=tokens,
        text=text,
        token_logprobs=logprobs,
        avg_logprob=sum(logprobs) / (len(tokens) + 1),
        no_speech_prob=no_speech_prob,
        compression_ratio=compression_ratio(text),
        n_steps=n_steps,
        budget_tokens=budget_tokens,
    )


@torch.no_grad()
def teacher_forced_logits(
    loaded: LoadedWhisper, features: torch.Tensor, tokens: list[int]
) -> torch.Tensor:
    """Raw logits (len(tokens)+1, vocab): the predictions after the prompt and after each token."""
    ids = torch.tensor([loaded.sot_sequence + list(tokens)], device=loaded.device)
    enc = encode(loaded, features)
    logits = loaded.model(encoder_outputs=(enc,), decoder_input_ids=ids).logits[0].float()
    return logits[len(loaded.sot_sequence) - 1 :]
