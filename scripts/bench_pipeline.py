"""Benchmark: spectral pipeline time ÷ bare greedy decoding of the same clips (tiny.en, CPU).

    .venv/bin/python scripts/bench_pipeline.py [--model tiny.en] [--set ci] [--n 12] [--threads 1]

For each clip, in turn: (a) read + greedy-decode it bare, as a user transcribing it would;
(b) the same decode with the pipeline's fixed budget of T0 tokens (the sequence-length
control makes short decodes longer); (c) the full pipeline on it (capture hooks, eigen-solves,
metrics under all controls, atomic parquet write) into a fresh temporary result cache, so
nothing is skipped.  Interleaving makes machine load hit all three alike.  The headline
ratio is (c)/(a), the whole cost of measuring; (c)/(b) isolates hooks and metrics.
Gaussian-null expectations depend only on matrix shape and are cached per machine under
cache_dir("nulls"); the script reports how many it had to compute.
Target: ratio ≤ 1.25.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from wspec.audio import read_audio  # noqa: E402
from wspec.decoding import greedy_decode  # noqa: E402
from wspec.models import load  # noqa: E402
from wspec.paths import cache_dir  # noqa: E402
from wspec.pipeline import SpectralSettings, run_model  # noqa: E402
from wspec.stimuli import build_stimuli  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--set", default="ci")
    parser.add_argument("--n", type=int, default=12, help="clips (spread over the set)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manifest = build_stimuli(args.set, progress=False)
    step = max(1, len(manifest) // args.n)
    clips = manifest.iloc[::step].head(args.n)
    loaded = load(args.model, device="cpu")
    settings = SpectralSettings()
    nulls_before = len(list(cache_dir("nulls").glob("*.json")))
    greedy_decode(loaded, read_audio(clips.iloc[0]["path"], allow_long=True))  # warm-up
    bare = budget = pipe = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(len(clips)):
            row = clips.iloc[i : i + 1]
            t0 = time.perf_counter()
            audio = read_audio(row.iloc[0]["path"], allow_long=True)
            greedy_decode(loaded, audio, max_new_tokens=settings.max_new_tokens)
            tb = time.perf_counter()
            greedy_decode(
                loaded,
                audio,
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.matched_rows,
            )
            t1 = time.perf_counter()
            run_model(
                args.model,
                args.set,
                out=f"{tmp}/table_{i}.parquet",
                progress=False,
                manifest=row,
                settings=settings,
                loaded=loaded,
                cache=tmp,
            )
            t2 = time.perf_counter()
            bare += tb - t0
            budget += t1 - tb
            pipe += t2 - t1
    new_nulls = len(list(cache_dir("nulls").glob("*.json"))) - nulls_before
    print(
        f"{args.model} on {len(clips)} clips of set {args.set!r}, {args.threads} CPU thread(s): "
        f"bare greedy decoding {bare:.2f} s, with the {settings.matched_rows}-token budget "
        f"{budget:.2f} s, pipeline {pipe:.2f} s ({new_nulls} null shapes computed fresh)"
    )
    print(f"ratio pipeline / bare decoding = {pipe / bare:.3f}  (target <= 1.25)")
    print(f"ratio pipeline / budget decoding = {pipe / budget:.3f}  (hooks and metrics alone)")


if __name__ == "__main__":
    main()
