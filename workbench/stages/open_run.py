"""Open a finished run directory for reading (the notebooks' entry point): `$WORKBENCH_RUN`, default
`runs/default`, which `make run` writes (`workbench run --config configs/default.toml --run runs/default`)."""

import os
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import REPO_ROOT
from workbench.stages.run_dir import RunDir

RUN_ENV = "WORKBENCH_RUN"
DEFAULT_RUN = "runs/default"


def run_path(path: str | Path | None = None) -> Path:
    """`path`, else `$WORKBENCH_RUN`, else `runs/default`; a relative path is looked up in the working directory,
    then under the repository root (a notebook's kernel runs in `notebooks/`, `make run` writes from the root)."""
    chosen = Path(path if path is not None else os.environ.get(RUN_ENV) or DEFAULT_RUN).expanduser()
    if chosen.is_absolute() or chosen.exists():
        return chosen.resolve()
    return (REPO_ROOT / chosen).resolve()


def open_run(path: str | Path | None = None, needs: tuple[str, ...] = ("selection.json",)) -> RunDir:
    """The finished run at `run_path(path)`, refused with what to do when it lacks any artifact in `needs`."""
    run = RunDir(run_path(path))
    missing = [name for name in needs if not run.file(name).exists()]
    if missing:
        what = "does not exist" if not run.path.exists() else f"has no {missing[0]}"
        raise WorkbenchError(
            f"no finished run at {run.path} ({what}): run `make run` from the repository root to make "
            f"{DEFAULT_RUN} (the main job), or set {RUN_ENV} to a run directory made by "
            "`workbench run`"
        )
    return run
