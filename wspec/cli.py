"""The `wspec` command line: one sub-command per module in `wspec.commands`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. Discovery keeps this file free of per-command edits.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import wspec
import wspec.commands
from wspec.errors import WspecError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wspec",
        description="Spectral dynamics of Whisper hallucinations: models, stimuli, "
        "spectral runs, theory checks and the book.",
    )
    parser.add_argument("--version", action="version", version=f"wspec {wspec.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(wspec.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"wspec.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (WspecError, FileNotFoundError, ValueError) as err:
        print(f"wspec: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
