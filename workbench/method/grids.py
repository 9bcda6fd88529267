"""Candidate grids: the raw true-refusal (r) and false-refusal (w) vectors at every (EOI position, layer), and the
unit directions the sweep ablates. Pure tensors, no I/O (the extract stage writes and reads them)."""

import math
from dataclasses import dataclass, field

from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.method.refusal_math import partial_orthogonalize, unit

Grid = Float[Tensor, "n_pos n_layer d_model"]


@dataclass(frozen=True)
class CandidateGrids:
    """r = μ(harmful) − μ(harmless) and w = μ(pseudo-harmful) − μ(harmless) at every (position, layer), with the
    class means they came from (`means`: "harmful", "harmless", "pseudo_harmful"; may be empty)."""

    r: Float[Tensor, "n_pos n_layer d_model"]
    w: Float[Tensor, "n_pos n_layer d_model"]
    positions: list[int]
    """EOI positions as negative offsets, one per row of the grid (e.g. [-6, ..., -1])."""
    means: dict[str, Float[Tensor, "n_pos n_layer d_model"]] = field(default_factory=dict)

    def __post_init__(self):
        if self.r.shape != self.w.shape:
            raise ValueError(f"true and false grids differ in shape: {tuple(self.r.shape)} vs "
                             f"{tuple(self.w.shape)}")
        if len(self.positions) != self.r.shape[0]:
            raise ValueError(f"{len(self.positions)} positions for a grid of {self.r.shape[0]} rows")

    @property
    def n_pos(self) -> int:
        return self.r.shape[0]

    @property
    def n_layers(self) -> int:
        return self.r.shape[1]

    @property
    def d_model(self) -> int:
        return self.r.shape[2]

    def raw(self, vector: str) -> Grid:
        """The raw grid of "r" (r) or "w'" (w)."""
        return self.r if vector == "r" else self.w

    def directions(self, vector: str, lam: float | None = None) -> Grid:
        """Unit directions for one (vector, λ): r̂ for "r", w'(λ) for "w'"."""
        if vector == "r":
            return unit(self.r).float()
        if lam is None:
            raise ValueError("a false-refusal direction needs λ")
        return partial_orthogonalize(self.w, self.r, lam)

    def cell(self, vector: str, pos: int, layer: int, lam: float | None = None) -> Float[Tensor, " d_model"]:
        """The unit direction of one cell: r̂ ("r") or w′(λ) ("w'") at EOI offset `pos` (e.g. -1) and `layer`;
        a cell outside the grid or with a zero raw vector is a one-line error naming the grid's range."""
        if pos not in self.positions:
            raise WorkbenchError(f"position {pos} is not in the grid (EOI offsets {self.positions[0]} .. "
                                 f"{self.positions[-1]})")
        if not 0 <= layer < self.n_layers:
            raise WorkbenchError(f"layer {layer} is outside the grid's layers 0..{self.n_layers - 1}")
        index = self.positions.index(pos)
        if self.is_zero(vector, index, layer):
            raise WorkbenchError(f"the {vector} refusal vector at (pos {pos}, layer {layer}) is zero (the template "
                                 "tokens before the first layer are the same for every prompt): pick another cell")
        if vector == "r":
            return unit(self.r[index, layer]).float()
        if lam is None:
            raise ValueError("a false-refusal direction needs λ")
        return partial_orthogonalize(self.w[index, layer], self.r[index, layer], lam)

    def steering_vectors(self, vector: str, lam: float | None = None) -> Grid:
        """What steering adds: raw r, or w'(λ) rescaled to ‖w‖."""
        if vector == "r":
            return self.r
        return self.directions("w'", lam) * self.w.norm(dim=-1, keepdim=True)

    def is_zero(self, vector: str, pos_index: int, layer: int) -> bool:
        """A zero (or non-finite) raw vector: layer 0 at template tokens is the same for every prompt."""
        norm = float(self.raw(vector)[pos_index, layer].norm())
        return not math.isfinite(norm) or norm == 0.0
