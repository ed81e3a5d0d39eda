"""Hallucination labels from one fixed greedy decoding per model and stimulus.

Text is normalized with openai-whisper's EnglishTextNormalizer (the PyPI port
`whisper-normalizer`, a verbatim copy of openai-whisper's normalizers): lowercase,
punctuation and filler words removed, British→American spelling, numbers and
contractions standardized. WER/CER come from jiwer on normalized text.

Flags (see the project notes, "Labelling"):
- non-speech (empty reference): any non-empty normalized output is a hallucination;
- speech: `insertion_flag` — the alignment has ≥ 3 consecutive inserted words, or inserted
  words are ≥ 30 % of the hypothesis; this is the speech hallucination label;
- `looping_flag` (reported separately): an n-gram (n ≤ 10) repeated ≥ 3 times in a row in
  the lowercased hypothesis words, or openai-whisper's compression ratio > 2.4. On the
  repeated-syllable family the reference itself repeats, so the insertion flag carries the
  label there;
- no-speech gate (openai-whisper's transcribe): no_speech_prob > 0.6 and avg_logprob < −1
  → the output is discarded as silence; `hallucinated_gated` applies the same rules after it.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import jiwer
import pandas as pd

from wspec import cache as wcache
from wspec.audio import read_audio
from wspec.decoding import compression_ratio, greedy_decode
from wspec.errors import WspecError
from wspec.paths import safe_name
from wspec.progress import track

INSERT_RUN = 3
INSERT_SHARE = 0.30
LOOP_REPEATS = 3
LOOP_MAX_N = 10
COMPRESSION_LIMIT = 2.4
NO_SPEECH_LIMIT = 0.6
LOGPROB_LIMIT = -1.0
LABEL_COLUMNS: tuple[str, ...] = (
    "model",
    "stimulus_id",
    "family",
    "source_id",
    "text",
    "normalized_text",
    "wer",
    "cer",
    "hallucinated",
    "hallucinated_gated",
    "insertion_flag",
    "looping_flag",
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
    "n_tokens",
)


@functools.lru_cache(maxsize=1)
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """openai-whisper English normalization, whitespace collapsed."""
    return " ".join(_normalizer()(text).split())


def error_rates(reference: str, hypothesis: str) -> tuple[float, float]:
    """(WER, CER) of normalized strings; NaN when the reference is empty."""
    if not reference:
        return math.nan, math.nan
    wer = jiwer.wer(reference, hypothesis) if hypothesis else 1.0
    cer = jiwer.cer(reference, hypothesis) if hypothesis else 1.0
    return float(wer), float(cer)


def insertions(reference: str, hypothesis: str) -> tuple[int, int]:
    """(longest run of consecutively inserted words, total inserted words) in jiwer's alignment."""
    if not hypothesis:
        return 0, 0
    if not reference:
        n = len(hypothesis.split())
        return n, n
    out = jiwer.process_words(reference, hypothesis)
    runs = [c.hyp_end_idx - c.hyp_start_idx for c in out.alignments[0] if c.type == "insert"]
    return max(runs, default=0), sum(runs)


def insertion_flag(reference: str, hypothesis: str) -> bool:
    """≥ 3 consecutive inserted words, or inserted words ≥ 30 % of the hypothesis."""
    n_hyp = len(hypothesis.split())
    run, total = insertions(reference, hypothesis)
    return run >= INSERT_RUN or (n_hyp > 0 and total / n_hyp >= INSERT_SHARE)


