"""The figures stage: every figure a run's artifacts allow, drawn by `workbench.viz.figures`, written as HTML (and
PNG where a static exporter works) into the run's `figures/` (or another folder)."""

from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.io import atomic_write
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, never_done
from workbench.stages.evaluate import EVALUATION_COLUMNS
from workbench.stages.run_dir import RunDir
from workbench.viz.figures import (
    alpha_lambda_grid,
    diagnostics_heatmaps,
    lambda_tradeoff,
    responses_figure,
    responses_table,
    save_figure,
    sweep_heatmaps,
    table1,
)

NUMERIC_EVALUATION_COLUMNS = ("lam", "alpha", "n", "k", "rate", "ci_low", "ci_high")


def sweep_frame(run: RunDir) -> pd.DataFrame:
    """The rows Fig. 4 draws: `selection.csv` (with the rule's verdicts) where select ran, else `sweep.csv`."""
    from workbench.stages.select import read_selection
    from workbench.stages.sweep import read_sweep

    return read_selection(run) if run.file("selection.csv").exists() else read_sweep(run)


def run_figures(run: RunDir, out_dir: str | Path | None = None) -> list[Path]:
    """Every figure a run directory's artifacts allow, written to `out_dir` (default: the run's `figures/`)."""
    from workbench.stages.evaluate import read_completions

    run.require_dir()
    out = Path(out_dir) if out_dir is not None else run.file("figures")
    written: list[Path] = []
    if run.file("sweep.csv").exists():
        selection = run.read_json("selection.json", keys=("selections",)) if run.file("selection.json").exists() \
            else None
        recorded = (run.read_json("sweep.json", keys=("config",))["config"] if run.file("sweep.json").exists()
                    else {})
        mode = recorded.get("mode", "fast") if recorded else None  # sweeps recorded before modes were fast
        n_screen = recorded.get("n_screen")
        fig = sweep_heatmaps(sweep_frame(run), selection, mode=mode if isinstance(mode, str) else None,
                             n_screen=n_screen if isinstance(n_screen, int) else None)
        written += save_figure(fig, out / "fig4_sweep")
    if run.file("diagnostics.csv").exists():
        from workbench.stages.diagnose import read_diagnostics

        selection = run.read_json("selection.json", keys=("selections",)) if run.file("selection.json").exists() \
            else None
        written += save_figure(diagnostics_heatmaps(read_diagnostics(run), selection), out / "fig4_diagnostics")
    if run.file("evaluation.csv").exists():
        evaluation = run.read_csv("evaluation.csv", columns=EVALUATION_COLUMNS,
                                  numeric_columns=NUMERIC_EVALUATION_COLUMNS)
        capability = (run.read_csv("capability.csv", columns=("task", "intervention", "metric", "value"),
                                   numeric_columns=("value",))
                      if run.file("capability.csv").exists() else None)
        written += save_figure(lambda_tradeoff(evaluation, capability), out / "fig3_lambda")
        # rates without completion files (copied tables): no responses table; damaged completion files: an error
        completions = (read_completions(run) if any(run.path.glob("completions/*/*.meta.json"))
                       else pd.DataFrame(columns=["dataset"]))
        over = [d for d in ("xstest_safe", "or_bench_hard_test", "xstest_refused") if d in set(completions.dataset)]
        if over:
            responses = responses_table(completions, over[0])
            written += save_figure(responses_figure(responses, f"Responses across λ on {over[0]} (Fig. 2)"),
                                   out / "fig2_responses")
        written += save_figure(alpha_lambda_grid(evaluation), out / "fig5_alpha_lambda")
        table = table1(evaluation)
        written.append(atomic_write(out / "table1.csv", lambda tmp: table.to_csv(tmp)))
    if not written:
        raise WorkbenchError(f"{run.path} has neither sweep.csv nor evaluation.csv, so there is nothing to draw: run "
                             f"`workbench run --run {run.path}` (or `workbench sweep`/`workbench evaluate`) first")
    return written


def _run(lm: LoadedModel, run: RunDir, config) -> str:
    return f"{len(run_figures(run))} files -> {run.file('figures')}"


STAGE = Stage("figures", inputs=(), outputs=("figures/",), run=_run, is_done=never_done, resumes=True)
