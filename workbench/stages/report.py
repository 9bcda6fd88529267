"""`workbench report`: one self-contained HTML page of a run directory (model, config, stages, selection, every
figure the run can draw, Table 1, capability and a few completions per dataset × intervention), read from its
artifacts without loading any model. The page itself is assembled by `workbench.viz.report`.

A partial run gives a partial page: each part the run has not made yet names the command that makes it.
"""

from pathlib import Path

import pandas as pd

from workbench import __version__
from workbench.io import write_text
from workbench.method.vectors import printed
from workbench.stages.evaluate import read_evaluation
from workbench.stages.figures import (
    NamedFigure,
    drawable_figures,
    read_capability,
    read_run_completions,
)
from workbench.stages.run_dir import RunDir, rewrite_hint
from workbench.viz.report import (
    Section,
    completions_block,
    completions_sample,
    figure_block,
    html_table,
    json_block,
    not_run_yet,
    paragraph,
    record_table,
    report_page,
    selection_frame,
)


def stage_table(run: RunDir) -> pd.DataFrame:
    """Per pipeline stage (`workbench status`'s `stage_states`): done, stale, not run yet or not needed, what the
    run holds of it, and the command that runs it next."""
    from workbench.stages.status import stage_states

    rows = [{"stage": s.stage, "state": "not run yet" if s.state == "missing" else s.state, "artifacts": s.detail,
             "next": s.command} for s in stage_states(run)]
    return pd.DataFrame(rows).set_index("stage")


def _model_section(run: RunDir) -> Section:
    config = run.read_json("config.json", keys=("model",)) if run.file("config.json").exists() else None
    candidates = run.read_json("candidates.json", keys=("model",)) if run.file("candidates.json").exists() else None
    record = (config or candidates or {}).get("model")
    if not isinstance(record, dict):
        return Section("Model and config", not_run_yet(rewrite_hint("candidates.json", run.path), "model record"))
    parts = [record_table(record)]
    if config is not None:
        parts.append(json_block({k: v for k, v in config.items() if k != "model"}, "config.json (the main job)"))
    else:
        parts.append(paragraph("No config.json: the run was made stage by stage, not by `workbench run`."))
    if candidates is not None and isinstance(candidates.get("config"), dict):
        parts.append(json_block(candidates["config"], "extraction config (candidates.json)"))
    return Section("Model and config", "".join(parts))


def _selection_section(run: RunDir) -> Section:
    if not run.file("selection.json").exists():
        return Section("Selection", not_run_yet(rewrite_hint("selection.json", run.path)))
    selection = run.read_json("selection.json", keys=("selections", "r"))
    frame = selection_frame(selection)
    parts = [html_table(frame.assign(vector=frame.vector.map(printed)), index=False)]
    if isinstance(selection.get("baseline"), dict):
        baseline = pd.DataFrame([selection["baseline"]], index=pd.Index(["refusal score"], name="no intervention"))
        parts.append(html_table(baseline))
    if selection.get("unselected_lams"):
        parts.append(paragraph(f"λ with no cell within the rule: {', '.join(map(str, selection['unselected_lams']))}"))
    return Section("Selection", "".join(parts))


def _figures_section(run: RunDir, figures: list[NamedFigure]) -> Section:
    from workbench.viz.figures import candidate_geometry_figure

    parts = []
    if run.file("candidates.safetensors").exists():
        from workbench.method.geometry import candidate_geometry
        from workbench.stages.extract import load_candidates

        selection = run.read_json("selection.json") if run.file("selection.json").exists() else None
        parts.append("<h3>The candidates: size and alignment</h3>")
        parts.append(figure_block(candidate_geometry_figure(candidate_geometry(load_candidates(run)), selection),
                                  "candidates"))
    else:
        parts.append(not_run_yet(rewrite_hint("candidates.safetensors", run.path), "candidate geometry"))
    for figure in figures:
        parts.append(f"<h3>{figure.title}</h3>" + figure_block(figure.figure, figure.name))
    drawn = {f.name for f in figures}
    for name, what, source in (("fig4_sweep", "Fig. 4 (the sweep)", "sweep.csv"),
                               ("fig4_diagnostics", "direction diagnostics", "diagnostics.csv"),
                               ("fig3_lambda", "Fig. 3 and Fig. 5 (rates against λ and α)", "evaluation.csv")):
        if name not in drawn:
            parts.append(not_run_yet(rewrite_hint(source, run.path), what))
    return Section("Figures", "".join(parts))


def _tables_section(run: RunDir) -> list[Section]:
    from workbench.viz.figures import table1

    if run.file("evaluation.csv").exists():
        table = html_table(table1(read_evaluation(run)))
    else:
        table = not_run_yet(rewrite_hint("evaluation.csv", run.path))
    capability = read_capability(run)
    cap = (html_table(capability, index=False) if capability is not None
           else not_run_yet(rewrite_hint("capability.csv", run.path)))
    return [Section("Table 1: compliance rates", table), Section("Capability", cap)]


def _completions_section(run: RunDir, per_pair: int) -> Section:
    completions = read_run_completions(run)
    if completions is None:
        return Section("Completions", not_run_yet(rewrite_hint("completions/", run.path)))
    note = paragraph(f"The first {per_pair} completions of each dataset × intervention; `refused` is the paper's "
                     "substring judge, `label_<judge>` the calibrated judge's label.")
    return Section("Completions", note + completions_block(completions_sample(completions, per_pair)))


def report_html(run: RunDir, per_pair: int = 3) -> str:
    """The run's report page (see the module docstring)."""
    from plotly.offline import get_plotlyjs

    run.require_dir()
    figures = drawable_figures(run)
    stages = Section("Stages", paragraph(f"Run directory: {run.path}") + html_table(stage_table(run)))
    sections = [_model_section(run), stages, _selection_section(run), _figures_section(run, figures),
                *_tables_section(run), _completions_section(run, per_pair)]
    draws = any('class="figure"' in s.body for s in sections)
    return report_page(f"Run {run.path.name} (workbench {__version__})", sections, get_plotlyjs() if draws else None)


def write_report(run: RunDir, out: str | Path | None = None, per_pair: int = 3) -> Path:
    """Write the run's report (default: `report.html` in the run directory); returns its path."""
    page = report_html(run, per_pair)
    return write_text(Path(out) if out is not None else run.file("report.html"), page)
