"""Where the workbench keeps things: its cache, the benchmark data directory, the bundled data."""

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DataLocation:
    """Where benchmark files are read from (and `workbench datasets fetch` writes them), and why there."""

    path: Path
    from_env: bool
    """True: `WORKBENCH_DATA_DIR` names it; False: the default, `<workbench cache>/datasets`."""

    def describe(self) -> str:
        if self.from_env:
            return f"{self.path} (from {DATA_DIR_ENV})"
        return f"{self.path} (the default, <workbench cache>/datasets; {DATA_DIR_ENV} is not set)"


def benchmark_data_location() -> DataLocation:
    """`WORKBENCH_DATA_DIR` when set, otherwise `<workbench cache>/datasets`; whether or not it exists yet."""
    root = os.environ.get(DATA_DIR_ENV)
    if root:
        return DataLocation(Path(root).expanduser().resolve(), from_env=True)
    return DataLocation(cache_dir() / "datasets", from_env=False)


def benchmark_data_dir(required: bool = True) -> Path | None:
    """The local copy of the benchmark datasets, laid out like `shared/datasets`: `WORKBENCH_DATA_DIR` when set,
    otherwise `<workbench cache>/datasets` (where `workbench datasets fetch` writes). When the default does not exist
    yet: an error, or None with `required=False`; a `WORKBENCH_DATA_DIR` that is not a directory is always an error."""
    where = benchmark_data_location()
    if where.path.is_dir():
        return where.path
    if where.from_env:
        raise WorkbenchError(f"{DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]} is not a directory")
    if required:
        raise WorkbenchError(f"no benchmark data: {where.path} does not exist: run `workbench datasets fetch --paper` "
                             f"(or set {DATA_DIR_ENV} to a directory laid out like shared/datasets)")
    return None
