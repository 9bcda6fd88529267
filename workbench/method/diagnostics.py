"""Why a false-refusal direction is (or is not) surgical, per (EOI position, layer): pure tensors in, one table out.

For each cell and each direction v ∈ {r̂, ŵ, ŵ′(λ)} of that cell (the candidate grids' own vectors, unit length):
- the mean and spread (standard deviation) of each prompt class's projection x·v̂ of `resid_pre` at that cell
  (harmless, harmful, pseudo-harmful). Zero-ablation sets x·v̂ to 0 for every prompt, so a class mean far from zero
  means ablation moves that class by that much along v̂: an edit that acts like steering, not a removal;
- separability (AUROC, the probability that a random prompt of the first class projects higher than one of the
  second; 0.5 = inseparable, 1 or 0 = perfectly separated): pseudo-harmful vs harmless (does v̂ carry the false-
  refusal feature at all?) and harmful vs pseudo-harmful (does it tell the two kinds of "sounds harmful" apart? A
  surgical ŵ′ should separate pseudo-harmful from harmless while r̂ separates harmful from pseudo-harmful);
- cos(r, w) of the cell (how much of w the λ = 1 orthogonalization removes).
"""

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from workbench.method.grids import CandidateGrids
from workbench.method.refusal_math import cosine, partial_orthogonalize, unit

CLASSES = ("harmless", "harmful", "pseudo_harmful")
SEPARATIONS = {"auroc_pseudo_vs_harmless": ("pseudo_harmful", "harmless"),
               "auroc_harmful_vs_pseudo": ("harmful", "pseudo_harmful"),
               "auroc_harmful_vs_harmless": ("harmful", "harmless")}
"""Each AUROC column: (class expected to project higher, the other class)."""
COLUMNS = ["pos", "layer", "vector", "lam", "cos_rw",
           *(f"{stat}_{c}" for c in CLASSES for stat in ("mean", "std")), *SEPARATIONS]  # fmt: skip


def auroc(higher: Float[Tensor, " n"], lower: Float[Tensor, " m"]) -> float:
    """P(a random element of `higher` > a random element of `lower`), ties counting ½ (the Mann–Whitney U
    statistic / (n·m)); NaN when either set is empty."""
    if higher.numel() == 0 or lower.numel() == 0:
        return float("nan")
    a, b = higher.double().unsqueeze(1), lower.double().unsqueeze(0)
    return float(((a > b).double() + 0.5 * (a == b).double()).mean())


def projections(
    acts: Float[Tensor, "n n_pos n_layer d_model"], directions: Float[Tensor, "n_pos n_layer d_model"]
) -> Float[Tensor, "n n_pos n_layer"]:
    """x·v̂ of every prompt at every cell onto that cell's unit direction (NaN where the direction is zero)."""
    d = directions.double()
    nonzero = (d != 0).any(dim=-1, keepdim=True)
    return torch.einsum("npld,pld->npl", acts.double(), torch.where(nonzero, unit(d), float("nan")))


def direction_diagnostics(
    grids: CandidateGrids,
    acts: dict[str, Float[Tensor, "_ n_pos n_layer d_model"]],
    lams: tuple[float, ...] = (1.0,),
) -> pd.DataFrame:
    """One row per (pos, layer, vector) with `COLUMNS`: vector "r", "w", and "w'" once per λ (`lam` set; NaN for r
    and w). `acts` holds `resid_pre` at every EOI position and layer for the prompts of each class in `CLASSES`."""
    missing = [c for c in CLASSES if c not in acts]
    if missing:
        raise ValueError(f"direction_diagnostics needs activations of every class; missing {missing}")
    r, w = grids.r.double(), grids.w.double()
    cos = cosine(r, w)
    vectors: list[tuple[str, float, Tensor]] = [("r", float("nan"), r), ("w", float("nan"), w)]
    vectors += [("w'", float(lam), partial_orthogonalize(w, r, lam)) for lam in lams]
    rows = []
    for name, lam, v in vectors:
        proj = {c: projections(acts[c], v) for c in CLASSES}
        for p, pos in enumerate(grids.positions):
            for layer in range(grids.n_layers):
                row = {"pos": pos, "layer": layer, "vector": name, "lam": lam, "cos_rw": float(cos[p, layer])}
                for c in CLASSES:
                    x = proj[c][:, p, layer]
                    row[f"mean_{c}"] = float(x.mean()) if x.numel() else float("nan")
                    row[f"std_{c}"] = float(x.std(unbiased=False)) if x.numel() else float("nan")
                for column, (hi, lo) in SEPARATIONS.items():
                    a, b = proj[hi][:, p, layer], proj[lo][:, p, layer]
                    row[column] = auroc(a, b) if not (torch.isnan(a).any() or torch.isnan(b).any()) else float("nan")
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
