"""The figures stage: every figure a run's artifacts allow, drawn by `workbench.viz.figures`, written as HTML (and
PNG where a static exporter works) into the run's `figures/` (or another folder)."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go

from workbench.errors import WorkbenchError
from workbench.io import atomic_write
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, never_done
from workbench.stages.evaluate import read_evaluation
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, stage_outputs
from workbench.stages.sweep import recorded_sweep
from workbench.viz.figures import (
    alpha_lambda_grid,
    diagnostics_heatmaps,
    frontier_figure,
    gate_heatmap,
    lambda_tradeoff,
    responses_figure,
    responses_table,
    save_figure,
    sweep_heatmaps,
    table1,
)

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig


def sweep_frame(run: RunDir) -> pd.DataFrame:
    """The rows Fig. 4 draws: `selection.csv` (with the rule's verdicts) where select ran, else `sweep.csv`."""
    from workbench.stages.select import read_selection
    from workbench.stages.sweep import read_sweep

    return read_selection(run) if run.file("selection.csv").exists() else read_sweep(run)


OVER_REFUSAL_SHOWCASE = ("xstest_safe", "or_bench_hard_test", "xstest_refused")
"""Datasets Fig. 2 shows responses on (the first the run evaluated)."""
CAPABILITY_COLUMNS = ("task", "intervention", "metric", "value")


@dataclass(frozen=True)
class NamedFigure:
    name: str
    """The file stem it is written under (`fig4_sweep`, ...)."""
    title: str
    figure: go.Figure


def read_capability(run: RunDir) -> pd.DataFrame | None:
    """`capability.csv`, checked, or None where the capability stage has not run."""
    if not run.file("capability.csv").exists():
        return None
    return run.read_csv("capability.csv", columns=CAPABILITY_COLUMNS, numeric_columns=("value",))


def read_run_completions(run: RunDir) -> pd.DataFrame | None:
    """Every finished completion file of the run, or None where there are none (rates copied without completions);
    damaged completion files are an error."""
    from workbench.stages.evaluate import read_completions

    return read_completions(run) if any(run.path.glob("completions/*/*.meta.json")) else None


def drawable_figures(run: RunDir) -> list[NamedFigure]:
    """Every figure the run's artifacts allow, in order: Fig. 4 (the sweep), the diagnostics, Fig. 3, Fig. 2, Fig. 5,
    the gate's probe grid and the frontier."""
    figures = []
    selection = (run.read_json("selection.json", keys=("selections", "r")) if run.file("selection.json").exists()
                 else None)
    if run.file("sweep.csv").exists():
        recorded = recorded_sweep(run).config if run.file("sweep.json").exists() else None
        fig = sweep_heatmaps(sweep_frame(run), selection, mode=recorded and recorded.mode,
                             n_screen=recorded and recorded.n_screen)
        figures.append(NamedFigure("fig4_sweep", "Fig. 4: the sweep", fig))
    if run.file("diagnostics.csv").exists():
        from workbench.stages.diagnose import read_diagnostics

        figures.append(NamedFigure("fig4_diagnostics", "Direction diagnostics",
                                   diagnostics_heatmaps(read_diagnostics(run), selection)))
    if run.file("evaluation.csv").exists():
        evaluation = read_evaluation(run)
        figures.append(NamedFigure("fig3_lambda", "Fig. 3: the λ trade-off",
                                   lambda_tradeoff(evaluation, read_capability(run))))
        completions = read_run_completions(run)
        shown = [d for d in OVER_REFUSAL_SHOWCASE if completions is not None and d in set(completions.dataset)]
        if shown:
            title = f"Responses across λ on {shown[0]} (Fig. 2)"
            figures.append(NamedFigure("fig2_responses", "Fig. 2: responses across λ",
                                       responses_figure(responses_table(completions, shown[0]), title)))
        figures.append(NamedFigure("fig5_alpha_lambda", "Fig. 5: α × λ", alpha_lambda_grid(evaluation)))
    if run.file("gate.csv").exists():
        from workbench.stages.gate import read_gate_grid

        figures.append(NamedFigure("gate_auroc", "The harmfulness gate's probe grid",
                                   gate_heatmap(read_gate_grid(run))))
    if run.file("frontier.csv").exists():
        from workbench.stages.frontier import read_frontier

        figures.append(NamedFigure("frontier", "The trade-off frontier", frontier_figure(read_frontier(run))))
    return figures


def run_figures(run: RunDir, out_dir: str | Path | None = None) -> list[Path]:
    """Every figure a run directory's artifacts allow (`drawable_figures`) and Table 1, written to `out_dir` (default:
    the run's `figures/`)."""
    run.require_dir()
    out = Path(out_dir) if out_dir is not None else run.file("figures")
    written: list[Path] = []
    for named in drawable_figures(run):
        written += save_figure(named.figure, out / named.name)
    if run.file("evaluation.csv").exists():
        table = table1(read_evaluation(run))
        written.append(atomic_write(out / "table1.csv", lambda tmp: table.to_csv(tmp)))
    if run.file("frontier.csv").exists():
        from workbench.stages.frontier import read_frontier

        frontier = read_frontier(run)
        written.append(atomic_write(out / "frontier.csv", lambda tmp: frontier.to_csv(tmp, index=False)))
    if not written:
        raise WorkbenchError(f"{run.path} has neither sweep.csv nor evaluation.csv, so there is nothing to draw: run "
                             f"`workbench run --run {run.path}` (or `workbench sweep`/`workbench evaluate`) first")
    return written


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    return f"{len(run_figures(run))} files -> {run.file('figures')}"


STAGE = Stage("figures", inputs=STAGE_INPUTS["figures"], outputs=stage_outputs("figures"),
              execute=_run, is_done=never_done, resumes=True)
