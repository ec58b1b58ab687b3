"""Which SoundFont renders the audio: an explicit file, $CLASSICAL_MUSIC_SOUNDFONT, a system General
MIDI one, or pretty_midi's bundled TimGM6mb; each checked to be an SF2 before the synthesizer sees it."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from .errors import UserError

SOUNDFONT_ENV = "CLASSICAL_MUSIC_SOUNDFONT"
SYSTEM_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
)


def pretty_midi_soundfont() -> Path | None:
    # find_spec, not import: pretty_midi pulls in mido and friends that we do not need here
    spec = find_spec("pretty_midi")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "TimGM6mb.sf2"
    return path if path.is_file() else None


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The SoundFont to use: explicit path, $CLASSICAL_MUSIC_SOUNDFONT, a system one, pretty_midi's."""
    if soundfont is not None and str(soundfont) != "":
        return _check_soundfont(Path(soundfont), "soundfont")
    env = os.environ.get(SOUNDFONT_ENV)
    if env:
        return _check_soundfont(Path(env), f"${SOUNDFONT_ENV}")
    for p in SYSTEM_SOUNDFONTS:
        if os.path.isfile(p):
            return Path(p)
    bundled = pretty_midi_soundfont()
    if bundled is None:
        raise UserError(f"no SoundFont found: pass --soundfont FILE.sf2 or set ${SOUNDFONT_ENV}")
    return bundled


def _check_soundfont(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise UserError(f"{origin} {path} not found")
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise UserError(f"cannot read {origin} {path}: {e.strerror or e}") from None
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise UserError(f"{origin} {path} is not an SF2 SoundFont")
    return path


@lru_cache(maxsize=2)
def _soundfont_bytes(path: str, mtime_ns: int, size: int) -> bytes:
    # cached per (mtime, size) so a replaced file is re-read; forked workers inherit the cache
    with open(path, "rb") as f:
        return f.read()


def _load_soundfont(path: Path) -> bytes:
    st = path.stat()
    return _soundfont_bytes(str(path), st.st_mtime_ns, st.st_size)
