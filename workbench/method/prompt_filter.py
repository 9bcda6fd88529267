"""The paper's refusal-score filter of prompts: a harmful or pseudo-harmful prompt counts only when the unmodified
model refuses it (refusal score > 0), a harmless one only when the model complies (score < 0). The one map from a
prompt class to its filter, read by extraction, validation, diagnostics, token means and re-ranking."""

from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from workbench.errors import WorkbenchError

Keep = Literal["refuses", "complies"]
"""Which prompts a filter keeps: those the model refuses (score > 0) or those it complies with (score < 0)."""

KEEP_BY_CLASS: dict[str, Keep] = {"harmful": "refuses", "pseudo_harmful": "refuses", "harmless": "complies"}
"""Each prompt class's filter."""


def keep_for(kind: str, filtered: bool = True) -> Keep | None:
    """The filter of prompt class `kind` ("harmful", "pseudo_harmful", "harmless"); None when not `filtered`."""
    if kind not in KEEP_BY_CLASS:
        raise WorkbenchError(f"no refusal-score filter for prompt class {kind!r}; known classes: "
                             f"{', '.join(KEEP_BY_CLASS)}")
    return KEEP_BY_CLASS[kind] if filtered else None


def kept(scores: Float[Tensor, " batch"], keep: Keep | None) -> Bool[Tensor, " batch"]:
    """The prompts a filter keeps, by refusal score: all of them for None, score > 0 for "refuses", score < 0 for
    "complies" (a score of exactly 0 is kept by neither)."""
    if keep is None:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if keep == "refuses":
        return scores > 0
    if keep == "complies":
        return scores < 0
    raise ValueError(f"keep must be 'refuses', 'complies' or None, got {keep!r}")
