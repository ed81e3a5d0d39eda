"""Benchmark: the book's build stages, cold and warm, and the model run against bare decoding.

    .venv/bin/python scripts/bench_book.py [--models tiny.en] [--full] [--pdf] [--edits]

Everything runs in a fresh clone of this checkout (HEAD, committed work only) with an empty
WSPEC_CACHE under a temporary folder, so nothing is reused from this machine:

1. a cold `wspec book` (the reduced `ci` build unless --full), each stage timed from the
   `[wspec book] stage` lines it prints;
2. the same command again (warm: target ≤ 15 s);
3. with --edits: the rebuild after a one-line prose edit of one chapter, and after a change to
   `wspec/stats.py`;
4. a bare greedy decode of every clip the first model's run measured (its decodes table), with
   the same model in the same process: the ratio model run ÷ bare decoding says how much the
   run costs beyond transcribing (target ≤ 2.0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_build(clone: Path, env: dict, args: list[str]) -> dict[str, float]:
    """Run `wspec book` in `clone`; seconds per stage (from its stage lines) and in total."""
    cmd = [sys.executable, "-m", "wspec", "book", *args, "--root", str(clone)]
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(
        cmd, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            if line.startswith("[wspec book] stage"):
                marks.append((line.split(": ", 1)[1].strip(), time.perf_counter() - start))
            if line.startswith(("[wspec book]", "  [wspec]")):
                print("   ", line.rstrip(), flush=True)
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit {proc.returncode}")
    ends = [t for _, t in marks[1:]] + [total]
    out = {name: end - begin for (name, begin), end in zip(marks, ends, strict=True)}
    return out | {"total": total}


def bare_decoding(model: str, set_name: str, ids) -> float:
    """Seconds to read and greedy-decode each clip a run measured once, nothing hooked.

    The clips (the set and this model's attacks) come from the caches the build filled."""
    import pandas as pd

    from wspec import attacks
    from wspec.audio import read_audio
    from wspec.decoding import greedy_decode
    from wspec.models import load
    from wspec.stimuli import build_stimuli

    loaded = load(model, device="cpu")
    base = build_stimuli(set_name, progress=False)
    attacked = attacks.build_attack_stimuli(
        loaded, base, progress=False, **attacks.book_settings(set_name)
    )
    path = pd.concat([base, attacked]).set_index("id")["path"]
    greedy_decode(loaded, read_audio(path[ids[0]], allow_long=True))  # warm-up
    start = time.perf_counter()
    for sid in ids:
        greedy_decode(loaded, read_audio(path[sid], allow_long=True))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en"])
    parser.add_argument("--full", action="store_true", help="the default set, not the ci set")
    parser.add_argument("--pdf", action="store_true", help="time the PDF build too")
    parser.add_argument("--edits", action="store_true", help="time rebuilds after two edits")
    args = parser.parse_args()
    book_args = ["--models", *args.models] + ([] if args.full else ["--reduced"])
    book_args += [] if args.pdf else ["--no-pdf"]
    with tempfile.TemporaryDirectory(prefix="wspec-bench-") as tmp:
        clone, cache = Path(tmp) / "clone", Path(tmp) / "cache"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {**os.environ, "WSPEC_CACHE": str(cache), "PYTHONPATH": str(clone)}
        print("cold build:", flush=True)
        cold = timed_build(clone, env, book_args)
        print("warm build:", flush=True)
        warm = timed_build(clone, env, book_args)
        edits = {}
        if args.edits:
            chapter = clone / "book" / "intro.md"
            chapter.write_text(chapter.read_text() + "\nOne more sentence of prose.\n")
            edits["after a prose edit"] = timed_build(clone, env, book_args)["total"]
            stats = clone / "wspec" / "stats.py"
            stats.write_text(stats.read_text() + "\n# a comment: the package changed\n")
            edits["after a wspec.stats edit"] = timed_build(clone, env, book_args)["total"]
        runs = json.loads((clone / "book" / "runs" / "runs.json").read_text())
        first = runs["runs"][0]
        os.environ["WSPEC_CACHE"] = str(cache)  # read the clips the cold build made
        import pandas as pd

        ids = list(pd.read_parquet(first["outputs"]["decodes"])["stimulus_id"])
        bare = bare_decoding(first["model"], runs["stimulus_set"], ids)
    print("\nstage                 cold (s)   warm (s)")
    for stage in cold:
        print(f"{stage:<20} {cold[stage]:>9.1f} {warm.get(stage, float('nan')):>10.1f}")
    for name, seconds in edits.items():
        print(f"rebuild {name}: {seconds:.1f} s")
    run_s = float(first["seconds"])
    print(
        f"\nmodel run {first['model']}: {run_s:.1f} s; bare greedy decoding of the same clips "
        f"{bare:.1f} s; ratio = {run_s / bare:.2f} (target <= 2.0)"
    )
    print(f"cold total {cold['total'] / 60:.1f} min; warm total {warm['total']:.1f} s (<= 15 s)")


if __name__ == "__main__":
    main()
