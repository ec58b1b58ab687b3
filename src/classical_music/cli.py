"""The `classical-music` command: one front for every pipeline stage.

Each stage module exposes ``add_parser(subparsers)`` which registers its sub-command and sets
``func`` to a callable taking the parsed arguments. A :class:`UserError` anywhere becomes one line
on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from . import __version__
from .errors import UserError
from .stopping import exit_status, handle_signals

# Order is the order shown in --help, which follows the pipeline.
STAGES = [
    "classical_music.data.cli",
    "classical_music.train",
    "classical_music.train.finetune",
    "classical_music.generate",
    "classical_music.audio",
    "classical_music.piano",
    "classical_music.evaluate",
    "classical_music.memory_tune",
    "classical_music.compare",
    "classical_music.web.server",
]


class Parser(argparse.ArgumentParser):
    """An unknown flag is reported by the sub-command it was given to, under that sub-command's
    usage, with the nearest flag it has (plain argparse blames the top level and shows its usage)."""

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = _chosen_parser(self, namespace)
            parser.error(f"unrecognized arguments: {' '.join(extras)}{_suggestion(parser, extras)}")
        return namespace


def _chosen_parser(parser: argparse.ArgumentParser, namespace) -> argparse.ArgumentParser:
    """The innermost sub-command parser the arguments chose (`data prepare` -> prepare's)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(namespace, sub.dest, None) if sub else None
        if name not in (sub.choices if sub else {}):
            return parser
        parser = sub.choices[name]


def _suggestion(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    known = [o for a in parser._actions for o in a.option_strings]
    hints = []
    for flag in (e.split("=", 1)[0] for e in extras if e.startswith("-")):
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        if not close and "-" in flag.lstrip("-"):  # --max-steps for --max_steps
            close = difflib.get_close_matches(flag.replace("-", "_").replace("__", "--", 1), known, n=1, cutoff=0.6)
        if close:
            hints.append(f"{flag}: did you mean {close[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
        with handle_signals():  # SIGTERM unwinds like Ctrl-C: children stopped, temporary files removed
            return int(func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("stopped", file=sys.stderr)
        return exit_status(e)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
