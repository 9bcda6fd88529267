"""Interventions on a model: hooks (`hooks`: ablation, addition, their combination), the same edits baked into the
weights (`weight_edit`), the named catalogue of a run (`catalogue`), direction files (`directions`), and export of an
edited checkpoint (`export`)."""

from workbench.interventions.hooks import (
    BASELINE,
    Ablation,
    Addition,
    Combined,
    Intervention,
    ablation_hooks,
    addition_hooks,
    applied,
)

__all__ = ["BASELINE", "Ablation", "Addition", "Combined", "Intervention", "ablation_hooks", "addition_hooks",
           "applied"]
