"""`wspec stimuli`: build, list and attack the stress set."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _build(args: argparse.Namespace) -> int:
    from wspec.stimuli import add_user_folder, build_stimuli, manifest_hash, set_dir

    start = time.perf_counter()
    if args.user_dir:
        name = args.set or "user"
        df = add_user_folder(Path(args.user_dir), set_name=name)
    else:
        name = args.set or "default"
        df = build_stimuli(name)
    print(
        f"[wspec stimuli] set {name!r}: {len(df)} clips, {df.duration_s.sum() / 60:.1f} min "
        f"of audio in {set_dir(name)} ({time.perf_counter() - start:.0f} s); "
        f"manifest hash {manifest_hash(df)[:16]}"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from wspec.stimuli import load_manifest

    df = load_manifest(args.set)
    if args.ids:
        cols = ["id", "family", "duration_s", "transcript"]
        print(df[cols].to_string(index=False, max_colwidth=60))
        return 0
    table = df.groupby("family", sort=False).agg(
        clips=("id", "size"),
        min_s=("duration_s", "min"),
        max_s=("duration_s", "max"),
        total_min=("duration_s", lambda s: s.sum() / 60),
    )
    print(table.round(2).to_string())
    return 0


def _attack(args: argparse.Namespace) -> int:
    from wspec.attacks import attack_summary, book_settings, build_attack_stimuli
    from wspec.models import load
    from wspec.stimuli import load_manifest

    # Unset options take the book's settings for this set, so the default command makes (and
    # reuses from the cache) exactly the attacks the book measured.
    chosen = {"snrs": args.snrs and tuple(args.snrs), "steps": args.steps, "n_utts": args.n_utts}
    settings = book_settings(args.set) | {k: v for k, v in chosen.items() if v is not None}
    loaded = load(args.model, device=args.device)
    df = build_attack_stimuli(
        loaded, load_manifest(args.set), **settings, target=args.target, seed=args.seed
    )
    print(f"[wspec stimuli] attacks on {loaded.name}: success rate per family and SNR budget")
    print(attack_summary(df).round(3).to_string(index=False))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stimuli",
        help="build, list or attack the stress set",
        description="The stress set: clean TTS speech, non-speech, degraded speech (cached, "
        "deterministic) and per-model gradient attacks.",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    b = verbs.add_parser("build", help="build (or complete) a stimulus set in the cache")
    b.add_argument(
        "--set",
        default=None,
        help="'default' (full, the default) or 'ci' (small); with --user-dir, the name of "
        "your set (default 'user')",
    )
    b.add_argument(
        "--user-dir",
        help="instead: make a set from a folder of audio files with .txt transcripts "
        "(they count as clean speech)",
    )
    b.set_defaults(func=_build)

    ls = verbs.add_parser("list", help="summarize a built set by family")
    ls.add_argument("--set", default="default")
    ls.add_argument("--ids", action="store_true", help="list every clip instead")
    ls.set_defaults(func=_list)

    a = verbs.add_parser(
        "attack",
        help="L2-PGD attacks and Gaussian controls on one model (cached per model)",
        description="Untargeted and targeted L2-PGD under SNR budgets plus a Gaussian-noise "
        "control, on the first N clean utterances of a set. Prints the success rates.",
    )
    a.add_argument("--model", default="tiny.en", help="model spec (default tiny.en)")
    a.add_argument("--device", default=None, help="torch device (default: CUDA if present)")
    a.add_argument("--set", default="default", help="stimulus set holding the clean speech")
    a.add_argument("--snrs", type=float, nargs="+", help="SNR budgets in dB (default: the book's)")
    a.add_argument("--steps", type=int, help="PGD steps (default: the book's for the set)")
    a.add_argument("--n-utts", type=int, help="clean utterances attacked (default: the book's)")
    a.add_argument("--target", default=" Thank you for watching.", help="targeted phrase")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_attack)
