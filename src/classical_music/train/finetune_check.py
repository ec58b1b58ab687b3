"""How `finetune` judges a model: nats/event of scored pieces (as `evaluate` scores them), and
the forgetting guard that keeps only part of a change which forgot too much (adapt.blend)."""

from __future__ import annotations

import torch

from . import adapt as recipes


def int8_scoring() -> bool:
    from ..decoding import int8_available

    return int8_available()


@torch.inference_mode()
def nats_per_event(model, items, adapted=None) -> float:
    """Mean nats/event of items, each file from its start with the state carried (int8 on CPU)."""
    from .. import scoring

    if adapted is not None and adapted.lora:  # score the merged weights
        scratch = type(model)(model.config)
        scratch.load_state_dict(adapted.weights())
        model = scratch.eval()
    forward = scoring.make_forward(model, "int8" if int8_scoring() else "float32", "cpu")
    total = events = 0.0
    for _, nats, n in scoring.score(forward, sorted(items, key=lambda i: -len(i.tokens)),
                                    batch_size=max(1, len(items)), chunk=256):
        total, events = total + nats, events + n
    return total / max(1.0, events)


def hold_forgetting(model, start: dict, tuned: dict, what: str, ref_items, shipped_ref: float,
                     log) -> tuple[float, float]:
    """(share of the change kept, the check's score with it): all of it when the check (the
    shipped corpus's valid subset, or the base model's own music) rises by at most FORGET_BOUND,
    else the weights blended back (adapt.blend) by bisection to about the largest share within
    it. Leaves the model holding those weights."""
    ref = nats_per_event(model, ref_items)
    if ref - shipped_ref <= recipes.FORGET_BOUND:
        return 1.0, ref
    whole = ref
    lo, hi, lo_ref = 0.0, 1.0, shipped_ref
    for _ in range(recipes.BLEND_STEPS):
        mid = (lo + hi) / 2
        model.load_state_dict(recipes.blend(start, tuned, mid))
        r = nats_per_event(model, ref_items)
        if r - shipped_ref <= recipes.FORGET_BOUND:
            lo, lo_ref = mid, r
        else:
            hi = mid
    model.load_state_dict(recipes.blend(start, tuned, lo))
    log(f"the whole change raised {what} by {whole - shipped_ref:+.3f}: kept {lo:.0%} of it "
        f"({lo_ref - shipped_ref:+.3f}, within +{recipes.FORGET_BOUND:g})")
    return lo, lo_ref
