"""A run directory: every stage writes its artifacts here (atomically) and later stages and notebooks reload them.

Each artifact records the model fingerprint; a stage refuses a run directory made with another model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workbench import __version__
from workbench.errors import WorkbenchError

STAGE_COMMANDS = {
    "candidates.json": "workbench extract --model M --run DIR",
    "sweep.csv": "workbench sweep --run DIR",
    "selection.json": "workbench select --run DIR",
    "evaluation.csv": "workbench evaluate --run DIR",
    "capability.csv": "workbench capability --run DIR",
}


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def file(self, name: str) -> Path:
        return self.path / name

    def require(self, name: str) -> Path:
        path = self.file(name)
        if not path.exists():
            how = STAGE_COMMANDS.get(name, "the stage that makes it")
            raise WorkbenchError(f"{path} is missing: run `{how}` first")
        return path

    def read_json(self, name: str) -> dict:
        return json.loads(self.require(name).read_text(encoding="utf-8"))

    def model_record(self) -> dict:
        return self.read_json("candidates.json")["model"]

    def check_model(self, fingerprint: str, name: str) -> None:
        """Refuse a run directory whose candidates were extracted from a different model."""
        recorded = self.model_record()
        if recorded["fingerprint"] != fingerprint:
            raise WorkbenchError(
                f"run directory {self.path} was made with model {recorded['name']!r} (fingerprint "
                f"{recorded['fingerprint']}), not {name!r} ({fingerprint}): use a new --run directory"
            )


def provenance() -> dict:
    return {"workbench_version": __version__}
