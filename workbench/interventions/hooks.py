"""Interventions as small objects composed freely, applied through TransformerLens forward hooks.

- `Ablation(ĉ)`: x ← x − (x·ĉ)ĉ at the input of every block and on every attention and MLP output, every position
  (prompt and generated tokens alike). With `offsets` μ [n_layer] it is the affine ablation of Marshall et al. 2024
  ("Refusal in LLMs: an affine function"): at the input of block l the projection is set to μ_l instead of 0,
  x ← x − (x·ĉ)ĉ + μ_l ĉ (attention and MLP outputs are still zero-ablated), with μ_l the harmless mean projection
  (`workbench.stages.token_means`). Zero-ablation moves every prompt by its projection, harmless ones too (they
  project far from 0 on some directions, so it acts partly as steering); the affine one leaves harmless prompts
  about where they were.
- `Ablation(ĉ, strength=β)` with β < 1: partial ablation x ← x − β(x·ĉ)ĉ on every write into the residual stream
  (the embedding, i.e. block 0's input, and every attention and MLP output), so the stream keeps (1 − β) of what is
  written along ĉ: the same edit as scaling ĉ out of every residual writer's weights by β (`weight_edit`); β = 1 is
  the ablation.
- `Addition(r, layer, α)`: x ← x + α·r at the input of one block, every position (r raw, not normalized).
- `Combined(parts)`: several at once (the paper's "ablate w' and add α·r"); `BASELINE` is the empty combination.

`applied(lm, intervention)` is a context manager that always removes its hooks, also on error. The same objects
are baked into weights by `workbench.interventions.weight_edit` (ablation exactly; addition as a forward pre-hook
on the block).

The low-level `ablation_hooks` accepts one direction per batch row `[batch, d_model]` (and then one row of offsets per
batch row, `[batch, n_layer]`), which lets the sweep score many candidates in one forward pass.
"""

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from workbench.errors import WorkbenchError
from workbench.method.refusal_math import remove_component, unit

Hook = tuple[str, Callable]
Directions = Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"]
"""One vector for every row, or one per batch row."""
Offsets = Float[Tensor, " n_layer"] | Float[Tensor, "batch n_layer"]
"""The affine ablation's projection μ_l at the input of each block: one row for every batch row, or one per row."""
ABLATION_SITES = ("resid_pre", "attn_out", "mlp_out")
ABLATION_TARGETS = ("zero", "harmless_mean")
"""What an ablation sets the projection on ĉ to: 0, or (at block inputs) the harmless mean μ_l."""


