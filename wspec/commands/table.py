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


def _decodes_beside(paths: list[Path]) -> pd.DataFrame:
    """The `*.decodes.parquet` that `wspec run` writes beside each results table."""
    frames = []
    for path in paths:
        beside = path.with_name(path.stem + ".decodes.parquet")
        if not beside.is_file():
            raise WspecError(
                f"{beside} not found: the paper protocol needs the decodes `wspec run` writes "
                "beside its results (or use --protocol broad)."
            )
        frames.append(pd.read_parquet(beside))
    return pd.concat(frames, ignore_index=True)


def _paper_protocol(results: pd.DataFrame, paths: list[Path], set_name: str):
    """Results restricted to the paper's contrast, labelled from the run's own decodes."""
    from wspec import protocol
    from wspec.labels import labels_from_decodes
    from wspec.stimuli import load_manifest

    manifest = load_manifest(set_name)
    decodes = _decodes_beside(paths)
    decodes = decodes[decodes["stimulus_id"].isin(manifest["id"])]
    labels = labels_from_decodes(decodes, manifest)
    if not (labels["family"] == protocol.STRESS_FAMILY).any():
        raise WspecError(
            f"set {set_name!r} has no 'hell' clips for the paper protocol; rebuild it with "
            "`wspec stimuli build` and re-run, or use --protocol broad."
        )
    return protocol.protocol_results(results, labels)


def _run(args: argparse.Namespace) -> int:
    from wspec import pipeline, protocol
    from wspec.crossmodel import BROAD_CONTROL
    from wspec.table import format_table, table1

    if args.results:
        results = _read_results(args.results)
        paths = [Path(p) for p in args.results]
        models = args.models
    else:
        results = _pipeline_results(args.models or ["tiny.en", "base"], args.set)
        paths = [pipeline.default_output(m, args.set) for m in results["model"].unique()]
        models = None  # the pipeline names models canonically; show every one it returned
    paper = args.protocol == "paper"
    groups: dict = {"stress_families": args.family}
    if paper:
        results = _paper_protocol(results, paths, args.set)
        groups = {
            "clean_families": (protocol.CLEAN_FAMILY,),
            "stress_families": (protocol.STRESS_FAMILY,),
            "pair": "drop",
        }
    if args.control != "auto":
        control = args.control
    else:
        control = protocol.PRIMARY_CONTROL if paper else BROAD_CONTROL
    table = table1(
        results,
        control=control,
        K=args.K,
        models=models,
        **groups,
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        seed=args.seed,
        method=args.ci_method,
    )
    print(format_table(table, args.format))
    families = ", ".join(args.family) if args.family else "all stress families (pooled)"
    if paper:
        families = "the hell clips each model transcribes with WER > 0.5, paired with their source"
    print(
        f"\nprotocol={args.protocol}, K={args.K}, control={control}, stressed = {families}; "
        "layer mean per stimulus; "
        f"{args.ci_method} bootstrap 95% CI over stimuli (n_boot={args.n_boot}, "
        f"seed={args.seed}); * = Holm-adjusted permutation p < 0.05 (n_perm={args.n_perm})."
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
        "--protocol",
        choices=["paper", "broad"],
        default="paper",
        help="paper (default): long clean utterances vs the 'hell' clips each model gets "
        "wrong (WER > 0.5), natural rows only, as the book's Table 1; broad: clean sentences "
        "vs the wider stress set (a sensitivity analysis with forced rows)",
    )
    parser.add_argument(
        "--control",
        default="auto",
        help="sequence-length control: natural_T, natural_win, null (each metric under its "
        "Gaussian null), null_ratio/null_diff, matched_T, raw or budget_T (forced rows, a "
        "sensitivity analysis); default auto: natural_T for the paper protocol, null for broad, "
        "as in the book",
    )
    parser.add_argument("--K", type=int, default=10, help="number of dominant modes (default 10)")
    parser.add_argument("--family", nargs="+", help="stress families to pool (default: all)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    parser.add_argument("--n-perm", type=int, default=2000, help="permutations per test")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap/permutation seed")
    parser.add_argument("--ci-method", choices=["percentile", "bca"], default="percentile")
    parser.add_argument("--format", choices=["text", "markdown", "html"], default="text")
    parser.set_defaults(func=_run)
