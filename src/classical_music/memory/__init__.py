"""Memory of the piece: what the model may use of the piece's own past beyond its LSTM state.

* cache: the continuous cache of Grave, Joulin & Usunier (ICLR 2017). The top LSTM layer's output
  h_i at each of the last ``size`` events is kept with the event that followed it; the next event's
  distribution is p = (1 - lam) p_model + lam p_cache, where p_cache(w) is proportional to the sum
  of exp(theta h_t . h_i) over the stored i whose next event was w. Nothing is trained: theta, lam
  and size are tuned on valid pieces (`classical-music tune-memory`) and stored in a checkpoint's
  config.json as a ``memory`` block.
  What it recalls can be narrowed: ``gap`` leaves out the newest events (what the LSTM still
  remembers), ``events`` "notes" proposes key-downs only, mixed inside the key-down class, and
  ``recall`` "motifs" finds them not by similar states but by the piece's own interval patterns
  (Motifs: a copy model over its melody). Composing may read its own values: the block's
  ``compose`` part.
* dynamic: dynamic evaluation (Krause et al., ICML 2018, classical_music.dynamic): after each
  segment of a piece, one gradient step on that segment, the weights restored after each file.
* both: the two together (the cache holds the adapting model's states).

The scorer (scoring.score) and the sampler (generate.sampling.sample) call into this package; the
cache's arithmetic runs in float32 on whatever hidden states the forward gives (int8's included).
settings.py: the modes and one run's Memory, from the flags and config.json; cache.py: the
arithmetic, scoring and sampling; motifs.py: the motifs recall.
"""

from .cache import BLOCK, RECENT_KEYS, StepCache, cache_logprob, key_downs, mix, with_cache
from .motifs import MATCHES, MOTIF, Motifs, motif_logprob
from .settings import (COMPOSING_MODES, DEFAULT_LAM, DEFAULT_LR, DEFAULT_SEGMENT, DEFAULT_SIZE, DEFAULT_THETA,
                       EVENTS, MAX_SIZE, MODES, RECALLS, Memory, add_arguments, as_block, compose_block, composing,
                       from_args, resolve, stored, with_mode)

__all__ = ["BLOCK", "COMPOSING_MODES", "DEFAULT_LAM", "DEFAULT_LR", "DEFAULT_SEGMENT", "DEFAULT_SIZE",
           "DEFAULT_THETA", "EVENTS", "MATCHES", "MAX_SIZE", "MODES", "MOTIF", "Motifs", "RECALLS", "RECENT_KEYS",
           "Memory", "StepCache", "add_arguments", "as_block", "cache_logprob", "compose_block", "composing",
           "from_args", "key_downs", "mix", "motif_logprob", "resolve", "stored", "with_cache", "with_mode"]
