"""`wspec detect`: hallucination probability of audio files, or train the probe that gives it."""

from __future__ import annotations

import argparse

import pandas as pd

from wspec.errors import WspecError


def _train(loaded, set_name: str) -> None:
    from wspec import detector
    from wspec.labels import labels_from_decodes
    from wspec.pipeline import default_output, features_path, run_model
    from wspec.stimuli import build_stimuli

    manifest = build_stimuli(set_name, progress=False)
    out = default_output(loaded.name, set_name)
    results = run_model(loaded.name, set_name, out=out, manifest=manifest, loaded=loaded)
    decodes = pd.read_parquet(out.with_name(out.stem + ".decodes.parquet"))
    bundle = detector.train(
        results,
        labels_from_decodes(decodes, manifest),
        manifest.set_index("id")["duration_s"],
        identity=loaded.identity,
        model=loaded.name,
        training_set=set_name,
        features=pd.read_parquet(features_path(out)),
    )
    path = detector.save(bundle, detector.probe_path(loaded.name, set_name))
    cv = detector.cv_auroc(bundle)
    print(
        f"[wspec detect] probe for {loaded.identity} trained on set {set_name!r} "
        f"({bundle['n_hallucinated']} hallucinated of {bundle['n_cases']}); cross-validated "
        f"AUROC {cv['auroc']:.3f} [{cv['auroc_low']:.3f}, {cv['auroc_high']:.3f}] -> {path}"
    )


def _detect(loaded, args: argparse.Namespace) -> None:
    from wspec import detector
    from wspec.paths import atomic_path

    manifest = detector.user_manifest(args.files)  # bad audio fails before anything else
    bundle = detector.load_probe(loaded.identity, loaded.name, args.set)
    table = detector.detect(loaded, manifest, bundle)
    if args.out:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
        print(f"[wspec detect] {len(table)} rows with every feature written to {args.out}")
    shown = table[["file", "p_hallucination", "avg_logprob", "no_speech_prob"]].copy()
    shown[["compression_ratio", "n_tokens", "text"]] = table[
        ["compression_ratio", "n_tokens", "text"]
    ]
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(shown.round(3).to_string(index=False))


def _run(args: argparse.Namespace) -> int:
    from wspec.models import load

    if args.train == bool(args.files):
        raise WspecError("give audio FILEs to check, or --train (one of the two).")
    loaded = load(args.model, device=args.device)
    if args.train:
        _train(loaded, args.set)
    else:
        _detect(loaded, args)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "detect",
        help="hallucination probability of audio files from Whisper's signals and spectra",
        description="With FILEs: decode each once (greedy, as `wspec transcribe`) with the "
        "spectral instrument attached and print the probability that the transcript is a "
        "hallucination, from the probe trained for this model (Whisper's signals + per-layer "
        "decoder spectra + per-head cross-attention Laplacian eigenvalues, see the Detection "
        "chapter). With --train: run the model on a "
        "stimulus set, cross-validate and fit that probe, and store it beside the run.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="audio files (≤ 30 s each)")
    parser.add_argument("--model", default="tiny.en", help="model spec (default tiny.en)")
    parser.add_argument("--set", default="default", help="training stimulus set (default|ci)")
    parser.add_argument("--train", action="store_true", help="train and store the probe")
    parser.add_argument("--out", default=None, help="write every feature to this CSV")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA if present)")
    parser.set_defaults(func=_run)
