"""The harmfulness gate's math, pure tensors: a difference-of-means probe per (position, layer) cell, its scores,
AUROC per cell, and the threshold that lets through at most a stated share of harmful prompts.

A probe reads x·d̂ with d = μ(harmful) − μ(benign) (benign: harmless and pseudo-harmful prompts pooled), so harmful
prompts score high. The gate opens (applies the intervention it gates) for a prompt scoring below the threshold;
the threshold is set on harmful prompts so that at most a share `bound` of them score below it.
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.method.diagnostics import auroc
from workbench.method.refusal_math import unit


def mean_difference_probes(
    harmful: Float[Tensor, "n n_pos n_layer d_model"], benign: Float[Tensor, "m n_pos n_layer d_model"]
) -> Float[Tensor, "n_pos n_layer d_model"]:
    """Unit probe d̂ per cell, d = μ(harmful) − μ(benign) (float64 means; a zero difference stays zero)."""
    if harmful.shape[0] == 0 or benign.shape[0] == 0:
        raise WorkbenchError(f"the gate's probe needs harmful and benign prompts; got {harmful.shape[0]} harmful and "
                             f"{benign.shape[0]} benign")
    return unit(harmful.double().mean(0) - benign.double().mean(0))


def probe_scores(
    acts: Float[Tensor, "n n_pos n_layer d_model"], probes: Float[Tensor, "n_pos n_layer d_model"]
) -> Float[Tensor, "n n_pos n_layer"]:
    """x·d̂ of every prompt at every cell (float64)."""
    return torch.einsum("npld,pld->npl", acts.double(), probes.double())


def auroc_grid(harmful: Float[Tensor, "n n_pos n_layer"], benign: Float[Tensor, "m n_pos n_layer"]
               ) -> Float[Tensor, "n_pos n_layer"]:
    """AUROC per cell: P(a harmful prompt scores above a benign one), ties ½ (`diagnostics.auroc`)."""
    out = torch.empty(harmful.shape[1:], dtype=torch.float64)
    for p in range(harmful.shape[1]):
        for layer in range(harmful.shape[2]):
            out[p, layer] = auroc(harmful[:, p, layer], benign[:, p, layer])
    return out


def threshold_for_bound(harmful: Float[Tensor, " n"], bound: float) -> float:
    """The largest threshold t among the harmful scores (and −∞) with #{harmful scores < t} ≤ bound·n: a gate that
    opens below t lets through at most that share of these harmful prompts."""
    if not (math.isfinite(bound) and 0.0 <= bound <= 1.0):
        raise WorkbenchError(f"the gate's let-through bound must be in [0, 1], got {bound}")
    if harmful.numel() == 0:
        raise WorkbenchError("the gate's threshold needs at least one harmful prompt")
    scores = torch.sort(harmful.double()).values
    allowed = math.floor(bound * scores.numel() + 1e-9)  # harmful prompts that may score below t
    if allowed >= scores.numel():
        return math.inf
    return float(scores[allowed])  # exactly `allowed` scores lie strictly below it (ties stay closed)


def opens(scores: Float[Tensor, " n"], threshold: float) -> Tensor:
    """Where the gate opens: score < threshold (a prompt that reads as not harmful)."""
    return scores.double() < threshold


def open_rate(scores: Float[Tensor, " n"], threshold: float) -> float:
    """The share of prompts the gate opens for (for harmful prompts: the let-through rate)."""
    return float(opens(scores, threshold).double().mean()) if scores.numel() else float("nan")
