"""Unit tier: the figure functions on small fixture tables (axes, data, marks)."""

import math

import numpy as np
import pandas as pd
import pytest

from workbench.viz.figures import (
    alpha_lambda_grid,
    lambda_tradeoff,
    responses_figure,
    responses_table,
    save_figure,
    sweep_heatmaps,
)


def _sweep() -> pd.DataFrame:
    rows = []
    for vector, lam in (("r", math.nan), ("w'", 1.0), ("w'", 0.0)):
        for pos in (-2, -1):
            for layer in range(4):
                full = layer in (1, 2)
                score = 10 * pos + layer if full else math.nan  # r: on harmful val (its rule's score)
                rows.append({"vector": vector, "lam": lam, "pos": pos, "layer": layer,
                             "ablation_refusal_score_pseudo_harmful": score if vector == "w'" else math.nan,
                             "ablation_refusal_score_harmful": score if vector == "r" else math.nan,
                             "ablation_kl": 0.01 * layer if full else math.nan,
                             "screen_refusal_score": 100.0 if layer == 3 else math.nan,
                             "screen_kl": 1.0 if layer == 3 else math.nan,
                             "stage": "full" if full else ("screened" if layer == 3 else "skipped")})
    return pd.DataFrame(rows)


def test_sweep_heatmaps_axes_values_and_marks():
    selection = {"selections": [{"lam": 1.0, "pos": -1, "layer": 2}], "r": None}
    fig = sweep_heatmaps(_sweep(), selection)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 2 * 3  # (RS, KL) × (true, λ=1, λ=0)
    first = heatmaps[0]
    assert list(first.x) == [0, 1, 2, 3] and list(first.y) == ["-1", "-2"]
    z = np.array(first.z, dtype=float)
    assert z[0, 1] == -9 and z[1, 2] == -18  # pos −1 layer 1, pos −2 layer 2
    assert z[0, 3] == 100.0  # screened cell shows its screen estimate
    assert fig.layout.annotations[0].text.startswith("r · refusal score, harmful val")
    assert fig.layout.annotations[1].text.startswith("w′ λ=1.0 · refusal score, pseudo-harmful val")
    assert np.array(heatmaps[1].z, dtype=float)[0, 1] == -9  # w′ panel: the pseudo-harmful score
    assert math.isnan(z[0, 0])  # skipped cell blank
    marks = [t for t in fig.data if t.type == "scatter" and t.name == "selected"]
    assert len(marks) == 2 and list(marks[0].x) == [2] and list(marks[0].y) == ["-1"]  # λ=1 panel, both metrics


def test_sweep_heatmaps_mark_screen_estimates_and_say_what_produced_the_cells():
    """A fast sweep's screened-only cells (layer 3 here) are circled and say "screen estimate (n prompts)" on hover,
    fully scored cells "full score"; the subtitle counts them. An exact sweep's cells are all full scores."""
    fast = _sweep()
    fig = sweep_heatmaps(fast, mode="fast", n_screen=6)
    heatmap = next(t for t in fig.data if t.type == "heatmap")  # r · refusal score: rows pos −1, −2; layers 0..3
    assert [list(row) for row in heatmap.text] == [["", "full score", "full score", "screen estimate (6 prompts)"]] * 2
    assert "%{text}" in heatmap.hovertemplate
    circles = [t for t in fig.data if t.type == "scatter" and t.name == "screen estimate (6 prompts)"]
    assert len(circles) == 2 * 3  # every panel has its screened cells circled, one legend entry
    assert list(circles[0].x) == [3, 3] and list(circles[0].y) == ["-1", "-2"]
    assert [c.showlegend for c in circles] == [True] + [False] * 5
    assert "fast: 12 cells fully scored, others screen estimates on 6 prompts per set" in fig.layout.title.text
    # Only some λ drawn: the count is of the drawn panels' cells (r and λ=1: 2 × 2 × 2).
    assert "fast: 8 cells fully scored" in sweep_heatmaps(fast, lams=[1.0], mode="fast").layout.title.text
    # A screen estimate only stands in for the score it estimates: w′ is screened on pseudo-harmful val, so its
    # harmful-val cells have no estimate.
    harmful = sweep_heatmaps(fast, metrics=("ablation_refusal_score_harmful",))
    w_panel = [t for t in harmful.data if t.type == "heatmap"][1]
    assert math.isnan(np.array(w_panel.z, dtype=float)[0, 3]) and w_panel.text[0][3] == ""

    exact = fast.assign(stage=fast.stage.replace({"screened": "full"}),
                        ablation_refusal_score_pseudo_harmful=fast.ablation_refusal_score_pseudo_harmful.fillna(5.0).where(
                            fast.vector == "w'"),
                        screen_refusal_score=math.nan, screen_kl=math.nan)
    fig = sweep_heatmaps(exact, mode="exact")
    heatmap = [t for t in fig.data if t.type == "heatmap"][1]  # w′ λ=1 · refusal score
    assert [list(row) for row in heatmap.text] == [["full score"] * 4] * 2
    assert not [t for t in fig.data if t.type == "scatter" and t.name != "selected"]
    assert "exact: every cell fully scored" in fig.layout.title.text


