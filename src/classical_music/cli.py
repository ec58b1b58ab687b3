"""The `classical-music` command: one front for every pipeline stage.

Each stage module exposes ``add_parser(subparsers)`` which registers its sub-command and sets
``func`` to a callable taking the parsed arguments. A :class:`UserError` anywhere becomes one line
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# Order is the order shown in --help, which follows the pipeline.
STAGES = [
    "classical_music.data.cli",
    "classical_music.train",
    "classical_music.generate",
    "classical_music.audio",
    "classical_music.evaluate",
    "classical_music.compare",
    "classical_music.web.server",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classical-music",
        description="Learn classical piano music from MIDI with an LSTM and compose new pieces.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGES:
        importlib.import_module(name).add_parser(sub)
    return parser


def run(func, args) -> int:
    """Call a stage's entry point, turning user mistakes into one line and exit code 2."""
    try:
        return int(func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
