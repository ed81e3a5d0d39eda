"""`wspec table`: print the Table 1 reproduction (ours with CIs beside the paper's values)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from wspec.errors import WspecError


def _read_results(paths: list[str]) -> pd.DataFrame:
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise WspecError(f"results file {path} not found; run `wspec run` or fix the path")
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True)


def _pipeline_results(models: list[str], set_name: str) -> pd.DataFrame:
    """Results of `wspec run` for each model: `run_model` assembles them from its per-stimulus
    cache (computing only what is missing, so a prior `wspec run` makes this a lookup)."""
    from wspec import pipeline

    return pd.concat([pipeline.run_model(m, set_name) for m in models], ignore_index=True)


def _run(args: argparse.Namespace) -> int:
    from wspec.crossmodel import table1_control
    from wspec.table import format_table, table1

    if args.results:
        results = _read_results(args.results)
        models = args.models
    else:
        results = _pipeline_results(args.models or ["tiny.en", "base"], args.set)
        models = None  # the pipeline names models canonically; show every one it returned
    control = table1_control(results) if args.control == "auto" else args.control
    table = table1(
        results,
        control=control,
        K=args.K,
        stress_families=args.family,
        models=models,
        n_boot=args.n_boot,
        seed=args.seed,
        method=args.ci_method,
    )
    print(format_table(table, args.format))
    families = ", ".join(args.family) if args.family else "all stress families (pooled)"
    print(
        f"\nK={args.K}, control={control}, stressed = {families}; layer mean per stimulus; "
        f"{args.ci_method} bootstrap 95% CI over stimuli (n_boot={args.n_boot}, "
        f"seed={args.seed}); * = Holm-adjusted permutation p < 0.05."
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "table",
        help="print Table 1 (clean vs stressed spectral deltas with CIs, paper values beside)",
        description="Reproduce the paper's Table 1 from `wspec run` results: ΔN_eff (%), "
        "Δlog10 K_f and Δα per decoder component and model, with bootstrap CIs and the "
        "published values in adjacent columns.",
    )
    parser.add_argument("--models", nargs="+", help="models to show (default: tiny.en base)")
    parser.add_argument("--results", nargs="+", help="results parquet file(s) from `wspec run`")
    parser.add_argument("--set", default="default", help="stimulus set name (default: default)")
    parser.add_argument(
        "--control",
        default="auto",
        help="sequence-length control: budget_T, matched_T, null_ratio/null_diff or raw "
        "(default auto: budget_T when the results have it, else matched_T, as in the book)",
    )
    parser.add_argument("--K", type=int, default=10, help="number of dominant modes (default 10)")
    parser.add_argument("--family", nargs="+", help="stress families to pool (default: all)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap/permutation seed")
    parser.add_argument("--ci-method", choices=["percentile", "bca"], default="percentile")
    parser.add_argument("--format", choices=["text", "markdown", "html"], default="text")
    parser.set_defaults(func=_run)
