"""`wspec run`: spectral metrics of one model on a stimulus set (cached, resumable)."""

from __future__ import annotations

import argparse
import time

from wspec.scale import add_scheduler_argument


def _run(args: argparse.Namespace) -> int:
    from wspec.pipeline import default_output, run_model  # heavy: import on use

    start = time.perf_counter()
    progress = not args.quiet
    table = run_model(
        args.model,
        args.set,
        out=args.out,
        progress=progress,
        device=args.device,
        scheduler=args.scheduler,
    )
    seconds = time.perf_counter() - start
    out = args.out or default_output(table["model"].iloc[0], args.set)
    n_stim = table["stimulus_id"].nunique()
    print(
        f"[wspec run] {args.model} on set {args.set!r}: {n_stim} stimuli, {len(table)} rows "
        f"in {seconds:.1f} s -> {out}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="capture activations while decoding a stimulus set and compute spectral metrics",
        description="Greedy-decode every stimulus of a set with all capture sites hooked and "
        "write the tidy spectral table (parquet; metrics n_eff, log10_kf (Kirchhoff index), "
        "alpha, participation_ratio, stable_rank, top_share, log10_cond at K=10 and K=0 under "
        "the controls natural_T (primary), natural_win, raw, matched_T, null_ratio/null_diff, "
        "and the sensitivity analyses budget_T and sens:*). Finished stimuli are cached, so an "
        "interrupted run "
        "resumes. The decodes go beside the table as *.decodes.parquet.",
    )
    parser.add_argument(
        "--model", required=True, help="model spec, e.g. tiny.en, base, random:tiny"
    )
    parser.add_argument("--set", default="default", help="stimulus set: default or ci")
    parser.add_argument("--out", help="output parquet (default: in the wspec cache)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_scheduler_argument(parser)
    parser.set_defaults(func=_run)
