"""How the two candidate grids relate, per (EOI position, layer): ‖r‖, ‖w‖, cos(r, w) and the share of w that the
partial orthogonalization at λ = 1 keeps (‖w − proj_r(w)‖ / ‖w‖ = √(1 − cos²)). Pure tensors in, one table out."""

import pandas as pd
import torch

from workbench.method.grids import CandidateGrids
from workbench.method.refusal_math import cosine, remove_component, unit


def candidate_geometry(grids: CandidateGrids) -> pd.DataFrame:
    """One row per (pos, layer): `norm_r`, `norm_w`, `cos_rw`, `kept_at_lam1`; NaN where r or w is zero (layer 0
    at template tokens is the same for every prompt, so both differences vanish there)."""
    r, w = grids.r.to(torch.float64), grids.w.to(torch.float64)
    norm_r, norm_w = r.norm(dim=-1), w.norm(dim=-1)
    valid = (norm_r > 0) & (norm_w > 0)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    cos = cosine(r, w)
    perpendicular = remove_component(w, unit(r))
    kept = torch.where(valid, perpendicular.norm(dim=-1) / norm_w.clamp_min(1e-300), nan)
    rows = [{"pos": pos, "layer": layer, "norm_r": float(norm_r[p, layer]), "norm_w": float(norm_w[p, layer]),
             "cos_rw": float(cos[p, layer]), "kept_at_lam1": float(kept[p, layer])}
            for p, pos in enumerate(grids.positions) for layer in range(grids.n_layers)]
    return pd.DataFrame(rows)
