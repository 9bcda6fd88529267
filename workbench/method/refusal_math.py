"""The method's math, pure tensors, no I/O: means, candidate grids, partial orthogonalization, projection,
refusal score, KL. Everything else in the workbench calls these."""

import torch
from jaxtyping import Float, Int
from torch import Tensor

EPS = 1e-8


def add_to_sum(
    running_sum: Float[Tensor, "n_pos n_layer d_model"], acts: Float[Tensor, "batch n_pos n_layer d_model"]
) -> Float[Tensor, "n_pos n_layer d_model"]:
    """Streaming mean: add a batch of activations to a float64 running sum (divide by the count at the end)."""
    return running_sum + acts.to(torch.float64).sum(dim=0)


def mean_difference(
    mean_a: Float[Tensor, "n_pos n_layer d_model"], mean_b: Float[Tensor, "n_pos n_layer d_model"]
) -> Float[Tensor, "n_pos n_layer d_model"]:
    """A candidate grid: μ(a) − μ(b) at every (position, layer). harmful−harmless: r; pseudo-harmful−harmless: w."""
    return mean_a - mean_b


def partial_orthogonalize(
    w: Float[Tensor, "*grid d_model"], r: Float[Tensor, "*grid d_model"], lam: float
) -> Float[Tensor, "*grid d_model"]:
    """w' = w − λ·(⟨w,r⟩/(‖r‖²+ε))·r, then normalized: λ=1 makes w' ⟂ r, λ=0 gives ŵ. Per grid cell."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    w64, r64 = w.to(torch.float64), r.to(torch.float64)
    coeff = (w64 * r64).sum(-1, keepdim=True) / ((r64 * r64).sum(-1, keepdim=True) + EPS)
    return unit(w64 - lam * coeff * r64).to(w.dtype)


def unit(v: Float[Tensor, "*grid d_model"]) -> Float[Tensor, "*grid d_model"]:
    """v/‖v‖ along the last axis, computed in float64 and returned in v's dtype (a zero vector stays zero)."""
    v64 = v.to(torch.float64)
    return (v64 / v64.norm(dim=-1, keepdim=True).clamp_min(1e-300)).to(v.dtype)


def cosine(a: Float[Tensor, "*grid d_model"], b: Float[Tensor, "*grid d_model"]) -> Float[Tensor, " *grid"]:
    """cos(a, b) = a·b/(‖a‖‖b‖) along the last axis, float64; NaN where a or b is zero (the angle is undefined)."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    norm_a, norm_b = a64.norm(dim=-1), b64.norm(dim=-1)
    cos = (a64 * b64).sum(-1) / (norm_a * norm_b).clamp_min(1e-300)
    return torch.where((norm_a > 0) & (norm_b > 0), cos, torch.full_like(cos, float("nan")))


def remove_component(x: Float[Tensor, "*rows d_model"], c: Float[Tensor, "*crows d_model"], strength: float = 1.0,
                     offset: Tensor | None = None) -> Float[Tensor, "*rows d_model"]:
    """x − β(x·ĉ)ĉ (+ μĉ) along the last axis: the one projection behind every ablation (hooks, weight edits,
    adapters, the affine and partial variants). `c` is a unit direction, one for every row or one per leading row
    (shaped to broadcast against x, e.g. [batch, 1, d_model]); `offset` μ broadcasts against x less its last axis."""
    proj = (x @ c if c.dim() == 1 else torch.linalg.vecdot(x, c)).unsqueeze(-1)
    out = torch.addcmul(x, proj, c, value=-strength)  # x − β(x·ĉ)ĉ in one pass
    return out if offset is None else out.addcmul_(offset.unsqueeze(-1), c)


def affine_offsets(means: Float[Tensor, "n_layer d_model"], directions: Float[Tensor, "*batch d_model"]
                   ) -> Float[Tensor, "*batch n_layer"]:
    """The affine ablation's projections μ_l(ĉ) = M_l·ĉ at each block input, for each direction (normalized here),
    from the harmless token means M (float32)."""
    return unit(directions.to(torch.float32)) @ means.to(directions.device, torch.float32).T


def project_out(x: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"]) -> Float[Tensor, "... d_model"]:
    """Directional ablation x ← x − (x·ĉ)ĉ, with ĉ the normalized direction."""
    return remove_component(x, unit(direction).to(x.dtype))


def orthogonalize_output_matrix(
    weight: Float[Tensor, "d_model d_in"], direction: Float[Tensor, " d_model"], strength: float = 1.0
) -> Float[Tensor, "d_model d_in"]:
    """W ← W − βĉĉᵀW for a matrix that writes into the residual stream (torch Linear layout: out × in): each
    column, a residual vector, loses β of its ĉ component (in float64)."""
    c = unit(direction).to(torch.float64)
    return remove_component(weight.to(torch.float64).T, c, strength).T.to(weight.dtype)


def orthogonalize_embedding(
    embedding: Float[Tensor, "*rows d_model"], direction: Float[Tensor, " d_model"], strength: float = 1.0
) -> Float[Tensor, "*rows d_model"]:
    """Rows that are residual vectors (token embeddings, Conv1D writers, biases) with β of ĉ removed (in float64)."""
    c = unit(direction).to(torch.float64)
    return remove_component(embedding.to(torch.float64), c, strength).to(embedding.dtype)


def refusal_score(
    last_logits: Float[Tensor, "batch vocab"], refusal_tokens: Int[Tensor, " n_tokens"] | list[int]
) -> Float[Tensor, " batch"]:
    """log(p) − log(1−p) with p the probability mass of the refusal tokens at the last prompt position (float64)."""
    probs = torch.softmax(last_logits.to(torch.float64), dim=-1)
    p = probs[:, torch.as_tensor(refusal_tokens, device=probs.device)].sum(dim=-1)
    return torch.log(p + EPS) - torch.log(1 - p + EPS)


def kl_divergence(
    base_logits: Float[Tensor, "batch vocab"], new_logits: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """KL(base ‖ new) of the last-position next-token distributions, float64."""
    base = torch.log_softmax(base_logits.to(torch.float64), dim=-1)
    new = torch.log_softmax(new_logits.to(torch.float64), dim=-1)
    return (base.exp() * (base - new)).sum(dim=-1)
