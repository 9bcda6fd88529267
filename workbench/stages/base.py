"""The stage protocol: what a pipeline stage declares, so that the pipeline only sequences stages.

A `Stage` names the artifacts it reads (`inputs`, written by earlier stages) and writes (`outputs`), how it knows it
is done (`is_done`: its outputs exist and were made from the same inputs and settings), and runs. Stages that
resume piecewise (evaluate, capability: per dataset or task × intervention) say so with `resumes`; they are never
skipped as a whole, and a stage that re-runs does not clear their outputs (they check content signatures).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.models.loader import LoadedModel
from workbench.stages.run_dir import RunDir

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig


@dataclass(frozen=True)
class Stage:
    name: str
    inputs: tuple[str, ...]
    """Artifacts this stage reads (relative to the run directory)."""
    outputs: tuple[str, ...]
    """Artifacts this stage writes; cleared when an earlier stage re-runs (unless this stage `resumes`)."""
    execute: Callable[[LoadedModel, RunDir, "PipelineConfig"], str]
    """Run the stage with the pipeline config; returns a one-line summary for the run log."""
    is_done: Callable[[LoadedModel, RunDir, "PipelineConfig"], bool]
    """Whether the outputs exist and match the inputs and settings (then the pipeline skips the stage)."""
    resumes: bool = False
    """Resumes piecewise by content signature (never skipped whole, never cleared by an earlier stage)."""
    wanted: Callable[["PipelineConfig"], bool] = lambda config: True
    """Whether the pipeline config's settings need this stage (one that is not wanted is passed over)."""


def never_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    return False


def jsonable(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists), for comparing configs with recorded ones."""
    return json.loads(json.dumps(obj))
