"""Direction diagnostics of a run (`workbench diagnose`): why the selected w′ is, or is not, surgical.

Reads the candidate grids (extract), runs the validation prompts of each class once with `resid_pre` captured at
every EOI position and layer, and writes `diagnostics.csv` (`workbench.method.diagnostics.COLUMNS`: per cell and
vector r, w, w′(λ): cos(r, w), each class's mean and spread of projection, AUROC separabilities) and
`diagnostics.json` (settings, prompt counts, the selected cells' rows). The figures stage draws it as heatmaps next
to Fig. 4 (`fig4_diagnostics`). One forward pass per validation prompt.
"""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch

from workbench.data import check_prompt_source, load_prompts
from workbench.errors import WorkbenchError
from workbench.io import atomic_write, file_sha256, write_json
from workbench.method.diagnostics import CLASSES, COLUMNS, direction_diagnostics
from workbench.method.prompt_filter import keep_for
from workbench.models.activations import activation_batches
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, jsonable
from workbench.stages.extract import load_candidates
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs
from workbench.stages.sweep import SweepConfig, recorded_sweep

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig


@dataclass(frozen=True)
class DiagnoseConfig:
    """Which prompts the diagnostics project; None takes the run's sweep setting (its validation sets and λs)."""

    harmless_val: str | None = None
    """Harmless prompts (None: the sweep's `harmless_val`)."""
    harmful_val: str | None = None
    """Harmful prompts (None: the sweep's `harmful_val`)."""
    pseudo_harmful_val: str | None = None
    """Pseudo-harmful prompts (None: the sweep's `pseudo_harmful_val`)."""
    n_val: int | None = 32
    """Prompts per class before filtering (None: all)."""
    filter_val: bool = True
    """The paper's filter, as for validation: harmful/pseudo-harmful prompts refused (score > 0), harmless not."""
    lams: tuple[float, ...] | None = None
    """λ values of w′ to diagnose (None: the sweep's)."""
    batch_size: int = 32
    """Prompts per forward pass."""

    def validate(self) -> None:
        if self.n_val is not None and self.n_val < 1:
            raise WorkbenchError(f"diagnose n_val must be at least 1 (or None for all), got {self.n_val}")
        if self.batch_size < 1:
            raise WorkbenchError(f"diagnose batch_size must be at least 1, got {self.batch_size}")
        for lam in self.lams or ():
            if not 0.0 <= lam <= 1.0:
                raise WorkbenchError(f"λ must be in [0, 1], got {lam}")
        for name in (self.harmless_val, self.harmful_val, self.pseudo_harmful_val):
            if name is not None:
                check_prompt_source(name)


def resolved(run: RunDir, config: DiagnoseConfig) -> DiagnoseConfig:
    """`config` with every None filled from the run's sweep (`sweep.json`), or the sweep defaults without one."""
    sweep = recorded_sweep(run).config if run.file("sweep.json").exists() else SweepConfig()
    return DiagnoseConfig(
        harmless_val=config.harmless_val or sweep.harmless_val, harmful_val=config.harmful_val or sweep.harmful_val,
        pseudo_harmful_val=config.pseudo_harmful_val or sweep.pseudo_harmful_val, n_val=config.n_val,
        filter_val=config.filter_val,
        lams=config.lams or tuple(float(x) for x in sweep.lams), batch_size=config.batch_size)


def diagnose(lm: LoadedModel, run: RunDir, config: DiagnoseConfig | None = None) -> pd.DataFrame:
    """Write `diagnostics.csv` and `diagnostics.json` for the run; returns the table."""
    config = resolved(run.require_dir(), config or DiagnoseConfig())
    config.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    grids = load_candidates(run)
    acts, counts = {}, {}
    for c in CLASSES:
        name = getattr(config, f"{c}_val")
        prompts = [p.instruction for p in load_prompts(name, limit=config.n_val)]
        batches = activation_batches(lm, prompts, keep_for(c, config.filter_val), config.batch_size,
                                     desc=f"diagnose {c}")
        acts[c] = torch.cat([a for a, _ in batches]).float()
        counts[c] = {"dataset": name, "total": len(prompts), "kept": int(acts[c].shape[0])}
        if acts[c].shape[0] < 2:
            raise WorkbenchError(f"diagnose: the filter kept {acts[c].shape[0]} {c} prompt(s) of {name!r}; give "
                                 "more prompts (--n-val) or --no-filter-val")
    table = direction_diagnostics(grids, acts, config.lams)
    atomic_write(run.file("diagnostics.csv"), lambda tmp: table.to_csv(tmp, index=False))
    selected = []
    if run.file("selection.json").exists():
        for s in run.read_json("selection.json", keys=("selections", "r"))["selections"]:
            rows = table[(table.pos == int(s["pos"])) & (table.layer == int(s["layer"]))
                         & ((table.vector != "w'") | (table.lam == float(s["lam"])))]
            selected.append({"lam": float(s["lam"]), "pos": int(s["pos"]), "layer": int(s["layer"]),
                             "rows": rows.to_dict(orient="records")})
    write_json(run.file("diagnostics.json"), {
        "config": asdict(config), "model": lm.info.to_dict(), "prompt_counts": counts, "selected": selected,
        "candidates_sha256": file_sha256(run.file("candidates.safetensors")), **provenance()})
    return table


def read_diagnostics(run: RunDir) -> pd.DataFrame:
    return run.read_csv("diagnostics.csv", columns=COLUMNS, text_columns=("vector",),
                        numeric_columns=[c for c in COLUMNS if c != "vector"])


def _is_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    if not (run.file("diagnostics.csv").exists() and run.file("diagnostics.json").exists()):
        return False
    try:
        record = run.read_json("diagnostics.json", keys=("config", "candidates_sha256"))
        read_diagnostics(run)
    except WorkbenchError:
        return False
    return (record["config"] == jsonable(asdict(resolved(run, config.diagnose)))
            and record["candidates_sha256"] == file_sha256(run.file("candidates.safetensors")))


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    table = diagnose(lm, run, config.diagnose)
    return f"{len(table)} rows -> {run.file('diagnostics.csv')}"


STAGE = Stage("diagnose", inputs=STAGE_INPUTS["diagnose"], outputs=stage_outputs("diagnose"),
              execute=_run, is_done=_is_done)
