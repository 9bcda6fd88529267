"""The selection rule, in one place: which candidates are eligible and which one is picked, per vector.

The sweep takes the same `SelectionRule` to choose which candidates get full scores (and when to stop), and the
select stage applies it, so a sweep is always screened for the rule that will select from it. Pure pandas, no I/O.

Paper defaults (Wang et al. 2025): drop the last 20% of layers and ablation KL > 0.2 on harmless val, pick the
lowest pseudo-harmful ablation refusal score per λ. The surgical option (`max_harmful_drop`) also drops candidates
whose ablation lowers the harmful-val refusal score by more than a margin; `rerank_top_k` re-ranks the best k by a
small generation check (run by the select stage, which has the model). Arditi et al. 2024 (the true-refusal pick,
kept for comparison): KL ≤ 0.1, adding the vector must induce refusal, lowest harmful ablation refusal score.
"""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pandas as pd

from workbench.errors import WorkbenchError

OBJECTIVES = {"w'": "ablation_refusal_score_pseudo_harmful", "r": "ablation_refusal_score_harmful"}
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
    r_max_ablation_kl: float = 0.1
    """KL bound for the true-refusal (Arditi) direction, which is also selected for comparison."""
    max_harmful_drop: float | None = None
    """The surgical option: a false-refusal candidate must keep the harmful-val ablation refusal score within this
    many logits of its unablated baseline (None: the paper's rule, which does not look at harmful prompts)."""
    rerank_top_k: int = 0
    """With k > 1: the k eligible candidates with the lowest objective per λ are re-ranked by a small generation
    check on validation prompts (the select stage does it; `rerank_*` below), instead of taking the lowest score."""
    rerank_n: int = 16
    """Prompts per validation set (pseudo-harmful, harmful) in the generation check."""
    rerank_max_new_tokens: int = 32
    """Greedy tokens per completion in the generation check."""
    rerank_max_harmful_rise: float = 0.0
    """A re-ranked candidate may raise harmful-val compliance by at most this fraction over the baseline's."""
    rerank_judge: str = "keywords"
    """The judge of the generation check (a registered judge name; the model judge with its default options)."""

    def validate(self) -> None:
        if not 0.0 <= self.prune_layer_fraction < 1.0:
            raise WorkbenchError(f"prune_layer_fraction must be in [0, 1), got {self.prune_layer_fraction}")
        for name in ("max_ablation_kl", "r_max_ablation_kl"):
            if not getattr(self, name) > 0:
                raise WorkbenchError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_harmful_drop is not None and not (math.isfinite(self.max_harmful_drop)
                                                      and self.max_harmful_drop >= 0):
            raise WorkbenchError(f"max_harmful_drop must be a number ≥ 0 (logits), got {self.max_harmful_drop}")
        if self.rerank_top_k < 0 or self.rerank_top_k == 1:
            raise WorkbenchError(f"rerank_top_k must be 0 (off) or at least 2, got {self.rerank_top_k}")
        for name in ("rerank_n", "rerank_max_new_tokens"):
            if getattr(self, name) < 1:
                raise WorkbenchError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.rerank_max_harmful_rise <= 1.0:
            raise WorkbenchError(f"rerank_max_harmful_rise must be in [0, 1], got {self.rerank_max_harmful_rise}")

    @classmethod
    def from_record(cls, record: Mapping) -> "SelectionRule":
        """The rule a `sweep.json`/`selection.json` recorded: every field and nothing else, or a WorkbenchError
        naming the first missing or unknown one (a record from another workbench version)."""
        fields = set(asdict(cls()))
        missing, unknown = sorted(fields - set(record)), sorted(set(record) - fields)
        if missing or unknown:
            raise WorkbenchError(f"the recorded selection rule {'lacks' if missing else 'has unknown'} field "
                                 f"{(missing or unknown)[0]!r} (made by another workbench version)")
        return cls(**record)

    @staticmethod
    def screening_record(record: Mapping) -> dict:
        """What of a recorded rule decides a sweep's finalists: every field but the generation re-ranking, which
        only the select stage reads."""
        return {k: v for k, v in record.items() if not k.startswith("rerank_")}

    def first_pruned_layer(self, n_layers: int) -> int:
        """Layers ≥ this are dropped (the last `prune_layer_fraction` of `n_layers`)."""
        return math.ceil(n_layers * (1 - self.prune_layer_fraction))

    def kl_bound(self, vector: str) -> float:
        return self.r_max_ablation_kl if vector == "r" else self.max_ablation_kl

    @staticmethod
    def objective(vector: str) -> str:
        return OBJECTIVES[vector]

    def needs_steering(self, vector: str) -> bool:
        """Whether the rule reads a candidate's steering score (r always; w' only with the induce filter)."""
        return vector == "r" or self.induce_refusal_filter

    def prune_reason(self, layer: int, n_layers: int) -> str:
        return f"last {self.prune_layer_fraction:.0%} of layers" if layer >= self.first_pruned_layer(n_layers) else ""

    def reason(self, row: Mapping, n_layers: int, harmful_baseline: float | None = None) -> str:
        """Why a fully scored candidate is not eligible ("" if it is). `harmful_baseline`: the unablated mean
        refusal score on harmful val (needed by `max_harmful_drop`)."""
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
                return "steering not scored (sweep with --steer-w)"
            if not steering > self.min_steering_refusal_score:
                return "does not induce refusal"
        if vector == "w'" and self.max_harmful_drop is not None:
            if harmful_baseline is None or not _finite(harmful_baseline):
                raise WorkbenchError("the surgical rule (max_harmful_drop) needs the harmful-val baseline refusal "
                                     "score (sweep.json's baseline_refusal_score)")
            harmful = row.get("ablation_refusal_score_harmful", math.nan)
            if not _finite(harmful):
                return "harmful val not scored"
            if harmful < harmful_baseline - self.max_harmful_drop:
                return f"harmful score drops > {self.max_harmful_drop}"
        return ""

    def eligible(self, row: Mapping, n_layers: int, harmful_baseline: float | None = None) -> bool:
        return row.get("stage") == "full" and self.reason(row, n_layers, harmful_baseline) == ""

    def apply(self, sweep: pd.DataFrame, n_layers: int | None = None,
              harmful_baseline: float | None = None) -> pd.DataFrame:
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
                reasons.append(self.reason(row, n_layers, harmful_baseline))
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
        return row_record(rows.loc[rows[self.objective(vector)].idxmin()])


def row_record(row: pd.Series) -> dict:
    """A sweep row as a JSON-ready selection record (no verdict columns; NaN as None)."""
    out = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
           if k not in ("kept", "filter_reason", "sweep_note")}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