def has_repeated_ngram(words: list[str], repeats: int = LOOP_REPEATS) -> bool:
    """True if some n-gram (n ≤ 10) occurs `repeats` times back to back."""
    for n in range(1, LOOP_MAX_N + 1):
        for i in range(len(words) - repeats * n + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    return False


def looping_flag(text: str) -> bool:
    """Repetition loop: a repeated n-gram run in the lowercased words, or compression > 2.4.

    Raw words, not normalized ones: the normalizer deletes fillers ("mm-hmm", "uh"), and a
    loop of fillers is still a loop.
    """
    words = re.findall(r"[\w']+", text.lower())
    return has_repeated_ngram(words) or compression_ratio(text) > COMPRESSION_LIMIT


def gate_silent(no_speech_prob: float, avg_logprob: float) -> bool:
    """openai-whisper's rule for discarding a segment as silence."""
    return no_speech_prob > NO_SPEECH_LIMIT and avg_logprob < LOGPROB_LIMIT


def label_transcript(
    reference: str,
    text: str,
    *,
    avg_logprob: float = math.nan,
    no_speech_prob: float = math.nan,
) -> dict:
    """All labels of one (reference, hypothesis) pair; reference '' means non-speech."""
    ref, hyp = normalize(reference), normalize(text)
    wer, cer = error_rates(ref, hyp)
    inserted = bool(ref) and insertion_flag(ref, hyp)
    hallucinated = inserted if ref else bool(hyp)
    silent = gate_silent(no_speech_prob, avg_logprob)
    return {
        "text": text,
        "normalized_text": hyp,
        "wer": wer,
        "cer": cer,
        "hallucinated": bool(hallucinated),
        "hallucinated_gated": bool(hallucinated and not silent),
        "insertion_flag": inserted,
        "looping_flag": bool(looping_flag(text)),
        "avg_logprob": float(avg_logprob),
        "no_speech_prob": float(no_speech_prob),
        "compression_ratio": compression_ratio(text),
    }


def _cache_path(loaded, manifest: pd.DataFrame) -> Path:
    """Labels of one model on one manifest, keyed (`wspec.cache.LABELS`) on the weights, the
    manifest and the labelling code, so a changed rule or threshold relabels."""
    from wspec.stimuli.manifest import manifest_hash

    key = wcache.LABELS.key(model=loaded.identity, manifest=manifest_hash(manifest))
    return wcache.LABELS.dir(safe_name(loaded.name)) / f"{key}.parquet"


def label_stimuli(
    loaded, manifest: pd.DataFrame, progress: bool = True, cache: bool = True
) -> pd.DataFrame:
    """Decode every stimulus greedily and label it; cached per model and manifest hash."""

    def compute() -> pd.DataFrame:
        rows = []
        clips = manifest.itertuples(index=False)
        for stim in track(
            clips, f"labels {loaded.name}", total=len(manifest), unit="clips", enabled=progress
        ):
            dec = greedy_decode(loaded, read_audio(stim.path, allow_long=True))
            rows.append(
                _row(
                    loaded.name,
                    stim._asdict(),
                    dec.text,
                    dec.avg_logprob,
                    dec.no_speech_prob,
                    len(dec.tokens),
                )
            )
        return pd.DataFrame(rows, columns=list(LABEL_COLUMNS))

    return wcache.fetch_frame(_cache_path(loaded, manifest), compute) if cache else compute()


def labels_from_decodes(decodes: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """Label the decodes a spectral run already made (its `*.decodes.parquet`): no new decode.

    The run's decode is the same greedy decode `label_stimuli` makes (its reported tokens,
    log-probs and no-speech probability are the natural ones), so labelling it instead of
    decoding again gives identical labels at no cost.
    """
    ref = manifest.set_index("id")
    missing = sorted(set(decodes["stimulus_id"]) - set(ref.index))
    if missing:
        raise WspecError(
            f"{len(missing)} decoded stimuli are not in the manifest (e.g. {missing[0]!r}); "
            "label a run with the manifest it was run on."
        )
    rows = [
        _row(
            dec.model,
            {"id": dec.stimulus_id, **ref.loc[dec.stimulus_id]},
            dec.text,
            dec.avg_logprob,
            dec.no_speech_prob,
            int(dec.n_tokens),
        )
        for dec in decodes.itertuples(index=False)
    ]
    return pd.DataFrame(rows, columns=list(LABEL_COLUMNS))


def _row(
    model: str, stim: dict, text: str, avg_logprob: float, no_speech_prob: float, n_tokens: int
) -> dict:
    """One labels row: `label_transcript` of a decode plus the stimulus it came from."""
    row = label_transcript(
        stim["transcript"], text, avg_logprob=avg_logprob, no_speech_prob=no_speech_prob
    )
    return row | {
        "model": model,
        "stimulus_id": stim["id"],
        "family": stim["family"],
        "source_id": stim["source_id"],
        "n_tokens": n_tokens,
    }


def summarize(labels: pd.DataFrame) -> pd.DataFrame:
    """Per model and family: clip count, mean WER/CER (speech only), raw and gated
    hallucination rates, looping rate, mean no_speech_prob."""
    g = labels.groupby(["model", "family"], sort=False)
    out = g.agg(
        n=("stimulus_id", "size"),
        wer=("wer", "mean"),
        cer=("cer", "mean"),
        halluc_rate=("hallucinated", "mean"),
        halluc_rate_gated=("hallucinated_gated", "mean"),
        looping_rate=("looping_flag", "mean"),
        no_speech_prob=("no_speech_prob", "mean"),
    )
    return out.reset_index()
