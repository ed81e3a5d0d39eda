"""`wspec transcribe`: greedy transcripts with Whisper's own signals, or a labelled set."""

from __future__ import annotations

import argparse

import pandas as pd

from wspec.errors import WspecError


def _files(loaded, paths: list[str]) -> None:
    from wspec.audio import read_audio
    from wspec.decoding import greedy_decode

    for path in paths:
        dec = greedy_decode(loaded, read_audio(path))
        print(
            f"{path}\tno_speech_prob={dec.no_speech_prob:.3f}\tavg_logprob={dec.avg_logprob:.3f}"
            f"\tcompression_ratio={dec.compression_ratio:.2f}\t{dec.text}"
        )


def _set(loaded, args: argparse.Namespace) -> None:
    from wspec.labels import label_stimuli, summarize
    from wspec.paths import atomic_path
    from wspec.stimuli import load_manifest

    labels = label_stimuli(loaded, load_manifest(args.set))
    if args.out:
        with atomic_path(args.out) as tmp:  # an interrupted write leaves no half CSV
            labels.to_csv(tmp, index=False)
        print(f"[wspec transcribe] labels written to {args.out}")
    else:
        cols = ["stimulus_id", "wer", "hallucinated", "hallucinated_gated", "text"]
        print(labels[cols].to_string(index=False, max_colwidth=60))
    with pd.option_context("display.width", 160):
        print(summarize(labels).round(3).to_string(index=False))


def _run(args: argparse.Namespace) -> int:
    from wspec.models import load

    if bool(args.files) == bool(args.set):
        raise WspecError("give audio FILEs or --set NAME (one of the two).")
    loaded = load(args.model, device=args.device)
    if args.files:
        _files(loaded, args.files)
    else:
        _set(loaded, args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "transcribe",
        help="greedy transcripts of audio files, or labels of a stimulus set",
        description="Fixed greedy decoding (temperature 0, no fallback, English forced). "
        "With FILEs: text plus no_speech_prob, avg_logprob and compression ratio. With --set: "
        "the hallucination label table (cached per model and set) and a per-family summary.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files (≤ 30 s each)")
    parser.add_argument("--model", default="tiny.en", help="model spec (default tiny.en)")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA if present)")
    parser.add_argument("--set", default=None, help="label a built stimulus set instead")
    parser.add_argument("--out", default=None, help="write the label table to this CSV")
    parser.set_defaults(func=_run)
