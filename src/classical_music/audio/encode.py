"""Writing the audio block by block: 16-bit WAV through libsndfile, MP3 through LAME (lameenc,
192 kbit/s; libsndfile's own MP3 writer when lameenc is missing). No whole-piece copy is made."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ..errors import UserError

FORMATS = {".wav": ("WAV", "PCM_16"), ".mp3": ("MP3", "MPEG_LAYER_III")}
MP3_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}
MP3_KBPS = 192


def output_format(out_path: Path, sample_rate: int) -> tuple[str, str]:
    fmt = FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise UserError(f"cannot tell the audio format of {out_path.name}: use a .wav or .mp3 name")
    if fmt[0] == "MP3" and sample_rate not in MP3_RATES:
        raise UserError(f"MP3 cannot store {sample_rate} Hz; use one of {', '.join(map(str, sorted(MP3_RATES)))}")
    folder = out_path.parent
    if not folder.is_dir():
        raise UserError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable")
    return fmt


def _pcm16(block: np.ndarray) -> bytes:
    return np.clip(np.rint(block * 32767.0), -32768, 32767).astype("<i2").tobytes()


class Writer:
    """One output file, fed float32 (n, 2) blocks in order; close() finishes it."""

    def __init__(self, path: Path, sample_rate: int, fmt: tuple[str, str]):
        self.lame = None
        self.file = None
        if fmt[0] == "MP3" and find_spec("lameenc") is not None:
            import lameenc

            self.lame = lameenc.Encoder()
            self.lame.set_bit_rate(MP3_KBPS)
            self.lame.set_in_sample_rate(sample_rate)
            self.lame.set_channels(2)
            self.lame.set_quality(5)  # LAME's default speed/quality trade: ~90x real time here
            self.file = open(path, "wb")
        else:
            import soundfile

            self.file = soundfile.SoundFile(str(path), "w", samplerate=sample_rate, channels=2,
                                            format=fmt[0], subtype=fmt[1])

    def write(self, block: np.ndarray) -> None:
        if self.lame is not None:
            self.file.write(self.lame.encode(_pcm16(block)))
        else:
            self.file.write(block)

    def close(self) -> None:
        if self.lame is not None:
            self.file.write(self.lame.flush())
        self.file.close()


def encode_mp3(audio: np.ndarray, sample_rate: int, block: int = 1 << 16) -> bytes:
    """A whole (n, channels) float array as MP3 bytes, encoded in blocks (no float64 copy of it)."""
    import lameenc

    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[:, None]
    enc = lameenc.Encoder()
    enc.set_bit_rate(MP3_KBPS)
    enc.set_in_sample_rate(sample_rate)
    enc.set_channels(audio.shape[1])
    enc.set_quality(5)
    out = bytearray()
    for i in range(0, len(audio), block):
        out += enc.encode(_pcm16(audio[i:i + block]))
    return bytes(out + enc.flush())
