"""The refusal vectors' names: one spelling in tables and files, one in what people read.

Tables and files (`sweep.csv`, `selection.json`, direction files, `evaluation.csv`, `frontier.csv`) write ASCII:

- `r`: the true-refusal vector r̂ (harmful − harmless);
- `w`: the raw false-refusal vector (pseudo-harmful − harmless);
- `w'`: w′(λ) = w − λ·proj_r(w), at its `lam`;
- in evaluation and frontier tables also `w'+r` (ablate w′, add α·r), `gated w'` and `none` (the baseline).

Figures and pages print the prime: `printed("w' λ=1.0")` is "w′ λ=1.0".
"""

from typing import Final, Literal

Vector = Literal["r", "w'"]
"""A candidate the sweep scores and the selection picks: r̂ ("r") or w′(λ) ("w'")."""
R: Final = "r"
W: Final = "w"
W_PRIME: Final = "w'"
NONE: Final = "none"
GATED_W_PRIME: Final = "gated w'"


def combined(parts: list[str]) -> str:
    """The label of several vectors applied together (`w'+r`), `none` for no vector."""
    return "+".join(parts) or NONE


def is_label(label: object) -> bool:
    """Whether `label` is a vector label a table may hold: `none`, `gated w'`, or r, w, w' joined by `+`."""
    if not isinstance(label, str):
        return False
    return label in (NONE, GATED_W_PRIME) or all(part in (R, W, W_PRIME) for part in label.split("+"))


def printed(label: str) -> str:
    """A label as figures and pages print it: w' with the prime (w′)."""
    return label.replace(W_PRIME, "w′")


def printed_candidate(vector: str, lam: float | None) -> str:
    """A candidate's vector as figures and progress bars name it: "r", or "w′ λ=<λ>"."""
    return "r" if vector == R else printed(f"{W_PRIME} λ={lam}")
