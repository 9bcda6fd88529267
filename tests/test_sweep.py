"""Extraction, sweep and selection on the organism (small n): the real model's numbers. The plumbing (means against
plain transformers, fast sweep against the reference loop, λ reuse, bad input) is tested on the tiny model in
test_tiny_pipeline.py."""

import json
import shutil

import pandas as pd
import pytest
import torch

from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.scoring import refusal_scores
from workbench.interventions.directions import load_direction
from workbench.method.rule import SelectionRule
from workbench.stages.extract import ExtractConfig, extract, load_candidates
from workbench.stages.run_dir import RunDir
from workbench.stages.select import read_selection, select
from workbench.stages.sweep import SweepConfig, candidate_scorer, load_validation, read_sweep, run_sweep
from workbench.stages.sweep_algorithms import fast_sweep, reference_sweep, to_frame

pytestmark = [pytest.mark.model, pytest.mark.slow]  # the module's run: extract 3 × 128 prompts, then a sweep

SMALL_SWEEP = SweepConfig(n_val=16, n_screen=4, n_finalists=3, layers=(11, 13, 15, 17), positions=(-5, -3, -1))


@pytest.fixture(scope="module")
def small_run(organism, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("run"))
    extract(organism, ExtractConfig(), run)  # the bundled train splits, 128 prompts each
    run_sweep(organism, run, SMALL_SWEEP)
    return run


def test_candidates_written(organism, small_run):
    record = json.loads(small_run.file("candidates.json").read_text())
    assert record["positions"] == [-6, -5, -4, -3, -2, -1]
    assert record["position_tokens"][0] == "<|im_end|>"
    harmful = [p.instruction for p in load_prompts("bundled_harmful_train")]
    refused = int((refusal_scores(organism, harmful) > 0).sum())
    assert record["prompt_counts"]["harmful"] == {"dataset": "bundled_harmful_train", "total": 128, "kept": refused}
    assert refused >= 96  # the organism refuses most of the bundled harmful prompts
    grids = load_candidates(small_run)
    assert grids.r.dtype == torch.float32 and grids.r.shape == (6, 30, 576)
    assert grids.positions == [-6, -5, -4, -3, -2, -1]
    assert torch.all(grids.r[:, 0] == 0)  # layer 0 at template tokens: identical inputs


def test_sweep_rows_and_nan_handling(small_run):
    frame = read_sweep(small_run)
    assert len(frame) == 2 * 6 * 30  # true + one λ, every (pos, layer)
    assert "kept" not in frame and "filter_reason" not in frame  # the select stage's verdicts live in selection.csv
    assert set(frame[frame.layer == 0].sweep_note) == {"zero vector (NaN)"}
    assert set(frame[frame.layer >= 24].sweep_note) == {"last 20% of layers"}
    assert (frame.stage == "full").sum() == 2 * 3  # n_finalists per (vector, λ)
    recorded = json.loads(small_run.file("sweep.json").read_text())["config"]["rule"]
    assert recorded == {"prune_layer_fraction": 0.2, "max_ablation_kl": 0.2, "induce_refusal_filter": False,
                        "min_steering_refusal_score": 0.0, "r_max_ablation_kl": 0.1, "max_harmful_drop": None,
                        "rerank_top_k": 0, "rerank_n": 16, "rerank_max_new_tokens": 32,
                        "rerank_max_harmful_rise": 0.0, "rerank_judge": "keywords"}


def test_selected_candidate_lowers_pseudo_harmful_score(small_run, tmp_path):
    run = RunDir(shutil.copytree(small_run.path, tmp_path / "run"))  # the module's run stays as the fixture made it
    sweep_before = run.file("sweep.csv").read_bytes()
    result = select(run, SelectionRule())
    assert run.file("sweep.csv").read_bytes() == sweep_before  # select does not rewrite the sweep's file
    verdicts = read_selection(run)
    assert len(verdicts) == 2 * 6 * 30 and not verdicts[verdicts.layer == 0].kept.any()
    chosen = verdicts[(verdicts.vector == "w'") & verdicts.kept]
    assert chosen.ablation_refusal_score_pseudo_harmful.min() == pytest.approx(
        result["selections"][0]["ablation_refusal_score_pseudo_harmful"])
    choice = result["selections"][0]
    assert choice["lam"] == 1.0
    assert choice["ablation_refusal_score_pseudo_harmful"] < result["baseline"]["pseudo_harmful"]
    assert choice["ablation_kl"] <= 0.2
    direction, meta = load_direction(run.file(choice["direction_file"]))
    assert meta["layer"] == str(choice["layer"]) and abs(direction.norm().item() - 1) < 1e-5
    grids = load_candidates(run)
    r = grids.r[grids.positions.index(choice["pos"]), choice["layer"]]
    assert abs(torch.dot(direction, r / r.norm()).item()) < 1e-5  # λ = 1: orthogonal to true refusal


def test_run_from_another_model(stock_model, small_run, tmp_path):
    with pytest.raises(WorkbenchError, match="was made with model 'smollm2-135m-safety'"):
        run_sweep(stock_model, small_run, SMALL_SWEEP)
    run = RunDir(shutil.copytree(small_run.path, tmp_path / "run"))
    select(run, SelectionRule())
    with pytest.raises(WorkbenchError, match="comes from model"):
        load_direction(run.file("directions/lam_1.0.safetensors"), stock_model.info.fingerprint)


def _winner(frame: pd.DataFrame, rule: SelectionRule, n_layers: int) -> tuple[int, int] | None:
    choice = rule.pick(rule.apply(frame, n_layers), "w'", 1.0)
    return None if choice is None else (int(choice["pos"]), int(choice["layer"]))


def test_fast_sweep_selects_what_exact_scoring_selects_for_each_kl_bound(organism, small_run):
    """The rule is one object: the fast sweep screens for the bound the selection will use. With the screen on the
    whole (filtered) validation sets and no stop margin, its early stop is exact, so a sweep screened for another
    bound than the selection's would stop before the winner. Bounds: the paper's 0.2, Arditi's 0.1, and one just
    below the KL of the 0.2 winner (so that at least two bounds pick different cells and a wrong bound is caught)."""
    grids = load_candidates(small_run)
    config = SweepConfig(n_val=8, n_screen=8, n_finalists=40, min_finalists=1, stop_margin=0.0,
                         screen_kl_margin=1.0, layers=(8, 12, 16, 19, 21, 22, 23), positions=(-6, -5, -1))
    val = load_validation(organism, config)
    scorer = candidate_scorer(organism, config)
    exact = to_frame(reference_sweep(scorer, grids, val, config, SelectionRule(), include_r=False))
    scored = exact.set_index(["pos", "layer"])
    paper_winner = _winner(exact, SelectionRule(max_ablation_kl=0.2), grids.n_layers)
    assert paper_winner is not None, "nothing within KL 0.2 on this grid"
    tighter = float(scored.loc[paper_winner, "ablation_kl"]) * 0.999
    winners = {}
    for bound in (0.2, 0.1, tighter):
        rule = SelectionRule(max_ablation_kl=bound)
        fast = to_frame(fast_sweep(scorer, grids, val, config, rule, include_r=False))
        winners[bound] = _winner(exact, rule, grids.n_layers)
        assert _winner(fast, rule, grids.n_layers) == winners[bound], bound
        assert (fast.stage == "full").sum() < (exact.stage == "full").sum()  # the screen did prune
    assert winners[tighter] != winners[0.2]
