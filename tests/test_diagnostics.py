"""Direction diagnostics: exact math on hand-built activations, and the stage on the tiny model's run."""

import math

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.method.diagnostics import COLUMNS, auroc, direction_diagnostics, projections
from workbench.method.grids import CandidateGrids


def test_auroc_is_the_mann_whitney_probability():
    t = torch.tensor
    assert auroc(t([3.0, 4.0]), t([1.0, 2.0])) == 1.0
    assert auroc(t([1.0, 2.0]), t([3.0, 4.0])) == 0.0
    assert auroc(t([1.0, 1.0]), t([1.0])) == 0.5
    assert auroc(t([1.0, 3.0]), t([2.0])) == 0.5
    assert auroc(t([1.0, 3.0, 5.0]), t([2.0, 4.0])) == 3 / 6  # pairs won: 3>2, 5>2, 5>4
    assert math.isnan(auroc(t([]), t([1.0])))
    # against the rank-sum formula on data without ties
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, generator=g) + 0.5, torch.randn(30, generator=g)
    ranks = torch.cat([a, b]).argsort().argsort().double() + 1
    u = ranks[:40].sum() - 40 * 41 / 2
    assert auroc(a, b) == pytest.approx(float(u) / (40 * 30), abs=1e-12)


def _grids() -> CandidateGrids:
    """One position, two layers, d = 3. Layer 0: r = 2·e1, w = e1 + e2 (cos 1/√2, w′(λ=1) = e2). Layer 1: zero."""
    r = torch.zeros(1, 2, 3)
    w = torch.zeros(1, 2, 3)
    r[0, 0] = torch.tensor([2.0, 0, 0])
    w[0, 0] = torch.tensor([1.0, 1.0, 0])
    return CandidateGrids(r, w, [-1])


def _acts(rows: list[list[float]]) -> torch.Tensor:
    x = torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 1, 1, 3)
    return x.expand(len(rows), 1, 2, 3).clone()


ACTS = {  # the third coordinate is noise orthogonal to every direction
    "harmless": _acts([[0, 0, 0], [0, 0, 1]]),
    "harmful": _acts([[2, 0, 0], [2, 0, 5]]),
    "pseudo_harmful": _acts([[1, 1, 0], [1, 1, -3]]),
}


def test_direction_diagnostics_exact_values():
    table = direction_diagnostics(_grids(), ACTS, lams=(1.0, 0.0))
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 4  # (r, w, w′ λ=1, w′ λ=0) × two layers
    r = table[(table.layer == 0) & (table.vector == "r")].iloc[0]
    assert r.cos_rw == pytest.approx(1 / math.sqrt(2))
    assert (r.mean_harmless, r.mean_harmful, r.mean_pseudo_harmful) == (0.0, 2.0, 1.0)
    assert (r.std_harmless, r.std_harmful, r.auroc_harmful_vs_pseudo, r.auroc_pseudo_vs_harmless) == (0, 0, 1.0, 1.0)
    w = table[(table.layer == 0) & (table.vector == "w")].iloc[0]
    assert w.mean_harmful == pytest.approx(math.sqrt(2)) and w.mean_pseudo_harmful == pytest.approx(math.sqrt(2))
    assert w.auroc_harmful_vs_pseudo == 0.5  # ŵ does not tell harmful from pseudo-harmful
    w1 = table[(table.layer == 0) & (table.vector == "w'") & (table.lam == 1.0)].iloc[0]
    assert (w1.mean_harmless, w1.mean_harmful, w1.mean_pseudo_harmful) == pytest.approx((0.0, 0.0, 1.0), abs=1e-6)
    assert w1.auroc_pseudo_vs_harmless == 1.0 and w1.auroc_harmful_vs_pseudo == 0.0  # ŵ′ = e2: surgical here
    w0 = table[(table.layer == 0) & (table.vector == "w'") & (table.lam == 0.0)].iloc[0]
    assert w0.mean_pseudo_harmful == pytest.approx(w.mean_pseudo_harmful, abs=1e-6)  # λ = 0: ŵ′ = ŵ
    zero = table[table.layer == 1]
    assert zero.cos_rw.isna().all() and zero.mean_harmless.isna().all() and zero.auroc_pseudo_vs_harmless.isna().all()


def test_projections_are_per_cell_dot_products_with_unit_vectors():
    g = torch.Generator().manual_seed(1)
    acts, dirs = torch.randn(5, 2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    expected = torch.stack([torch.stack([acts[:, p, layer] @ (dirs[p, layer] / dirs[p, layer].norm())
                                         for layer in range(3)], -1) for p in range(2)], 1)
    assert torch.allclose(projections(acts, dirs).float(), expected, atol=1e-5)


def test_missing_class_is_refused():
    with pytest.raises(ValueError, match="pseudo_harmful"):
        direction_diagnostics(_grids(), {k: v for k, v in ACTS.items() if k != "pseudo_harmful"})


def test_diagnose_stage_on_tiny_run_matches_the_extraction_means(tiny, tiny_run):
    """Projecting the extraction's own (filtered) training prompts: mean(harmful) − mean(harmless) along r̂ is ‖r‖ and
    mean(pseudo) − mean(harmless) along ŵ is ‖w‖ at every cell; the figures stage draws the heatmaps."""
    from tiny_model import TINY_RUN_EXTRACT

    from workbench.stages.diagnose import DiagnoseConfig, diagnose, read_diagnostics
    from workbench.stages.extract import load_candidates
    from workbench.stages.figures import run_figures

    config = DiagnoseConfig(harmless_val=TINY_RUN_EXTRACT.harmless, harmful_val=TINY_RUN_EXTRACT.harmful,
                            pseudo_harmful_val=TINY_RUN_EXTRACT.pseudo_harmful, n_val=TINY_RUN_EXTRACT.n_train)
    table = diagnose(tiny, tiny_run, config)
    grids = load_candidates(tiny_run)
    record = tiny_run.read_json("diagnostics.json")
    counts = tiny_run.read_json("candidates.json")["prompt_counts"]
    assert {c: v["kept"] for c, v in record["prompt_counts"].items()} == {c: v["kept"] for c, v in counts.items()}
    assert len(table) == grids.n_pos * grids.n_layers * (2 + 2)  # r, w, w′ at the sweep's λ = 1 and 0
    assert read_diagnostics(tiny_run).shape == table.shape
    for vector, grid, higher in (("r", grids.r, "harmful"), ("w", grids.w, "pseudo_harmful")):
        rows = table[table.vector == vector]
        norms = grid.norm(dim=-1)
        for row in rows.itertuples():
            p = grids.positions.index(row.pos)
            if norms[p, row.layer] > 1e-6:
                gap = getattr(row, f"mean_{higher}") - row.mean_harmless
                assert gap == pytest.approx(float(norms[p, row.layer]), rel=1e-3, abs=1e-4)
    assert [s["lam"] for s in record["selected"]] == [1.0, 0.0]
    written = run_figures(tiny_run)
    assert tiny_run.file("figures/fig4_diagnostics.html") in written


def test_diagnose_refuses_a_filter_that_keeps_too_few(tiny, tiny_run):
    from workbench.stages.diagnose import DiagnoseConfig, diagnose

    with pytest.raises(WorkbenchError, match="kept"):
        diagnose(tiny, tiny_run, DiagnoseConfig(n_val=1))
    with pytest.raises(WorkbenchError, match="λ must be in"):
        DiagnoseConfig(lams=(1.5,)).validate()
