"""`wspec book`: run the model chapter for each model and build the book (HTML and PDF)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from wspec.book import DEFAULT_MODELS, build
from wspec.scale import SCHEDULER_ENV, add_scheduler_argument, scheduler_choice


def _run(args: argparse.Namespace) -> int:
    if args.scheduler:  # the chapters' kernels inherit it (wspec.scale reads the variable)
        os.environ[SCHEDULER_ENV] = scheduler_choice(args.scheduler)
    times = build(
        args.models,
        reduced=args.reduced,
        html=args.html,
        pdf=args.pdf,
        root=Path(args.root) if args.root else None,
    )
    print("[wspec book] done: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "book",
        help="run the per-model chapter for each model, then build the book",
        description="Execute book/model_run.md through papermill once per model (cached by "
        "chapter, package source and parameters), then build the Jupyter Book strictly: a "
        "failing cell, a broken reference or a missing figure fails the build. "
        "Output: _build/html/ and _build/latex/wspec.pdf.",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        metavar="SPEC",
        help="model specs, e.g. tiny.en base openai/whisper-large-v3-turbo random:tiny "
        f"(default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="CI mode: the small 'ci' stimulus set and fewer resamples",
    )
    parser.add_argument(
        "--html", action=argparse.BooleanOptionalAction, default=True, help="build HTML"
    )
    parser.add_argument(
        "--pdf", action=argparse.BooleanOptionalAction, default=True, help="build the PDF"
    )
    parser.add_argument("--root", help="book root (default: the checkout holding _config.yml)")
    add_scheduler_argument(parser)
    parser.set_defaults(func=_run)
