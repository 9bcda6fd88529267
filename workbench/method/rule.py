"""The selection rule, in one place: which candidates are eligible and which one is picked, per vector.

The sweep takes the same `SelectionRule` to choose which candidates get full scores (and when to stop), and the
select stage applies it, so a sweep is always screened for the rule that will select from it. Pure pandas, no I/O.

Paper defaults (Wang et al. 2025): drop the last 20% of layers and ablation KL > 0.2 on harmless val, pick the
lowest pseudo-harmful ablation refusal score per λ. Arditi et al. 2024 (the true-refusal pick, kept for comparison):
KL ≤ 0.1, adding the vector must induce refusal, lowest harmful ablation refusal score.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from workbench.errors import WorkbenchError

OBJECTIVES = {"false": "ablation_refusal_score", "true": "ablation_refusal_score_harmful"}
"""The score each vector's pick minimizes: w' on pseudo-harmful val, r on harmful val."""


@dataclass(frozen=True)
class SelectionRule:
    """The selection rule (paper defaults; Arditi et al. used max_ablation_kl 0.1 and the induce-refusal filter)."""

    prune_layer_fraction: float = 0.2
    """Drop candidates in the last fraction of layers."""
    max_ablation_kl: float = 0.2
    """Drop false-refusal candidates whose ablation KL on harmless val exceeds this."""
    induce_refusal_filter: bool = False
    """Arditi's filter for w' too: adding the vector at its layer must make harmless prompts refused."""
    min_steering_refusal_score: float = 0.0
    """With the induce filter (always for r): the steering refusal score must exceed this."""
    true_max_ablation_kl: float = 0.1
    """KL bound for the true-refusal (Arditi) direction, which is also selected for comparison."""

    def validate(self) -> None:
        if not 0.0 <= self.prune_layer_fraction < 1.0:
            raise WorkbenchError(f"prune_layer_fraction must be in [0, 1), got {self.prune_layer_fraction}")
        for name in ("max_ablation_kl", "true_max_ablation_kl"):
            if not getattr(self, name) > 0:
                raise WorkbenchError(f"{name} must be > 0, got {getattr(self, name)}")

    def first_pruned_layer(self, n_layers: int) -> int:
        """Layers ≥ this are dropped (the last `prune_layer_fraction` of `n_layers`)."""
        return math.ceil(n_layers * (1 - self.prune_layer_fraction))

    def kl_bound(self, vector: str) -> float:
        return self.true_max_ablation_kl if vector == "true" else self.max_ablation_kl

    @staticmethod
    def objective(vector: str) -> str:
        return OBJECTIVES[vector]

    def needs_steering(self, vector: str) -> bool:
        """Whether the rule reads a candidate's steering score (r always; w' only with the induce filter)."""
        return vector == "true" or self.induce_refusal_filter

    def prune_reason(self, layer: int, n_layers: int) -> str:
        return f"last {self.prune_layer_fraction:.0%} of layers" if layer >= self.first_pruned_layer(n_layers) else ""

    def reason(self, row: Mapping, n_layers: int) -> str:
        """Why a fully scored candidate is not eligible ("" if it is)."""
        vector = row["vector"]
        bound = self.kl_bound(vector)
        objective, kl = row.get(self.objective(vector), math.nan), row.get("ablation_kl", math.nan)
        if any(not _finite(v) for v in (objective, kl)):
            return "NaN score"
        if pruned := self.prune_reason(int(row["layer"]), n_layers):
            return pruned
        if kl > bound:
            return f"kl > {bound}"
        if self.needs_steering(vector):
            steering = row.get("steering_refusal_score", math.nan)
            if not _finite(steering):
                return "steering not scored (sweep with --steer-false)"
            if not steering > self.min_steering_refusal_score:
                return "does not induce refusal"
        return ""

    def eligible(self, row: Mapping, n_layers: int) -> bool:
        return row.get("stage") == "full" and self.reason(row, n_layers) == ""

    def apply(self, sweep: pd.DataFrame, n_layers: int | None = None) -> pd.DataFrame:
        """The sweep's rows with `kept` and `filter_reason`: rows the sweep did not fully score keep the sweep's
        reason (`sweep_note`: skipped, pruned, screened out)."""
        frame = sweep.copy()
        n_layers = int(frame["layer"].max()) + 1 if n_layers is None else n_layers
        reasons = []
        for row in frame.to_dict("records"):
            if row["stage"] != "full":
                note = row.get("sweep_note")
                reasons.append(note if isinstance(note, str) and note else "not scored")
            else:
                reasons.append(self.reason(row, n_layers))
        frame["kept"] = [r == "" for r in reasons]
        frame["filter_reason"] = reasons
        return frame

    def pick(self, applied: pd.DataFrame, vector: str, lam: float | None = None) -> dict | None:
        """The eligible row with the lowest objective (from `apply`'s output), as a JSON-ready dict; None if none."""
        rows = applied[(applied.vector == vector) & applied.kept]
        if lam is not None:
            rows = rows[rows.lam == lam]
        if rows.empty:
            return None
        best = rows.loc[rows[self.objective(vector)].idxmin()]
        out = {k: (v.item() if hasattr(v, "item") else v) for k, v in best.items()
               if k not in ("kept", "filter_reason", "sweep_note")}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
