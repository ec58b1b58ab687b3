"""Rehearsal while fine-tuning: the starting model's predictions on music it composed itself,
kept as a second loss beside your folder's (distillation; Hinton et al. 2015, "learning without
forgetting" in spirit, Li & Hoiem 2016). It needs no corpus, so it works on every user's machine.

Why: a change that forgets too much is blended back (adapt.blend, FORGET_BOUND), and on music
far from the shipped corpus that kept well under half of what was learned. Rehearsing the
starting model's own predictions at each step steers the change towards weights that learn the
folder without moving elsewhere, so more of it survives the guard (docs/benchmarks.md).

The pieces are composed at a seed of their own (not the own-music check's): the check stays
music the rehearsal never saw.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PIECES, SEED = 16, 20261208  # of finetune_data.OWN_EVENTS events each
# the rehearsal loss's weight beside your folder's (0: off). On the chorales 0.5 learned as much as
# 1 (held-out -0.80 / -0.79) and forgot a little more (+0.026 / +0.020, bound 0.05); the pieces it
# composes move less towards the folder than without rehearsal, alike at 0.25-1
# (docs/benchmarks.md, "Rehearsal at 0.5")
WEIGHT = 0.5
SHARE = 0.25  # rehearsal windows per step, as a share of --batch_size (at least 1)


class Rehearsal:
    """Windows of the starting model's own music with its next-event distributions (float16)."""

    def __init__(self, model, seq_len: int, weight: float = WEIGHT, pieces: int = PIECES, seed: int = SEED):
        from .finetune_data import own_music_items

        self.weight = weight
        pad = model.tokenizer.pad_id
        was_training = model.training
        model.eval()
        windows = []
        for item in own_music_items(model, pieces, seed)[0]:
            for s in range(0, len(item.tokens) - 1, seq_len):
                w = item.tokens[s:s + seq_len + 1]
                if len(w) > seq_len // 2:
                    windows.append(np.pad(w, (0, seq_len + 1 - len(w)), constant_values=pad))
        both = torch.from_numpy(np.stack(windows)) if windows else torch.full((0, seq_len + 1), pad)
        self.x, self.mask = both[:, :-1], both[:, 1:] != pad
        self.target = None  # an empty rehearsal is never asked for its loss (falsy)
        if windows:
            with torch.inference_mode():
                # the teacher: what the starting model predicts at each event of its own music
                self.target = torch.cat([F.log_softmax(model(self.x[i:i + 32])[0].float(), -1).half()
                                         for i in range(0, len(self.x), 32)])
        model.train(was_training)

    def __len__(self) -> int:
        return len(self.x)

    def loss(self, adapted, count: int, gen: torch.Generator) -> torch.Tensor:
        """KL(start || now) in nats/event over `count` windows drawn at random, times the weight."""
        pick = torch.randint(len(self.x), (count,), generator=gen)
        logits, _ = adapted.forward(self.x[pick])
        target = self.target[pick].float()
        kl = (target.exp() * (target - F.log_softmax(logits, -1))).sum(-1)
        mask = self.mask[pick]
        return self.weight * (kl * mask).sum() / mask.sum().clamp(min=1)


def windows_per_step(batch_size: int, share: float = SHARE) -> int:
    return max(1, round(batch_size * share))
