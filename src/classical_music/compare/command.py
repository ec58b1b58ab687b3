"""`classical-music compare GENERATED REFERENCE`: the flags, and what the command prints and writes."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from .report import _atomic_write, format_table, render_report
from .sets import compare_piece_sets, load_set


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the musical statistics of generated pieces with a reference set",
        description="Pool pitch class, pitch, inter-onset interval, duration, velocity, note density and "
        "polyphony over each set, smooth them with a Gaussian KDE and print the overlap area (1 = same, "
        "0 = disjoint) and KL(reference || generated) per feature (Yang & Lerch 2018).",
    )
    p.add_argument("generated", type=Path, metavar="GENERATED", help="a MIDI file or a folder (searched recursively)")
    p.add_argument("reference", type=Path, metavar="REFERENCE", help="a MIDI file or a folder (searched recursively)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write all numbers as JSON")
    p.add_argument("--report", type=Path, default=None, metavar="OUT.html",
                   help="write a self-contained HTML page with plots and piano rolls")
    p.add_argument("--no-progress", "--no_progress", dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args) -> int:
    for out, suffix in ((args.json, "--json"), (args.report, "--report")):
        if out is not None and out.is_dir():
            raise UserError(f"{suffix} {out} is a folder; give a file name")
    gen = load_set(args.generated, "generated", not args.no_progress)
    ref = load_set(args.reference, "reference", not args.no_progress)
    result, dists = compare_piece_sets(gen, ref)
    if args.json is not None:
        _atomic_write(args.json, json.dumps(result, indent=2) + "\n")
    if args.report is not None:
        _atomic_write(args.report, render_report(result, dists, gen, ref))
    for ps in (gen, ref):
        line = f"{ps.label}: {len(ps.files)} files, {ps.notes:,} notes, {ps.seconds / 60:.1f} min"
        if ps.skipped:
            line += f", {len(ps.skipped)} skipped"
            line += " (see --json)" if len(ps.skipped) > 3 else ": " + "; ".join(
                f"{Path(s['path']).name}: {s['reason']}" for s in ps.skipped)
        print(line)
    print(format_table(result))
    for out in (args.json, args.report):
        if out is not None:
            print(f"wrote {out}")
    return 0
