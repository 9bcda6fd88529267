"""Interventions as TransformerLens forward hooks: directional ablation and activation addition.

`ablation_hooks` projects a direction out of the residual stream at every layer (block input, attention output and
MLP output), at every position, prompt and generated tokens alike. A direction may be one vector `[d_model]` or one
per batch row `[batch, d_model]`, which lets the sweep score many candidates in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from workbench.refusal_math import unit

Hook = tuple[str, Callable]
ABLATION_SITES = ("resid_pre", "attn_out", "mlp_out")


def _ablate(direction: Float[Tensor, "... d_model"]) -> Callable:
    def hook(x: Float[Tensor, "batch pos d_model"], hook) -> Float[Tensor, "batch pos d_model"]:
        c = direction.to(device=x.device, dtype=x.dtype)
        if c.dim() == 1:
            return x - (x @ c).unsqueeze(-1) * c
        c = c[:, None, :]  # one direction per batch row
        return x - (x * c).sum(-1, keepdim=True) * c

    return hook


def ablation_hooks(direction: Float[Tensor, "... d_model"], n_layers: int) -> list[Hook]:
    """x ← x − (x·ĉ)ĉ at the input of every block and on every attention and MLP output."""
    fn = _ablate(unit(direction.to(torch.float32)))
    return [(get_act_name(site, layer), fn) for layer in range(n_layers) for site in ABLATION_SITES]


def _add(vector: Float[Tensor, "... d_model"], coeff: float) -> Callable:
    def hook(x: Float[Tensor, "batch pos d_model"], hook) -> Float[Tensor, "batch pos d_model"]:
        v = vector.to(device=x.device, dtype=x.dtype)
        return x + coeff * (v if v.dim() == 1 else v[:, None, :])

    return hook


def addition_hooks(vector: Float[Tensor, "... d_model"], layer: int, coeff: float = 1.0) -> list[Hook]:
    """x ← x + α·v at the input of one block, every position (v raw, not normalized)."""
    return [(get_act_name("resid_pre", layer), _add(vector, coeff))]
