"""The paper's figures as library functions over a run's tables (the figures stage and the notebooks call these).

- `sweep_heatmaps` (Fig. 4): layer × position heatmaps of a sweep score for the true candidates and the false ones
  at several λ, the selected candidate marked;
- `candidate_geometry_figure`: ‖r‖, ‖w‖ per layer and cos(r, w) per cell (the candidates before any sweep);
- `diagnostics_heatmaps`: cos(r, w), class separability (AUROC) and zero-ablation shift per cell (`diagnose`);
- `training_loss`: a loss curve (the organism's fine-tune);
- `responses_table` / `responses_figure` (Fig. 2): responses to chosen prompts across λ;
- `lambda_tradeoff` (Fig. 3): compliance on over-refusal and harmful sets, and capability, against λ;
- `alpha_lambda_grid` (Fig. 5): harmful compliance over α × λ, cells at least as safe as baseline outlined;
- `table1` (Table 1): a DataFrame of compliance under baseline, w′, raw w and r ablation.
Rates come from `evaluation.csv`'s explicit columns; Table 1, Fig. 3 and Fig. 5 read the calibrated judge the run
used (`main_judge`), and Table 1 and Fig. 3 show the paper's substring judge beside it.
Each returns a plotly figure; `save_figure` writes interactive HTML (and PNG when a static exporter is available).
"""

from pathlib import Path

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.data import DATASET_GROUPS, dataset_group
from workbench.eval.judge import PAPER_JUDGE
from workbench.interventions.catalogue import AFFINE_SUFFIX, GATED_PREFIX, ablation_of, lam_name, parse_name
from workbench.io import atomic_write
from workbench.method.vectors import printed, printed_candidate

SHORT_LABELS = {
    "ablation_refusal_score_pseudo_harmful": "refusal score, pseudo-harmful val",
    "ablation_refusal_score_harmful": "refusal score, harmful val",
    "ablation_kl": "KL, harmless val",
}


SCREENED_AS = {("w'", "ablation_refusal_score_pseudo_harmful"): "screen_refusal_score",
               ("r", "ablation_refusal_score_harmful"): "screen_refusal_score",
               ("w'", "ablation_kl"): "screen_kl", ("r", "ablation_kl"): "screen_kl"}
"""The screen's estimate of a score (the fast sweep screens w′ on pseudo-harmful val, r on harmful val)."""