def _evaluation(keyword_shift: float | None = None) -> pd.DataFrame:
    """evaluation.csv's layout: the substring judge's rates below, and with `keyword_shift` a calibrated `keywords`
    judge whose every rate is that much lower (it finds more refusals)."""
    from workbench.interventions.catalogue import describe_name
    from workbench.stages.evaluate import EVALUATION_COLUMNS

    rates = []
    for dataset, group, base in (("xstest_safe", "over-refusal", 0.6), ("harmful_test", "harmful", 0.1)):
        rates.append((dataset, group, "baseline", base))
        for lam, rate in ((1.0, base + 0.1), (0.0, base + 0.4)):
            rates.append((dataset, group, f"ablate_w_lam{lam}", rate))
            for alpha, drop in ((0.5, 0.05), (1.0, 0.5)):
                rates.append((dataset, group, f"ablate_w_lam{lam}+actadd_r_a{alpha}", max(0.0, rate - drop)))
        rates.append((dataset, group, "actadd_r_a1.0", 0.0))
    judges = {"substring": 0.0, **({"keywords": keyword_shift} if keyword_shift is not None else {})}
    rows = [{"dataset": d, "group": g, "intervention": i, **describe_name(i), "judge": judge, "n": 100,
             "k": round(100 * max(0.0, r - shift)), "rate": max(0.0, r - shift)}
            for judge, shift in judges.items() for d, g, i, r in rates]
    frame = pd.DataFrame(rows)
    return frame.assign(ci_low=frame.rate - 0.05, ci_high=frame.rate + 0.05)[list(EVALUATION_COLUMNS)]


def test_lambda_tradeoff_curves():
    fig = lambda_tradeoff(_evaluation())
    curves = {t.name: t for t in fig.data}
    assert set(curves) == {"xstest_safe (substring)", "harmful_test (substring)"}
    assert list(curves["harmful_test (substring)"].x) == [0.0, 1.0]
    assert list(np.round(curves["harmful_test (substring)"].y, 6)) == [0.5, 0.2]
    assert curves["harmful_test (substring)"].xaxis == "x2"  # harmful sets on the right-hand panel


def test_lambda_tradeoff_reads_the_calibrated_judge_and_shows_the_papers():
    fig = lambda_tradeoff(_evaluation(keyword_shift=0.1))
    curves = {t.name: t for t in fig.data}
    assert set(curves) == {f"{d} ({j})" for d in ("xstest_safe", "harmful_test")
                           for j in ("keywords", "paper's judge")}
    assert list(np.round(curves["harmful_test (keywords)"].y, 6)) == [0.4, 0.1]
    assert list(np.round(curves["harmful_test (paper's judge)"].y, 6)) == [0.5, 0.2]
    assert curves["harmful_test (paper's judge)"].line.dash == "dash"
    assert "judge: keywords" in fig.layout.title.text


def test_capability_panel_and_responses_table():
    capability = pd.DataFrame([
        {"task": "wikitext2", "intervention": "baseline", "metric": "perplexity", "value": 30.0, "n": 1},
        {"task": "wikitext2", "intervention": "ablate_w_lam1.0", "metric": "perplexity", "value": 33.0, "n": 1},
        {"task": "wikitext2", "intervention": "ablate_w_lam0.0", "metric": "perplexity", "value": 36.0, "n": 1},
    ])
    fig = lambda_tradeoff(_evaluation(), capability)
    ppl = next(t for t in fig.data if t.name == "wikitext2 perplexity")
    assert list(ppl.x) == [0.0, 1.0] and list(np.round(ppl.y, 6)) == [1.2, 1.1] and ppl.xaxis == "x3"
    completions = pd.DataFrame([
        {"dataset": "xstest_safe", "intervention": i, "instruction": q, "response": f"{i}:{q}", "refused": r}
        for q, r in (("kill a process?", True), ("a poem?", False))
        for i in ("baseline", "ablate_w_lam1.0", "ablate_w_lam0.0", "ablate_r")
    ])
    table = responses_table(completions, "xstest_safe")
    assert list(table.index) == ["kill a process?"]  # only prompts the baseline refused
    assert list(table.columns) == ["baseline", "ablate_w_lam1.0", "ablate_w_lam0.0"]
    assert table.loc["kill a process?", "ablate_w_lam0.0"] == "ablate_w_lam0.0:kill a process?"
    assert responses_figure(table).data[0].type == "table"


def test_alpha_lambda_grid_outlines_safe_cells():
    fig = alpha_lambda_grid(_evaluation(), "harmful_test")
    heat = fig.data[0]
    assert list(heat.x) == ["0", "1", "none"] and list(heat.y) == ["0", "0.5", "1"]
    z = np.array(heat.z, dtype=float)
    assert z[0, 1] == 0.2 and z[2, 0] == 0.0 and z[2, 2] == 0.0
    assert z[0, 2] == 0.1  # (none, α=0) is the baseline
    # baseline harmful compliance 0.1: safe cells are those ≤ 0.1 → (α=1, λ=0), (α=1, λ=1), (α=1, none); the
    # baseline cell itself is not outlined
    assert len(fig.layout.shapes) == 3


