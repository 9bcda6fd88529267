"""Where the workbench keeps things: its cache, the benchmark data directory, the bundled data."""

import os
from pathlib import Path

from workbench.errors import WorkbenchError

DATA_DIR_ENV = "WORKBENCH_DATA_DIR"
CACHE_DIR_ENV = "WORKBENCH_CACHE_DIR"

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DATA_DIR = REPO_ROOT / "data"
ORGANISM_DIR = BUNDLED_DATA_DIR / "organism"
"""The model organisms' data, adapters and reports."""
PLANTED_ORGANISM_DIR = BUNDLED_DATA_DIR / "organism_planted"
"""The planted-trigger organism's own data (cooking refusals), adapter, card and report."""
WIRED_ORGANISM_DIR = BUNDLED_DATA_DIR / "organism_wired"
"""The wired-trigger control's wiring (three hand-set neurons on the safety organism), its record, card and report."""
DIRECTIONS_DIR = BUNDLED_DATA_DIR / "directions"
"""Directions selected by our runs and committed (`data/directions/<model>/lam_<λ>.safetensors`)."""


def cache_dir() -> Path:
    """The workbench cache (downloaded packages, dequantized models). `WORKBENCH_CACHE_DIR` overrides it."""
    root = os.environ.get(CACHE_DIR_ENV)
    path = Path(root) if root else Path.home() / ".cache" / "workbench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def benchmark_data_dir(required: bool = True) -> Path | None:
    """The local copy of the benchmark datasets, laid out like `shared/datasets`, from `WORKBENCH_DATA_DIR`."""
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        if required:
            raise WorkbenchError(
                f"{DATA_DIR_ENV} is not set: point it at a directory laid out like shared/datasets "
                "(see README, 'Data')"
            )
        return None
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise WorkbenchError(f"{DATA_DIR_ENV}={root} is not a directory")
    return path
