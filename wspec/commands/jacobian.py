"""`wspec jacobian`: per-layer gain, alignment and injection coherence of one model."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from wspec.errors import WspecError
from wspec.paths import atomic_path, cache_dir


def _stimuli(args: argparse.Namespace) -> list[tuple[str, str, Path]]:
    """(stimulus_id, family, path) from --audio files or from a built stimulus set."""
    if args.audio:
        missing = [a for a in args.audio if not Path(a).is_file()]
        if missing:
            raise WspecError(f"audio file not found: {missing[0]}; pass existing .wav files.")
        return [(Path(a).stem, args.family, Path(a)) for a in args.audio]
    from wspec.stimuli import load_manifest, set_dir

    manifest = load_manifest(args.set)
    if args.families:
        wanted = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = sorted(set(wanted) - set(manifest["family"]))
        if unknown:
            raise WspecError(
                f"family {unknown[0]!r} is not in set {args.set!r}; "
                f"choose from {', '.join(sorted(manifest['family'].unique()))}."
            )
        manifest = manifest[manifest["family"].isin(wanted)]
    if args.stimuli:
        manifest = manifest.groupby("family", sort=False).head(args.stimuli)
    root = set_dir(args.set)  # manifest paths may be relative to the set's folder
    return [(r.id, r.family, root / r.path) for r in manifest.itertuples()]


def run(args: argparse.Namespace) -> int:
    from wspec.audio import read_audio
    from wspec.jacobian import measure_clip, summarize_gain_alignment
    from wspec.models import load

    stimuli = _stimuli(args)
    if not stimuli:
        raise WspecError("no stimuli selected; check --set/--families/--stimuli or pass --audio.")
    loaded = load(args.model)
    stem = f"{loaded.name}_{args.set if not args.audio else 'audio'}".replace(":", "_")
    out = Path(args.out) if args.out else cache_dir("jacobian") / f"{stem}.parquet"
    tables = []
    for sid, family, path in tqdm(stimuli, desc=f"jacobian {loaded.name}", unit="clip"):
        tables.append(
            measure_clip(
                loaded,
                read_audio(path, allow_long=True),
                stimulus_id=sid,
                family=family,
                steps=args.steps,
                frames=args.frames,
                n_probes=args.probes,
                max_new_tokens=args.max_new_tokens,
            )
        )
    table = pd.concat(tables, ignore_index=True)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    summary = summarize_gain_alignment(table)
    cols = ["stack", "rho_p05", "rho_median", "rho_p95", "cv_layers", "cv_steps", "verdict"]
    print(summary[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {len(table)} rows to {os.fspath(out)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "jacobian",
        help="measure per-layer gain sigma_1, alignment kappa, rho = sigma_1*kappa and gamma",
        description="Top singular values/vectors of every encoder and decoder layer's "
        "position-local Jacobian (Lanczos on torch.func vector products), their alignment "
        "across layers and the cross-attention injection coherence gamma; writes a tidy "
        "parquet table (one row per model, stimulus, stack, layer, step).",
    )
    p.add_argument("--model", default="tiny.en", help="model spec (tiny.en, base, random:tiny.en)")
    p.add_argument("--set", default="ci", help="stimulus set built by `wspec stimuli build`")
    p.add_argument("--families", default="", help="comma-separated families to keep")
    p.add_argument("--stimuli", type=int, default=0, help="at most N stimuli per family (0: all)")
    p.add_argument("--audio", nargs="+", help="measure these 16 kHz wav files instead of a set")
    p.add_argument("--family", default="user", help="family label for --audio files")
    p.add_argument("--steps", type=int, default=4, help="decoding steps per clip")
    p.add_argument("--frames", type=int, default=2, help="encoder frames per clip")
    p.add_argument("--probes", type=int, default=16, help="Hutchinson probes for ||G||_F")
    p.add_argument("--max-new-tokens", type=int, default=48, help="greedy decoding length cap")
    p.add_argument("--out", default="", help="output parquet (default: cache/jacobian/...)")
    p.set_defaults(func=run)
