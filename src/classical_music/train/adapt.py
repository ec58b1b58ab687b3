"""The ways `finetune` can change a trained model, chosen by --recipe: which weights learn, at
what rate, and (lora) through what. Every recipe ends as plain weights in an ordinary checkpoint.

    full  every weight, at a small rate (3e-5, decaying to 3e-6)
    top   the last LSTM layer and the output layer only (the lower layers' backward is skipped)
    lora  low-rank adapters on every LSTM and output matrix (W + B A, rank 16), merged into the
          weights when the model is kept, so nothing downstream knows they existed

The style conditions' embeddings and biases learn in every recipe, faster (COND_LR), so a new
composer name picks up its own colour in minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RECIPES = ("full", "top", "lora")
# Chosen by bench/finetune.py --recipes on a quiet machine (docs/benchmarks.md, "Fine-tuning"):
# at 3e-4 every held-out check got worse and the shipped corpus's valid rose by 0.07; at 3e-5
# held-out gained most. The conditions learn faster (COND_LR) but not at 5e-3: alone at that rate
# they raised the shipped corpus's valid by 0.02 (the folder's composers are its composers too).
# The rate decays to a tenth by the end of the budget.
DEFAULT_RECIPE = "full"
LR = {"full": 3e-5, "top": 1e-4, "lora": 2e-3}
COND_LR = 5e-4
LORA_RANK = 16


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