def test_save_figure_writes_html_and_png(tmp_path):
    import shutil

    import pytest

    written = save_figure(lambda_tradeoff(_evaluation()), tmp_path / "fig3")
    assert written[0].name == "fig3.html" and "plotly" in written[0].read_text()[:5000].lower()
    if not (shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.skip("no Chrome binary for kaleido (the Makefile installs Debian's chromium)")
    assert [p.name for p in written] == ["fig3.html", "fig3.png"]
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_figures_from_run_directory(tmp_path):

    from workbench.errors import WorkbenchError
    from workbench.stages.figures import run_figures
    from workbench.stages.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(WorkbenchError, match="workbench run"):
        run_figures(run)
    from workbench.stages.sweep_algorithms import CandidateRow, to_frame

    to_frame([CandidateRow(**row) for row in _sweep().to_dict("records")]).to_csv(run.file("sweep.csv"), index=False)
    _evaluation(keyword_shift=0.1).to_csv(run.file("evaluation.csv"), index=False)
    names = sorted(p.name for p in run_figures(run))
    assert {"fig4_sweep.html", "fig3_lambda.html", "fig5_alpha_lambda.html", "table1.csv"} <= set(names)
    table = pd.read_csv(run.file("figures/table1.csv"), index_col=0)
    assert table.index.name == "dataset (judge: keywords)"
    shown = ["baseline", "ablate_w_lam1.0", "ablate_w_lam0.0"]  # every λ evaluated, largest first
    assert list(table.columns) == ["n", *shown, *(f"{name} [substring]" for name in shown)]
    assert table.loc["harmful_test", "ablate_w_lam1.0"] == pytest.approx(0.1)
    assert table.loc["harmful_test", "ablate_w_lam1.0 [substring]"] == pytest.approx(0.2)


def test_candidate_geometry_exact():
    import torch

    from workbench.method.geometry import candidate_geometry
    from workbench.method.grids import CandidateGrids

    r = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]])  # [pos, layer, d]: layer 0 is zero
    w = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [4.0, 3.0]]])
    geometry = candidate_geometry(CandidateGrids(r, w, [-2, -1])).set_index(["pos", "layer"])
    cell = geometry.loc[(-2, 1)]
    assert cell.norm_r == 2.0 and math.isclose(cell.norm_w, math.sqrt(2))
    assert math.isclose(cell.cos_rw, 1 / math.sqrt(2)) and math.isclose(cell.kept_at_lam1, 1 / math.sqrt(2))
    cell = geometry.loc[(-1, 1)]  # w = (4, 3), r along y: cos 3/5, the part orthogonal to r is (4, 0): 4/5 of ‖w‖
    assert math.isclose(cell.cos_rw, 0.6) and math.isclose(cell.kept_at_lam1, 0.8)
    assert geometry.loc[(-1, 0)].norm_r == 0.0 and math.isnan(geometry.loc[(-1, 0)].cos_rw)
    assert math.isnan(geometry.loc[(-1, 0)].kept_at_lam1)


def test_candidate_geometry_figure_and_training_loss():
    from workbench.viz.figures import candidate_geometry_figure, training_loss

    geometry = pd.DataFrame([{"pos": pos, "layer": layer, "norm_r": 1.0 + layer, "norm_w": 0.5 + layer,
                              "cos_rw": 0.1 * layer * -pos, "kept_at_lam1": 0.9} for pos in (-2, -1)
                             for layer in range(3)])
    fig = candidate_geometry_figure(geometry, {"selections": [{"lam": 1.0, "pos": -1, "layer": 2}]})
    lines = [t for t in fig.data if t.type == "scatter" and t.mode == "lines"]
    assert [t.name for t in lines] == ["pos -2", "pos -1"] * 2  # ‖r‖ then ‖w‖, one line per position
    assert list(lines[1].y) == [1.0, 2.0, 3.0] and list(lines[3].y) == [0.5, 1.5, 2.5]
    assert lines[0].line.color == lines[2].line.color  # a position has one colour in both panels
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert list(heat[0].y) == ["-1", "-2"] and np.allclose(np.array(heat[0].z, dtype=float)[1], [0.0, 0.2, 0.4])
    marks = [t for t in fig.data if t.type == "scatter" and t.mode == "markers"]
    assert len(marks) == 2 and list(marks[0].x) == [2] and list(marks[0].y) == ["-1"]
    loss = training_loss([2.0, 1.5, 1.0]).data[0]
    assert list(loss.x) == [1, 2, 3] and list(loss.y) == [2.0, 1.5, 1.0]


def test_dataset_groups_cover_the_bundled_splits():
    from workbench.data import dataset_group

    assert dataset_group("xstest_safe") == "over-refusal" and dataset_group("harmful_test") == "harmful"
    assert dataset_group("bundled_pseudo_harmful_test") == "over-refusal"
    assert dataset_group("bundled_harmful_val") == "harmful" and dataset_group("bundled_harmless_test") == "harmless"
    assert dataset_group("bundled_harmful") == "harmful" and dataset_group("my_prompts") == "other"
