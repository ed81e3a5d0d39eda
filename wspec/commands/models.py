"""`wspec models`: what model specs resolve on this machine."""

from __future__ import annotations

import argparse

from wspec.models import available


def _run(args: argparse.Namespace) -> int:
    rows = available()
    print(f"{'spec':<34} {'params':>10}  {'ready':<5}  source / note")
    for info in rows:
        params = f"{info.n_params / 1e6:.1f}M" if info.n_params else "-"
        note = f" — {info.note}" if info.note else ""
        print(
            f"{info.spec:<34} {params:>10}  {'yes' if info.ready else 'no':<5}  {info.source}{note}"
        )
    print(
        "\nAlso accepted: any Hugging Face hub id (e.g. openai/whisper-large-v3-turbo) "
        "or a local model folder; random:<spec> gives an untrained control."
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "models",
        help="list every model spec that resolves here",
        description="List bundled, cached and control model specs with parameter counts and "
        "whether they are converted/cached (ready to load without work).",
    )
    parser.set_defaults(func=_run)