def _grid(frame: pd.DataFrame, metric: str, vector: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """positions × layers of `metric`, and of whether each cell is a screen estimate: a cell without the full score
    falls back to the screen's estimate of that score where the screen has one."""
    full = frame[metric] if metric in frame else pd.Series(float("nan"), index=frame.index)
    screen_column = SCREENED_AS.get((vector, metric))
    screen = frame[screen_column] if screen_column in frame else pd.Series(float("nan"), index=frame.index)
    estimate = full.isna() & screen.notna()
    cells = frame.assign(value=full.fillna(screen), estimate=estimate.astype(float))
    tables = [cells.pivot_table(index="pos", columns="layer", values=column, aggfunc="first", dropna=False)
              .sort_index(ascending=False) for column in ("value", "estimate")]
    return tables[0], tables[1].reindex_like(tables[0]).fillna(0.0).astype(bool)


def _scoring_note(sweep: pd.DataFrame, mode: str | None, n_screen: int | None) -> str:
    """What produced the cells: every one fully scored, or N fully scored and the others screen estimates."""
    n_full, n_screened = int((sweep.stage == "full").sum()), int((sweep.stage == "screened").sum())
    prefix = f"{mode}: " if mode else ""
    if n_screened == 0:
        return f"{prefix}every cell fully scored"
    prompts = f" on {n_screen} prompts per set, marked ○" if n_screen else ", marked ○"
    return f"{prefix}{n_full} cells fully scored, others screen estimates{prompts}"


def sweep_heatmaps(sweep: pd.DataFrame, selection: dict | None = None, lams: list[float] | None = None,
                   metrics: tuple[str, ...] = ("ablation_refusal_score_pseudo_harmful", "ablation_kl"),
                   mode: str | None = None,
                   n_screen: int | None = None) -> go.Figure:
    """Fig. 4: one heatmap per (metric, vector/λ); x = layer, y = EOI position; the selection marked with ×.

    The refusal-score row shows, for r, the score on harmful val (what its rule uses: r is screened on harmful
    prompts), for w′ the score on pseudo-harmful val. Cells only screened (a fast sweep) show their screen estimate
    (`n_screen` prompts), marked ○ and named so on hover; fully scored cells say "full score". The subtitle says
    which (`mode`: the sweep's mode, from sweep.json). Skipped cells (pruned layers, zero vectors) are blank.
    """
    w_lams = sorted({float(x) for x in sweep.loc[sweep.vector == "w'", "lam"]}, reverse=True)
    lams = w_lams if lams is None else [float(x) for x in lams]
    panels = [("r", None)] + [("w'", lam) for lam in lams]

    def panel_metric(metric: str, vector: str) -> str:
        return "ablation_refusal_score_harmful" if vector == "r" and metric == "ablation_refusal_score_pseudo_harmful" \
            else metric

    titles = [f"{printed_candidate(v, lam)} · {SHORT_LABELS.get(panel_metric(m, v), m)}"
              for m in metrics for v, lam in panels]
    fig = make_subplots(rows=len(metrics), cols=len(panels), subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.02, vertical_spacing=0.12)
    chosen = {float(s["lam"]): (int(s["pos"]), int(s["layer"])) for s in (selection or {}).get("selections", [])}
    r_choice = (selection or {}).get("r")
    estimate_text = f"screen estimate ({n_screen} prompts)" if n_screen else "screen estimate"
    legend_shown = False
    for i, metric in enumerate(metrics, start=1):
        for j, (vector, lam) in enumerate(panels, start=1):
            part = sweep[(sweep.vector == vector) & ((sweep.lam == lam) if lam is not None else True)]
            if part.empty:
                continue
            grid, estimates = _grid(part, panel_metric(metric, vector), vector)
            text = [["" if pd.isna(v) else (estimate_text if e else "full score") for v, e in zip(values, flags,
                                                                                                    strict=True)]
                    for values, flags in zip(grid.values, estimates.values, strict=True)]
            fig.add_trace(go.Heatmap(z=grid.values, x=list(grid.columns), y=[str(p) for p in grid.index], text=text,
                                     coloraxis=f"coloraxis{i if i > 1 else ''}",
                                     hovertemplate="layer %{x}, pos %{y}: %{z:.3f} (%{text})<extra></extra>"),
                          row=i, col=j)
            cells = [(layer, pos) for pos in grid.index for layer in grid.columns
                     if estimates.loc[pos, layer] and pd.notna(grid.loc[pos, layer])]
            if cells:
                fig.add_trace(go.Scatter(x=[c[0] for c in cells], y=[str(c[1]) for c in cells], mode="markers",
                                         name=estimate_text, legendgroup="screen", showlegend=not legend_shown,
                                         marker={"symbol": "circle-open", "size": 7, "color": "grey"},
                                         hovertext=estimate_text, hoverinfo="text"), row=i, col=j)
                legend_shown = True
            mark = chosen.get(lam) if vector == "w'" else (
                (int(r_choice["pos"]), int(r_choice["layer"])) if r_choice else None)
            if mark is not None:
                fig.add_trace(go.Scatter(x=[mark[1]], y=[str(mark[0])], mode="markers", showlegend=False,
                                         marker={"symbol": "x", "size": 12, "color": "black"},
                                         hovertext="selected", name="selected"), row=i, col=j)
            fig.update_xaxes(title_text="layer" if i == len(metrics) else None, row=i, col=j)
        fig.update_yaxes(title_text="EOI position", row=i, col=1)
    drawn = sweep[(sweep.vector == "r") | ((sweep.vector == "w'") & sweep.lam.isin(lams))]
    layout = {"height": 320 * len(metrics), "width": max(700, 330 * len(panels)),
              "title": "Refusal-vector candidates after ablation (Fig. 4): × marks the selection; "
                       f"blank: pruned layers and zero vectors<br><sup>{_scoring_note(drawn, mode, n_screen)}</sup>",
              "legend": {"orientation": "h", "y": -0.12}}
    for i, metric in enumerate(metrics, start=1):
        key = f"coloraxis{i if i > 1 else ''}"
        scale = "RdBu_r" if "refusal_score" in metric else "Viridis"
        layout[key] = {"colorscale": scale, "colorbar": {"title": "refusal score" if "refusal_score" in metric
                                                         else metric.replace("_", " "), "len": 1 / len(metrics),
                                                         "y": 1 - (i - 0.5) / len(metrics)}}
    fig.update_layout(**layout)
    fig.update_annotations(font_size=12)
    return fig


DIAGNOSTIC_PANELS = (
    ("r", "cos_rw", "cos(r, w)", "RdBu_r"),
    ("w'", "auroc_pseudo_vs_harmless", "ŵ′: AUROC pseudo-harmful vs harmless", "PiYG"),
    ("w'", "auroc_harmful_vs_pseudo", "ŵ′: AUROC harmful vs pseudo-harmful", "PiYG"),
    ("r", "auroc_harmful_vs_pseudo", "r̂: AUROC harmful vs pseudo-harmful", "PiYG"),
    ("w'", "mean_harmless", "ŵ′: mean harmless projection (zero-ablation shift)", "RdBu_r"),
    ("w", "mean_harmless", "ŵ: mean harmless projection (zero-ablation shift)", "RdBu_r"),
)
"""(vector, column, title, colour scale) of each `diagnostics_heatmaps` panel."""


def diagnostics_heatmaps(table: pd.DataFrame, selection: dict | None = None, lam: float | None = None) -> go.Figure:
    """Direction diagnostics (`workbench.method.diagnostics`) as layer × position heatmaps beside Fig. 4: cos(r, w);
    how well ŵ′(λ) separates pseudo-harmful from harmless prompts and harmful from pseudo-harmful (AUROC, 0.5 =
    not at all), the same for r̂; and how far zero-ablation moves harmless prompts along ŵ′ and ŵ (their mean
    projection: zero-ablation sets it to 0). λ: the largest in the table unless given; × marks its selection."""
    lams = sorted({float(x) for x in table.loc[table.vector == "w'", "lam"]}, reverse=True)
    lam = lams[0] if lam is None and lams else lam
    chosen = {float(s["lam"]): (int(s["pos"]), int(s["layer"])) for s in (selection or {}).get("selections", [])}
    mark = chosen.get(lam) if lam is not None else None
    titles = [t.replace("ŵ′", f"ŵ′(λ={lam})") for _, _, t, _ in DIAGNOSTIC_PANELS]
    fig = make_subplots(rows=len(DIAGNOSTIC_PANELS) // 2, cols=2, subplot_titles=titles, shared_yaxes=True,
                        horizontal_spacing=0.12, vertical_spacing=0.1)
    for k, (vector, column, _, scale) in enumerate(DIAGNOSTIC_PANELS):
        row, col = k // 2 + 1, k % 2 + 1
        part = table[(table.vector == vector) & ((table.lam == lam) if vector == "w'" else True)]
        grid = part.pivot_table(index="pos", columns="layer", values=column, aggfunc="first",
                                dropna=False).sort_index(ascending=False)
        bounds = ({"zmin": 0.0, "zmax": 1.0, "zmid": 0.5} if column.startswith("auroc")
                  else {"zmin": -1.0, "zmax": 1.0} if column == "cos_rw" else {"zmid": 0.0})
        fig.add_trace(go.Heatmap(z=grid.values, x=list(grid.columns), y=[str(p) for p in grid.index],
                                 colorscale=scale, **bounds,
                                 colorbar={"len": 1 / 3 - 0.04, "y": 1 - (row - 0.5) / 3, "x": 0.44 if col == 1
                                           else 1.0, "thickness": 10},
                                 hovertemplate="layer %{x}, pos %{y}: %{z:.3f}<extra></extra>"), row=row, col=col)
        if mark is not None:
            fig.add_trace(go.Scatter(x=[mark[1]], y=[str(mark[0])], mode="markers", showlegend=False,
                                     marker={"symbol": "x", "size": 11, "color": "black"}, hovertext="selected",
                                     name="selected"), row=row, col=col)
        fig.update_xaxes(title_text="layer" if row == 3 else None, row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text="EOI position", row=row, col=col)
    fig.update_layout(height=900, width=1100, title="Direction diagnostics: does ŵ′ carry a false-refusal feature "
                      "that r̂ does not? (× selection)<br><sup>AUROC 0.5: the projection does not separate the two "
                      "classes; mean projection far from 0: zero-ablation moves every prompt, i.e. it steers</sup>")
    fig.update_annotations(font_size=11)
    return fig


def candidate_geometry_figure(geometry: pd.DataFrame, selection: dict | None = None) -> go.Figure:
    """The candidates themselves (`method.geometry.candidate_geometry`): ‖r‖ and ‖w‖ per layer (one line per EOI
    position), and heatmaps of cos(r, w) and of the share of w that λ = 1 keeps; selected cells marked with ×."""
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.15,
                        subplot_titles=["‖r‖ (true refusal) per layer", "‖w‖ (false refusal) per layer",
                                        "cos(r, w)", "‖w′‖/‖w‖ at λ = 1 (the part of w orthogonal to r)"])
    palette = plotly.colors.qualitative.Plotly
    for col, column in ((1, "norm_r"), (2, "norm_w")):
        for k, (pos, part) in enumerate(geometry.groupby("pos", sort=False)):
            part = part.sort_values("layer")
            fig.add_trace(go.Scatter(x=part.layer, y=part[column], mode="lines", name=f"pos {pos}",
                                     line={"color": palette[k % len(palette)]}, legendgroup=str(pos),
                                     showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text="layer", row=1, col=col)
    cells = sorted({(int(s["pos"]), int(s["layer"])) for s in (selection or {}).get("selections", [])})
    for col, column, scale in ((1, "cos_rw", "RdBu_r"), (2, "kept_at_lam1", "Viridis")):
        grid = geometry.pivot_table(index="pos", columns="layer", values=column, dropna=False).sort_index(
            ascending=False)
        fig.add_trace(go.Heatmap(z=grid.values, x=list(grid.columns), y=[str(p) for p in grid.index],
                                 colorscale=scale, zmin=-1 if column == "cos_rw" else 0, zmax=1,
                                 colorbar={"len": 0.42, "y": 0.21, "x": 0.435 if col == 1 else 1.0,
                                           "thickness": 12},
                                 hovertemplate="layer %{x}, pos %{y}: %{z:.3f}<extra></extra>"), row=2, col=col)
        if cells:
            fig.add_trace(go.Scatter(x=[c[1] for c in cells], y=[str(c[0]) for c in cells], mode="markers",
                                     marker={"symbol": "x", "size": 12, "color": "black"}, showlegend=False,
                                     hovertext="selected"), row=2, col=col)
        fig.update_xaxes(title_text="layer", row=2, col=col)
        fig.update_yaxes(title_text="EOI position", row=2, col=col)
    fig.update_yaxes(title_text="norm", row=1, col=1)
    return fig.update_layout(title="Refusal-vector candidates: size and alignment (× the selections)", height=760,
                             width=1100)


def training_loss(losses: list[float], title: str = "Training loss") -> go.Figure:
    """A loss curve: one point per optimizer step (the organism's LoRA tune records its losses)."""
    fig = go.Figure(go.Scatter(x=list(range(1, len(losses) + 1)), y=list(losses), mode="lines+markers"))
    return fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", height=360, width=640)


def _lam_of(name: str) -> float | None:
    """λ of a pure w′ zero-ablation (`ablate_w_lam<λ>`), else None (affine variants are Table 1 columns)."""
    lam, alpha = parse_name(name)
    return lam if alpha is None and ablation_of(name) == "zero" else None


def main_judge(evaluation: pd.DataFrame) -> str:
    """The judge a figure reads: the calibrated judge the run used (any judge but the paper's substring list), else
    the paper's."""
    others = [j for j in dict.fromkeys(evaluation.judge) if j != PAPER_JUDGE]
    return others[0] if others else PAPER_JUDGE


def _w_prime_rows(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Rows of a pure w′ zero-ablation (affine variants and combinations are Table 1 / Fig. 5 columns)."""
    return evaluation[(evaluation.vector == "w'") & evaluation.alpha.isna() & (evaluation.ablation == "zero")]


def lambda_tradeoff(evaluation: pd.DataFrame, capability: pd.DataFrame | None = None,
                    judge: str | None = None) -> go.Figure:
    """Fig. 3: compliance rate (with 95% Wilson bars) against λ per dataset by the calibrated `judge` (default:
    `main_judge`), the paper's substring judge beside it (dashed, no bars) and the baselines dotted; with a capability
    table, a third panel: MMLU / ARC accuracy and WikiText-2 perplexity relative to baseline, against λ."""
    judge = judge or main_judge(evaluation)
    rows = _w_prime_rows(evaluation)
    titles = ["over-refusal sets (higher is better)", "harmful sets (lower is safer)"]
    if capability is not None:
        titles.append("capability (perplexity: ratio to baseline)")
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    colors = plotly.colors.qualitative.Plotly
    datasets = sorted(set(rows.dataset))
    for col, group in enumerate(("over-refusal", "harmful"), start=1):
        for dataset in (d for d in datasets if dataset_group(d) == group):
            color = colors[datasets.index(dataset) % len(colors)]
            part = rows[(rows.dataset == dataset) & (rows.judge == judge)].sort_values("lam")
            fig.add_trace(go.Scatter(
                x=part.lam, y=part.rate, mode="lines+markers", name=f"{dataset} ({judge})", line={"color": color},
                error_y={"type": "data", "symmetric": False, "array": part.ci_high - part.rate,
                         "arrayminus": part.rate - part.ci_low}), row=1, col=col)
            paper = rows[(rows.dataset == dataset) & (rows.judge == PAPER_JUDGE)].sort_values("lam")
            if judge != PAPER_JUDGE and not paper.empty:
                fig.add_trace(go.Scatter(x=paper.lam, y=paper.rate, mode="lines", name=f"{dataset} (paper's judge)",
                                         line={"color": color, "dash": "dash", "width": 1}), row=1, col=col)
            base = evaluation[(evaluation.dataset == dataset) & (evaluation.intervention == "baseline")
                              & (evaluation.judge == judge)]
            if not base.empty:
                fig.add_hline(y=float(base.rate.iloc[0]), line_dash="dot", line_color=color, row=1, col=col,
                              annotation_text=f"{dataset} baseline", annotation_font_size=9)
        fig.update_yaxes(title_text="compliance rate", range=[0, 1.02], row=1, col=col)
    if capability is not None:
        cap = capability.assign(lam=capability.intervention.map(_lam_of))
        for (task, metric), part in cap.groupby(["task", "metric"]):
            base = part[part.intervention == "baseline"]
            part = part.dropna(subset=["lam"]).sort_values("lam")
            values = part.value
            if metric == "perplexity" and not base.empty:
                values = values / float(base.value.iloc[0])
            fig.add_trace(go.Scatter(x=part.lam, y=values, mode="lines+markers", name=f"{task} {metric}"),
                          row=1, col=3)
        fig.update_yaxes(title_text="accuracy / perplexity ratio", row=1, col=3)
    for col in range(1, len(titles) + 1):
        fig.update_xaxes(title_text="λ (1: true refusal kept)", row=1, col=col)
    note = "" if judge == PAPER_JUDGE else f"<br><sup>judge: {judge} (solid, 95% bars); the paper's substring " \
        "judge dashed</sup>"
    fig.update_layout(title=f"Ablating w′(λ): the safety dial (Fig. 3){note}", height=460, width=480 * len(titles))
    return fig


def responses_table(completions: pd.DataFrame, dataset: str, n: int = 6) -> pd.DataFrame:
    """Fig. 2: responses to the first `n` prompts of `dataset` that the baseline refused (by the calibrated judge
    where the completions have one, else the paper's), under baseline and each w′(λ) ablation (prompts ×
    interventions)."""
    part = completions[completions.dataset == dataset]
    calibrated = [c for c in part.columns if c.startswith("refused_") and part[c].notna().all()]
    refused_column = calibrated[0] if calibrated else "refused"
    refused = part[(part.intervention == "baseline") & part[refused_column].astype(bool)].instruction.tolist()
    prompts = (refused or part[part.intervention == "baseline"].instruction.tolist())[:n]
    names = ["baseline"] + sorted({i for i in part.intervention if _lam_of(i) is not None},
                                  key=lambda i: -_lam_of(i))
    table = part[part.instruction.isin(prompts) & part.intervention.isin(names)]
    wide = table.pivot_table(index="instruction", columns="intervention", values="response", aggfunc="first")
    return wide.reindex(index=prompts, columns=[c for c in names if c in wide.columns])


def responses_figure(table: pd.DataFrame, title: str = "Responses across λ (Fig. 2)") -> go.Figure:
    header = ["prompt"] + list(table.columns)
    cells = [list(table.index)] + [[str(v) for v in table[c]] for c in table.columns]
    fig = go.Figure(go.Table(header={"values": header, "align": "left"},
                             cells={"values": cells, "align": "left", "height": 60}))
    return fig.update_layout(title=title, height=120 + 90 * len(table), width=320 * len(header))


def alpha_lambda_grid(evaluation: pd.DataFrame, dataset: str = "harmful_test", judge: str | None = None) -> go.Figure:
    """Fig. 5: compliance on `dataset` by `judge` (default: `main_judge`) over (λ of the ablated w′, α of the added
    r); the baseline is the cell (none, α = 0); cells at least as safe as the baseline (compliance ≤ baseline)
    outlined."""
    judge = judge or main_judge(evaluation)
    rows = evaluation[(evaluation.dataset == dataset) & (evaluation.judge == judge)]
    zero = rows.ablation.isna() | (rows.ablation == "zero")
    cells = [{"lam": "none", "alpha": 0.0, "rate": rate} for rate in rows.loc[rows.vector == "none", "rate"]]
    for lam, alpha, rate in rows.loc[zero & rows.vector.isin(("w'", "r", "w'+r")) & (rows.lam.notna()
                                                                                       | rows.alpha.notna()),
                                     ["lam", "alpha", "rate"]].itertuples(index=False):
        cells.append({"lam": "none" if pd.isna(lam) else f"{lam:g}", "alpha": 0.0 if pd.isna(alpha) else alpha,
                      "rate": rate})
    fig = go.Figure()
    if not cells:
        return fig.update_layout(title=f"no α × λ interventions evaluated on {dataset}")
    grid = pd.DataFrame(cells).pivot_table(index="alpha", columns="lam", values="rate", aggfunc="first")
    columns, index = list(grid.columns), list(grid.index)
    fig.add_trace(go.Heatmap(z=grid.values, x=columns, y=[f"{a:g}" for a in index], colorscale="Reds", zmin=0,
                             zmax=1, colorbar={"title": "compliance"}, texttemplate="%{z:.2f}",
                             hovertemplate="λ %{x}, α %{y}: %{z:.2f}<extra></extra>"))
    base = rows.loc[rows.vector == "none", "rate"]
    baseline = float(base.iloc[0]) if not base.empty else None
    if baseline is not None:
        for r, alpha in enumerate(index):
            for c, lam in enumerate(columns):
                value = grid.loc[alpha, lam]
                if pd.notna(value) and value <= baseline and (lam, alpha) != ("none", 0.0):
                    fig.add_shape(type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
                                  line={"color": "black", "width": 3})
    safe = ("" if baseline is None
            else f"<br><sup>outlined: as safe as the baseline (none, α = 0: {baseline:.2f}); judge: {judge}</sup>")
    fig.update_layout(title=f"Ablate w′(λ) + add α·r: compliance on {dataset} (Fig. 5){safe}",
                      xaxis_title="λ of the ablated w′ (none: no ablation; at α = 0 the baseline)", yaxis_title="α",
                      height=420, width=720)
    return fig


FRONTIER_COLORS = {"baseline": "black", "w'": "#1f77b4", "r (partial)": "#d62728", "random": "#7f7f7f",
                   "gated w'": "#2ca02c"}


def frontier_figure(table: pd.DataFrame, judge: str | None = None, title: str = "The trade-off frontier"
                    ) -> go.Figure:
    """Over-refusal compliance (up: better) against harmful compliance (right: worse) of every frontier point
    (`workbench.stages.frontier`), each family a curve in the order of its parameter (w′ by λ, r by β), with 95%
    intervals on both axes; the baseline is a star. `judge`: the calibrated judge of the table (default: not the
    paper's substring judge when another is present)."""
    judge = judge or next((j for j in dict.fromkeys(table.judge) if j != PAPER_JUDGE), PAPER_JUDGE)
    rows = table[table.judge == judge]
    fig = go.Figure()
    for family, color in FRONTIER_COLORS.items():
        part = rows[rows.family == family]
        if part.empty:
            continue
        part = part.sort_values("param") if family in ("w'", "r (partial)") else part
        labels = [printed(family if family == "baseline" else f"{family} {_param_label(family, v)}")
                  for v in part.param]
        fig.add_trace(go.Scatter(
            x=part.harmful, y=part.over_refusal, name=printed(family), text=labels,
            mode="markers" if family in ("baseline", "random", "gated w'") else "lines+markers+text",
            textposition="top center", marker={"color": color, "size": 14 if family == "baseline" else 9,
                                               "symbol": "star" if family == "baseline" else "circle"},
            line={"color": color},
            error_x={"type": "data", "symmetric": False, "array": part.harmful_high - part.harmful,
                     "arrayminus": part.harmful - part.harmful_low, "color": color, "thickness": 1},
            error_y={"type": "data", "symmetric": False, "array": part.over_refusal_high - part.over_refusal,
                     "arrayminus": part.over_refusal - part.over_refusal_low, "color": color, "thickness": 1},
            hovertemplate="%{text}<br>harmful compliance %{x:.1%}<br>over-refusal compliance %{y:.1%}"
                          "<extra></extra>"))
    return fig.update_layout(
        title=f"{title} (judge: {judge}; up and left is better)", height=560, width=760,
        xaxis={"title": "harmful compliance (validation)", "tickformat": ".0%", "range": [-0.05, 1.05]},
        yaxis={"title": "over-refusal compliance (validation)", "tickformat": ".0%", "range": [-0.05, 1.05]})


def _param_label(family: str, value) -> str:
    if family in ("w'", "gated w'"):
        return f"λ={float(value):g}"
    if family == "r (partial)":
        return f"β={float(value):g}"
    return f"seed {int(value)}"


def gate_heatmap(grid: pd.DataFrame, title: str = "Harmfulness gate: AUROC per (position, layer)") -> go.Figure:
    """The gate's probe grid (`gate.csv`): AUROC of harmful vs benign on the fit sets and on the contrast sets of
    another source, per position and layer, the chosen cell marked."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("contrast sets (another source: what the cell is chosen on)",
                                        "fit sets (in sample)"))
    for row, column in ((1, "auroc_contrast"), (2, "auroc_fit")):
        wide = grid.pivot(index="pos", columns="layer", values=column).sort_index()
        fig.add_trace(go.Heatmap(z=wide.values, x=list(wide.columns), y=[str(p) for p in wide.index],
                                 zmin=0.0, zmax=1.0, zmid=0.5, colorscale="RdBu_r", showscale=row == 1,
                                 hovertemplate="pos %{y}, layer %{x}: AUROC %{z:.3f}<extra></extra>"), row=row, col=1)
        chosen = grid[grid.chosen.astype(bool)]
        fig.add_trace(go.Scatter(x=chosen.layer, y=chosen.pos.astype(int).astype(str), mode="markers",
                                 marker={"symbol": "x", "color": "black", "size": 12}, showlegend=False,
                                 hoverinfo="skip"), row=row, col=1)
    fig.update_yaxes(title_text="position (−1: last EOI token; lowest: last instruction token)")
    fig.update_xaxes(title_text="layer", row=2, col=1)
    return fig.update_layout(title=title, height=640, width=900)


def save_figure(fig: go.Figure, path: str | Path) -> list[Path]:
    """Write `path`.html (always) and `path`.png (when a static exporter works here); returns the files."""
    path = Path(path)
    written = [atomic_write(path.with_suffix(".html"),
                            lambda tmp: fig.write_html(str(tmp), include_plotlyjs="cdn", full_html=True))]
    try:
        png = fig.to_image(format="png", scale=2)
    except Exception:  # noqa: BLE001 — no kaleido/Chrome: HTML only
        return written
    written.append(atomic_write(path.with_suffix(".png"), lambda tmp: tmp.write_bytes(png)))
    return written


def table1(evaluation: pd.DataFrame, lam: float | None = None, judge: str | None = None) -> pd.DataFrame:
    """The paper's Table 1 contrast: compliance per dataset under baseline, w′ (at `lam`, or at every λ evaluated,
    largest first), raw w and r ablation (and their affine variants, `..._affine`, where the run evaluated them), by
    the calibrated `judge` (default: `main_judge`), with the paper's substring judge beside it (columns
    `<intervention> [substring]`)."""
    judge = judge or main_judge(evaluation)
    lams = [lam] if lam is not None else sorted(set(_w_prime_rows(evaluation).lam), reverse=True)
    names = ["baseline", *(lam_name(x) for x in lams), "ablate_w_raw", "ablate_r"]
    names += [n + AFFINE_SUFFIX for n in names[1:]] + [GATED_PREFIX + lam_name(x) for x in lams]
    present = [n for n in names if n in set(evaluation.intervention)]
    parts = []
    for name in [judge] + ([PAPER_JUDGE] if judge != PAPER_JUDGE else []):
        rows = evaluation[evaluation.judge == name]
        wide = rows.pivot(index="dataset", columns="intervention", values="rate").reindex(columns=present)
        parts.append(wide if name == judge else wide.add_suffix(f" [{PAPER_JUDGE}]"))
    wide = pd.concat(parts, axis=1)
    n = evaluation[evaluation.judge == judge].groupby("dataset").n.max()
    wide.insert(0, "n", n.reindex(wide.index).astype("Int64"))
    order = [d for d in DATASET_GROUPS if d in wide.index] + [d for d in wide.index if d not in DATASET_GROUPS]
    return wide.loc[order].rename_axis(f"dataset (judge: {judge})")