def _ablate(direction: Directions, offset: Float[Tensor, ""] | Float[Tensor, " batch"] | None = None) -> Callable:
    """x ← x − (x·ĉ)ĉ (+ offset·ĉ); `direction` unit, `offset` one number, or one per batch row."""

    def hook(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
        c = direction.to(device=x.device, dtype=x.dtype)
        mu = None if offset is None else offset.to(device=x.device, dtype=x.dtype)
        if c.dim() == 1:
            return remove_component(x, c, offset=mu)
        return remove_component(x, c[:, None, :], offset=None if mu is None else mu[:, None])  # one per batch row

    return hook


def _partial(direction: Float[Tensor, " d_model"], strength: float) -> Callable:
    """x ← x − β(x·ĉ)ĉ; `direction` unit."""

    def hook(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
        return remove_component(x, direction.to(device=x.device, dtype=x.dtype), strength)

    return hook


def partial_ablation_hooks(direction: Float[Tensor, " d_model"], n_layers: int, strength: float) -> list[Hook]:
    """x ← x − β(x·ĉ)ĉ on every write into the residual stream: block 0's input (the embedding) and every attention
    and MLP output. At β = 1 the stream then has no ĉ component anywhere, which is the ablation of `ablation_hooks`."""
    hook = _partial(unit(direction.to(torch.float32)), float(strength))
    return [(get_act_name("resid_pre", 0), hook)] + [(get_act_name(site, layer), hook) for layer in range(n_layers)
                                                      for site in ABLATION_SITES[1:]]


def ablation_hooks(direction: Directions, n_layers: int, offsets: Offsets | None = None) -> list[Hook]:
    """x ← x − (x·ĉ)ĉ at the input of every block and on every attention and MLP output; with `offsets` (one per
    layer, and per batch row when `direction` is), the block inputs get x − (x·ĉ)ĉ + μ_l ĉ instead."""
    c = unit(direction.to(torch.float32))
    zero = _ablate(c)
    if offsets is None:
        return [(get_act_name(site, layer), zero) for layer in range(n_layers) for site in ABLATION_SITES]
    if tuple(offsets.shape) != (*direction.shape[:-1], n_layers):
        raise WorkbenchError(f"ablation offsets have shape {tuple(offsets.shape)}, expected "
                             f"{(*direction.shape[:-1], n_layers)} (one per layer, and per direction if several)")
    offsets = offsets.to(device=c.device, dtype=torch.float32)
    hooks = []
    for layer in range(n_layers):
        hooks.append((get_act_name("resid_pre", layer), _ablate(c, offsets[..., layer])))
        hooks += [(get_act_name(site, layer), zero) for site in ABLATION_SITES[1:]]
    return hooks


def _add(vector: Directions, coeff: float) -> Callable:
    def hook(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
        v = vector.to(device=x.device, dtype=x.dtype)
        return x + coeff * (v if v.dim() == 1 else v[:, None, :])

    return hook


def addition_hooks(vector: Directions, layer: int, coeff: float = 1.0) -> list[Hook]:
    """x ← x + α·v at the input of one block, every position (v raw, not normalized)."""
    return [(get_act_name("resid_pre", layer), _add(vector, coeff))]


# ---- intervention objects -------------------------------------------------------------------------------


def _check_vector(vector: Tensor, what: str) -> None:
    if vector.dim() != 1:
        raise WorkbenchError(f"{what} must be one vector [d_model], got shape {tuple(vector.shape)}")
    if not bool(torch.isfinite(vector).all()) or float(vector.norm()) == 0.0:
        raise WorkbenchError(f"{what} is zero or not finite (a layer-0 template-position candidate?)")


def token_class_ablation_hooks(
    direction: Float[Tensor, " d_model"],
    prompt_offsets: Float[Tensor, " n_layer"],
    eoi_offsets: Float[Tensor, "n_eoi n_layer"],
    generated_offsets: Float[Tensor, " n_layer"],
) -> list[Hook]:
    """Affine ablation with one offset per layer *and token class* (the variant the single per-layer offset of
    `ablation_hooks` simplifies): in a forward pass over left-padded prompts, the block inputs of the last n_eoi
    positions (the EOI tokens, in order) get `eoi_offsets`, every earlier position `prompt_offsets`; a forward pass of
    one new token (KV-cached generation) gets `generated_offsets`. Attention and MLP outputs are zero-ablated. Hooks
    only: the offset depends on the position, so it is not a bias and cannot be baked into weights."""
    c = unit(direction.to(torch.float32))
    n_eoi = eoi_offsets.shape[0]

    def at_layer(layer: int) -> Callable:
        def hook(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
            cc = c.to(device=x.device, dtype=x.dtype)
            seq = x.shape[1]
            if seq == 1:
                offset = generated_offsets[layer].reshape(1)
            else:
                if seq < n_eoi:
                    raise WorkbenchError(f"token-class ablation: a prompt of {seq} tokens is shorter than the "
                                         f"{n_eoi} EOI tokens")
                offset = torch.cat([prompt_offsets[layer].expand(seq - n_eoi), eoi_offsets[:, layer]])
            offset = offset.to(device=x.device, dtype=x.dtype)
            return remove_component(x, cc, offset=offset)  # one offset per position

        return hook

    zero = _ablate(c)
    hooks = []
    for layer in range(prompt_offsets.shape[0]):
        hooks.append((get_act_name("resid_pre", layer), at_layer(layer)))
        hooks += [(get_act_name(site, layer), zero) for site in ABLATION_SITES[1:]]
    return hooks


@dataclass(frozen=True, eq=False)
class Ablation:
    """Directional ablation of one direction (normalized here) everywhere in the residual stream: to zero, or with
    `offsets` (the projection μ_l to set at the input of each block l) affine, to the harmless mean."""

    direction: Float[Tensor, " d_model"]
    label: str = "ablation"
    offsets: Float[Tensor, " n_layer"] | None = None
    """None: zero-ablation; else μ_l per layer: block inputs get x − (x·ĉ)ĉ + μ_l ĉ (affine ablation)."""
    strength: float = 1.0
    """β ∈ [0, 1]: the share of each residual write's ĉ component removed (1: the ablation; partial ablation below)."""

    def __post_init__(self):
        _check_vector(self.direction, f"direction of {self.label}")
        if not (math.isfinite(self.strength) and 0.0 <= self.strength <= 1.0):
            raise WorkbenchError(f"ablation strength β of {self.label} must be in [0, 1], got {self.strength}")
        if self.strength != 1.0 and self.offsets is not None:
            raise WorkbenchError(f"{self.label}: a partial ablation (β = {self.strength}) cannot be affine (offsets)")
        if self.offsets is not None and (self.offsets.dim() != 1 or not bool(torch.isfinite(self.offsets).all())):
            raise WorkbenchError(f"offsets of {self.label} must be one finite number per layer, got shape "
                                 f"{tuple(self.offsets.shape)}")

    @property
    def to(self) -> str:
        """What the projection on ĉ is set to: "zero" or "harmless_mean" (`ABLATION_TARGETS`)."""
        return "zero" if self.offsets is None else "harmless_mean"

    @property
    def parts(self) -> "tuple[Ablation | Addition, ...]":
        return (self,)

    def hooks(self, n_layers: int) -> list[Hook]:
        if self.offsets is not None and self.offsets.shape[0] != n_layers:
            raise WorkbenchError(f"{self.label}: {self.offsets.shape[0]} offsets for a model with {n_layers} layers "
                                 "(the offsets come from another model)")
        if self.strength != 1.0:
            return partial_ablation_hooks(self.direction, n_layers, self.strength)
        return ablation_hooks(self.direction, n_layers, self.offsets)


@dataclass(frozen=True, eq=False)
class Addition:
    """Activation addition x ← x + α·v at the input of block `layer`, every position."""

    vector: Float[Tensor, " d_model"]
    layer: int
    coeff: float = 1.0
    label: str = "addition"

    def __post_init__(self):
        _check_vector(self.vector, f"vector of {self.label}")
        if not math.isfinite(self.coeff):
            raise WorkbenchError(f"activation-addition coefficient α must be finite, got {self.coeff}")

    @property
    def parts(self) -> "tuple[Ablation | Addition, ...]":
        return (self,)

    def hooks(self, n_layers: int) -> list[Hook]:
        if not 0 <= self.layer < n_layers:
            raise WorkbenchError(f"{self.label}: layer {self.layer} is outside the model's 0..{n_layers - 1}")
        return addition_hooks(self.vector, self.layer, self.coeff)


@dataclass(frozen=True, eq=False)
class Combined:
    """Several interventions applied together (ablations and additions, in order)."""

    members: "tuple[Ablation | Addition | Combined, ...]" = field(default_factory=tuple)

    @property
    def parts(self) -> "tuple[Ablation | Addition, ...]":
        return tuple(p for m in self.members for p in m.parts)

    def hooks(self, n_layers: int) -> list[Hook]:
        """Ablation hooks first, then additions: at a block input the ablations act before the addition."""
        parts = self.parts
        ordered = [p for p in parts if isinstance(p, Ablation)] + [p for p in parts if isinstance(p, Addition)]
        return [h for p in ordered for h in p.hooks(n_layers)]


Intervention = Ablation | Addition | Combined
BASELINE = Combined()


@contextmanager
def applied(lm, intervention: Intervention) -> Iterator:
    """Run the hooked model under `intervention`; its hooks are removed on exit, also when the body raises."""
    hooks = intervention.hooks(lm.info.n_layers)
    with lm.model.hooks(fwd_hooks=hooks):
        yield lm
