"""`classical-music data download|prepare`."""

from __future__ import annotations

from .prepare import add_prepare_parser


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="download Aria-MIDI, prepare a token cache from MIDI files")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    from . import aria

    aria.add_download_parser(data_sub)
    add_prepare_parser(data_sub)
