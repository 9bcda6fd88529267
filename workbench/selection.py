"""Step 6: pick the surgical false-refusal direction per λ with the paper's rule; every threshold is a field."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from safetensors.torch import save_file

from workbench.errors import WorkbenchError
from workbench.io import atomic_write, write_json
from workbench.run_dir import RunDir, provenance


@dataclass(frozen=True)
class SelectConfig:
    """The selection rule (paper defaults; Arditi et al. used max_ablation_kl 0.1 and the induce-refusal filter)."""

    prune_layer_fraction: float = 0.2
    """Drop candidates in the last fraction of layers."""
    max_ablation_kl: float = 0.2
    """Drop candidates whose ablation KL on harmless val exceeds this."""
    induce_refusal_filter: bool = False
    """Arditi's filter: adding the vector at its layer must make harmless prompts refused."""
    min_steering_refusal_score: float = 0.0
    """With the induce filter on: the steering refusal score must exceed this."""
    true_max_ablation_kl: float = 0.1
    """KL bound for the true-refusal (Arditi) direction, which is also selected for comparison."""


def apply_rule(frame: pd.DataFrame, config: SelectConfig) -> pd.DataFrame:
    """Set `kept` and `filter_reason` for every row; rows the sweep skipped or screened out keep their reason."""
    frame = frame.copy()
    n_layers = int(frame["layer"].max()) + 1
    first_pruned = math.ceil(n_layers * (1 - config.prune_layer_fraction))
    reasons = []
    for row in frame.itertuples():
        if row.stage != "full":
            reasons.append(row.filter_reason if isinstance(row.filter_reason, str) and row.filter_reason else
                           "not scored")
            continue
        bound = config.true_max_ablation_kl if row.vector == "true" else config.max_ablation_kl
        objective = row.ablation_refusal_score_harmful if row.vector == "true" else row.ablation_refusal_score
        if any(not math.isfinite(v) for v in (objective, row.ablation_kl)):
            reasons.append("NaN score")
        elif row.layer >= first_pruned:
            reasons.append(f"last {config.prune_layer_fraction:.0%} of layers")
        elif row.ablation_kl > bound:
            reasons.append(f"kl > {bound}")
        elif (config.induce_refusal_filter or row.vector == "true") and not math.isfinite(row.steering_refusal_score):
            reasons.append("steering not scored (sweep with --steer-false)")
        elif (config.induce_refusal_filter or row.vector == "true") and not (
            row.steering_refusal_score > config.min_steering_refusal_score
        ):
            reasons.append("does not induce refusal")
        else:
            reasons.append("")
    frame["filter_reason"] = reasons
    frame["kept"] = [r == "" for r in reasons]
    return frame


def _pick(frame: pd.DataFrame, vector: str, lam: float | None, objective: str) -> dict | None:
    rows = frame[(frame.vector == vector) & frame.kept]
    if lam is not None:
        rows = rows[rows.lam == lam]
    if rows.empty:
        return None
    best = rows.loc[rows[objective].idxmin()]
    out = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items() if k not in ("kept", "filter_reason")}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}  # JSON null


def select(run: RunDir, config: SelectConfig) -> dict:
    """Write `selection.json` and one unit direction per λ in `directions/lam_<λ>.safetensors`."""
    from workbench.extraction import load_candidates
    from workbench.refusal_math import partial_orthogonalize
    from workbench.sweep import read_sweep

    record = run.read_json("candidates.json")
    sweep = run.read_json("sweep.json")
    frame = read_sweep(run.require("sweep.csv"))
    frame = apply_rule(frame, config)
    atomic_write(run.file("sweep.csv"), lambda tmp: frame.to_csv(tmp, index=False))
    grids = load_candidates(run)
    positions = record["positions"]
    model = record["model"]
    selections, missing = [], []
    for lam in sorted({float(x) for x in frame.loc[frame.vector == "false", "lam"]}, reverse=True):
        choice = _pick(frame, "false", lam, "ablation_refusal_score")
        if choice is None:
            missing.append(lam)
            continue
        p = positions.index(int(choice["pos"]))
        layer = int(choice["layer"])
        direction = partial_orthogonalize(grids["false_refusal"][p, layer], grids["true_refusal"][p, layer], lam)
        meta = {"model": model["name"], "fingerprint": model["fingerprint"], "vector": "false", "lam": str(lam),
                "pos": str(choice["pos"]), "layer": str(layer), "run": str(run.path)}
        tensors = {"direction": direction.float().contiguous(),
                   "raw_false": grids["false_refusal"][p, layer].float().contiguous(),
                   "raw_true": grids["true_refusal"][p, layer].float().contiguous()}
        path = run.file(f"directions/lam_{lam}.safetensors")
        atomic_write(path, lambda tmp, t=tensors, m=meta: save_file(t, str(tmp), metadata=m))
        selections.append({"lam": lam, **{k: v for k, v in choice.items() if k not in ("vector", "lam")},
                           "direction_file": str(path.relative_to(run.path))})
    true_choice = _pick(frame, "true", None, "ablation_refusal_score_harmful")
    if true_choice is not None:
        p, layer = positions.index(int(true_choice["pos"])), int(true_choice["layer"])
        r = grids["true_refusal"][p, layer].float().contiguous()
        meta = {"model": model["name"], "fingerprint": model["fingerprint"], "vector": "true",
                "pos": str(true_choice["pos"]), "layer": str(layer), "run": str(run.path)}
        atomic_write(run.file("directions/true.safetensors"),
                     lambda tmp: save_file({"direction": r / r.norm(), "raw_true": r}, str(tmp), metadata=meta))
    if not selections:
        raise WorkbenchError(
            f"no false-refusal candidate passes the selection rule at any λ ({', '.join(map(str, missing))}); "
            f"see filter_reason in {run.file('sweep.csv')} and loosen e.g. --max-kl (now {config.max_ablation_kl})"
        )
    result = {"baseline": sweep["baseline_refusal_score"], "config": asdict(config), "selections": selections,
              "unselected_lams": missing, "true_refusal": true_choice, "model": model, **provenance()}
    write_json(run.file("selection.json"), result)
    return result


def load_direction(path, fingerprint: str | None = None, d_model: int | None = None) -> tuple[torch.Tensor, dict]:
    """A saved direction and its metadata; refuses a direction from another model or of the wrong width."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        direction = f.get_tensor("direction")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise WorkbenchError(f"direction {path} comes from model {meta.get('model')!r} (fingerprint "
                             f"{meta.get('fingerprint')}), not this one ({fingerprint})")
    if d_model is not None and direction.shape[-1] != d_model:
        raise WorkbenchError(f"direction {path} has width {direction.shape[-1]}, the model has d_model {d_model}")
    return direction, meta
