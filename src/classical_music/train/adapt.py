"""The ways `finetune` can change a trained model, chosen by --recipe: which weights learn, at
what rate, and (lora) through what. Every recipe ends as plain weights in an ordinary checkpoint.

    full  every weight, at a small rate (1e-4, decaying to 1e-5)
    top   the last LSTM layer and the output layer only (the lower layers' backward is skipped)
    lora  low-rank adapters on every LSTM and output matrix (W + B A, rank 16), merged into the
          weights when the model is kept, so nothing downstream knows they existed

The style conditions' embeddings and biases learn in every recipe, faster (COND_LR), so a new
composer name picks up its own colour in minutes. Whatever the recipe, a change that forgets
too much of the shipped corpus is kept only in part (blend, FORGET_BOUND); finetune's rehearsal
(train/rehearse.py) keeps most changes within it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RECIPES = ("full", "top", "lora")
# Chosen by bench/finetune.py --recipes on a quiet machine (docs/benchmarks.md, "Fine-tuning"),
# 3 minutes each. On the valid split's sequenced files (music like the shipped model's) 3e-4 made
# every held-out check worse (nothing learned), 1e-4 gained 0.012 and 3e-5 0.016. On Bach's
# chorales written from their scores (music from elsewhere) each rate gains far more but forgets
# too: blended back within FORGET_BOUND, 3e-5 kept 0.8 of its change for -0.48, 1e-4 0.5 for
# -0.50 (0.6: -0.55 at +0.042), 3e-4 0.4 for -0.58. 1e-4 learns on both kinds of folder. The conditions learn faster
# (COND_LR) but not at 5e-3: alone at that rate they raised the shipped corpus's valid by 0.02
# (the folder's composers are its composers too). The rate decays to a tenth by the end.
DEFAULT_RECIPE = "full"
LR = {"full": 1e-4, "top": 1e-4, "lora": 2e-3}
COND_LR = 5e-4
LORA_RANK = 16
# What finetune lets the shipped corpus's valid split rise by: a change that raises it more is
# kept only in part, the weights blended back towards the start (start + a (tuned - start), about
# the largest a within the bound, the rise growing with a; "WiSE-FT", Wortsman et al. 2022).
# Under the 0.05 users are promised, as it is measured on a subset of the split.
FORGET_BOUND = 0.04
BLEND_STEPS = 5  # bisections of a in [0, 1]: a to within 1/32, each one scoring of the subset


def blend(start: dict, tuned: dict, a: float) -> dict:
    """start + a (tuned - start), weight by weight (a: how much of the change is kept)."""
    return {k: start[k] + a * (v - start[k]) if v.is_floating_point() else v for k, v in tuned.items()}


@dataclass
class Adapted:
    """The model being fine-tuned: forward() for training, the parameters the optimizer moves,
    and weights() for the plain state to keep (adapters merged in)."""

    model: torch.nn.Module
    recipe: str
    lr: float
    groups: list
    lora: dict  # parameter name -> (A, B, scale); empty unless recipe == "lora"

    def forward(self, x, cond=None):
        if not self.lora:
            return self.model(x, cond=cond)
        from torch.func import functional_call

        return functional_call(self.model, self._merged(), (x,), {"cond": cond})

    def _merged(self) -> dict:
        params = dict(self.model.named_parameters())
        return {name: params[name] + scale * (b @ a) for name, (a, b, scale) in self.lora.items()}

    @torch.no_grad()
    def weights(self) -> dict:
        """A copy of the model's state with the adapters merged: what a checkpoint stores."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for name, t in self._merged().items():
            state[name] = t.detach().clone()
        return state

    def trainable(self) -> int:
        return sum(p.numel() for g in self.groups for p in g["params"])


def adapt(model, recipe: str, lr: float | None = None, seed: int = 0) -> Adapted:
    """Freeze what the recipe leaves alone and build the optimizer's parameter groups."""
    if recipe not in RECIPES:
        from ..errors import UserError

        raise UserError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    lr = lr or LR[recipe]
    cond = [*model.cond_embed.parameters(), *model.cond_bias.parameters()]
    cond_ids = {id(p) for p in cond}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in cond:
        p.requires_grad_(True)
    lora: dict = {}
    if recipe == "full":
        learn = [p for p in model.parameters() if id(p) not in cond_ids]
    elif recipe == "top":
        top = model.config.num_layers - 1
        learn = [p for n, p in model.lstm.named_parameters() if n.endswith(f"_l{top}")]
        learn += list(model.head.parameters()) + (list(model.proj.parameters()) if model.proj is not None else [])
    else:
        gen = torch.Generator().manual_seed(seed)
        learn = []
        for name, p in model.named_parameters():
            if p.dim() == 2 and name.startswith(("lstm.weight_", "head.weight")):
                out, inp = p.shape
                a = torch.nn.Parameter(torch.randn(LORA_RANK, inp, generator=gen) / inp ** 0.5)
                b = torch.nn.Parameter(torch.zeros(out, LORA_RANK))  # zero: step 0 is the model itself
                lora[name] = (a, b, 1.0)
                learn += [a, b]
        learn += [p for n, p in model.named_parameters() if p.dim() == 1 and n.startswith(("lstm.bias", "head.bias"))]
    for p in learn:
        p.requires_grad_(True)
    groups = [{"params": learn, "lr_scale": 1.0}]
    if cond:
        groups.append({"params": cond, "lr_scale": COND_LR / lr})
    return Adapted(model, recipe, lr, groups, lora)
