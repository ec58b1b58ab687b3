"""Which instrument plays: an SFZ piano (sampler) or an SF2 SoundFont, chosen in this order:
--piano FILE.sfz, --soundfont FILE.sf2, $CLASSICAL_MUSIC_PIANO, $CLASSICAL_MUSIC_SOUNDFONT, the
Salamander grand that `classical-music piano install` put in the cache, a system SoundFont, and
last pretty_midi's TimGM6mb, with one line saying why the grand is not playing."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..soundfont import SOUNDFONT_ENV, find_soundfont

PIANO_ENV = "CLASSICAL_MUSIC_PIANO"
_told: set[str] = set()


@dataclass(frozen=True)
class Instrument:
    kind: str  # "sfz" (pysfizz) or "sf2" (midirenderer)
    path: Path
    credit: str | None = None  # shown where the audio is credited

    @property
    def name(self) -> str:
        return self.path.stem if self.credit is None else "Salamander Grand Piano V3"


def notice(line: str) -> None:
    """One line on stderr, once per process (a studio renders many pieces)."""
    if line not in _told:
        _told.add(line)
        print(f"note: {line}", file=sys.stderr, flush=True)


def _sfz(path, origin: str) -> Instrument:
    from . import sampler

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{origin} {path} not found")
    if path.suffix.lower() != ".sfz":
        raise UserError(f"{origin} {path} is not an SFZ instrument (.sfz); an SF2 SoundFont goes to --soundfont")
    if not sampler.available():
        raise UserError(f"{origin} needs pysfizz, the SFZ sampler: pip install pysfizz")
    from .. import piano

    return Instrument("sfz", path, piano.CREDIT if piano.is_ours(path) else None)


def find_instrument(piano=None, soundfont=None, quiet: bool = False) -> Instrument:
    if piano not in (None, "") and soundfont not in (None, ""):
        raise UserError("--piano and --soundfont each name an instrument: give one of them")
    if piano not in (None, ""):
        return _sfz(piano, "--piano")
    if soundfont not in (None, ""):
        return Instrument("sf2", find_soundfont(soundfont))
    if os.environ.get(PIANO_ENV):
        return _sfz(os.environ[PIANO_ENV], f"${PIANO_ENV}")
    if os.environ.get(SOUNDFONT_ENV):
        return Instrument("sf2", find_soundfont())
    from .. import piano as grand
    from . import sampler

    sfz, problem = grand.installed()
    if sfz is not None and sampler.available():
        return Instrument("sfz", sfz, grand.CREDIT)
    fallback = Instrument("sf2", find_soundfont())
    if not quiet:
        if sfz is not None:
            problem = "pysfizz is not installed (pip install pysfizz)"
        notice(f"{problem}; playing with the {fallback.path.stem} SoundFont instead")
    return fallback
