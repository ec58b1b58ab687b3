"""REMI (bars, positions, durations) through MidiTok, for score-like MIDI with a steady beat.

The notes are written to a 120 BPM score first, so REMI's beat grid is in that tempo's time.
"""

from __future__ import annotations

import numpy as np

from ..notes import Notes, notes_to_score, score_to_notes
from .base import Tokenizer, register


@register
class RemiTokenizer(Tokenizer):
    name = "remi"

    def __init__(self, beat_resolution: int = 8, num_velocities: int = 32, use_sustain_pedals: bool = False):
        from miditok import REMI, TokenizerConfig

        self.beat_resolution = int(beat_resolution)
        self.num_velocities = int(num_velocities)
        self.use_sustain_pedals = bool(use_sustain_pedals)
        cfg = TokenizerConfig(
            pitch_range=(21, 109),
            beat_res={(0, 4): self.beat_resolution, (4, 12): max(1, self.beat_resolution // 2)},
            num_velocities=self.num_velocities,
            special_tokens=["PAD", "BOS", "EOS"],
            use_sustain_pedals=self.use_sustain_pedals,
        )
        self.miditok = REMI(cfg)
        # Our specials must sit at the ids the rest of the package assumes.
        assert [self.miditok.vocab[s] for s in ("PAD_None", "BOS_None", "EOS_None")] == [0, 1, 2]

    @property
    def vocab_size(self) -> int:
        return len(self.miditok)

    def params(self) -> dict:
        return {
            "beat_resolution": self.beat_resolution,
            "num_velocities": self.num_velocities,
            "use_sustain_pedals": self.use_sustain_pedals,
        }

    def resolution(self) -> dict:
        return {"time_step_seconds": 0.5 / self.beat_resolution, "velocity_bins": self.num_velocities}

    def encode_notes(self, notes: Notes) -> np.ndarray:
        if len(notes) == 0:
            return np.array([self.bos_id, self.eos_id], dtype=np.uint16)
        seq = self.miditok.encode(notes_to_score(notes))
        ids = seq[0].ids if isinstance(seq, list) else seq.ids
        return np.array([self.bos_id, *ids, self.eos_id], dtype=np.uint16)

    def decode(self, tokens) -> Notes:
        ids = [int(t) for t in tokens if int(t) > 2]
        if not ids:
            return Notes.empty()
        try:
            score = self.miditok.decode([ids])
        except Exception:  # a malformed generated sequence decodes to nothing rather than crashing
            return Notes.empty()
        return score_to_notes(score.to("second"))

    def token_name(self, tok: int) -> str:
        return self.miditok[int(tok)]
