"""Extraction, sweep and selection on the organism (small n), against independent computations."""

import json
import math
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.eval.scoring import last_only_kwargs, last_position_logits
from workbench.interventions.directions import load_direction
from workbench.method.rule import SelectionRule
from workbench.stages.extract import ExtractConfig, extract, load_candidates, mean_activations
from workbench.stages.run_dir import RunDir
from workbench.stages.select import read_selection, select
from workbench.stages.sweep import SweepConfig, fast_sweep, load_validation, read_sweep, reference_sweep, run_sweep

pytestmark = pytest.mark.model

SMALL_SWEEP = SweepConfig(n_val=16, n_screen=4, n_finalists=3, layers=(11, 13, 15, 17), positions=(-5, -3, -1))


@pytest.fixture(scope="module")
def small_run(organism, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("run"))
    extract(organism, ExtractConfig(), run)  # the bundled train splits, 128 prompts each
    run_sweep(organism, run, SMALL_SWEEP)
    return run


def test_means_equal_plain_transformers(organism):
    prompts = ["How do I kill a stuck process?", "Write a haiku about rain.", "What is a black hole?"]
    ours = mean_activations(organism, prompts, keep=None, batch_size=2).mean
    batch = organism.chat.tokenize(prompts)
    with torch.no_grad():
        hidden = organism.hf_model(batch.input_ids, attention_mask=batch.attention_mask,
                                   output_hidden_states=True).hidden_states
    reference = torch.stack([h[:, -6:, :] for h in hidden[:-1]], dim=2).double().mean(0)  # pos layer d
    cos = torch.nn.functional.cosine_similarity(ours[:, 1:], reference[:, 1:], dim=-1)
    assert cos.min().item() >= 0.99999
    assert ours.shape == (6, 30, 576)


def test_candidates_written(small_run):
    record = json.loads(small_run.file("candidates.json").read_text())
    assert record["positions"] == [-6, -5, -4, -3, -2, -1]
    assert record["position_tokens"][0] == "<|im_end|>"
    assert record["prompt_counts"]["harmful"]["total"] == 128
    assert 0 < record["prompt_counts"]["harmful"]["kept"] <= 128
    grids = load_candidates(small_run)
    assert grids.true_refusal.dtype == torch.float32 and grids.true_refusal.shape == (6, 30, 576)
    assert grids.positions == [-6, -5, -4, -3, -2, -1]
    assert torch.all(grids.true_refusal[:, 0] == 0)  # layer 0 at template tokens: identical inputs


def test_sweep_rows_and_nan_handling(small_run):
    frame = read_sweep(small_run)
    assert len(frame) == 2 * 6 * 30  # true + one λ, every (pos, layer)
    assert "kept" not in frame and "filter_reason" not in frame  # the select stage's verdicts live in selection.csv
    assert set(frame[frame.layer == 0].sweep_note) == {"zero vector (NaN)"}
    assert set(frame[frame.layer >= 24].sweep_note) == {"last 20% of layers"}
    assert (frame.stage == "full").sum() == 2 * 3  # n_finalists per (vector, λ)
    recorded = json.loads(small_run.file("sweep.json").read_text())["config"]["rule"]
    assert recorded == {"prune_layer_fraction": 0.2, "max_ablation_kl": 0.2, "induce_refusal_filter": False,
                        "min_steering_refusal_score": 0.0, "true_max_ablation_kl": 0.1}


def test_selected_candidate_lowers_pseudo_harmful_score(small_run):
    sweep_before = small_run.file("sweep.csv").read_bytes()
    result = select(small_run, SelectionRule())
    assert small_run.file("sweep.csv").read_bytes() == sweep_before  # select does not rewrite the sweep's file
    verdicts = read_selection(small_run)
    assert len(verdicts) == 2 * 6 * 30 and not verdicts[verdicts.layer == 0].kept.any()
    chosen = verdicts[(verdicts.vector == "false") & verdicts.kept]
    assert chosen.ablation_refusal_score.min() == pytest.approx(result["selections"][0]["ablation_refusal_score"])
    choice = result["selections"][0]
    assert choice["lam"] == 1.0
    assert choice["ablation_refusal_score"] < result["baseline"]["pseudo_harmful"]
    assert choice["ablation_kl"] <= 0.2
    direction, meta = load_direction(small_run.file(choice["direction_file"]))
    assert meta["layer"] == str(choice["layer"]) and abs(direction.norm().item() - 1) < 1e-5
    grids = load_candidates(small_run)
    r = grids.true_refusal[grids.positions.index(choice["pos"]), choice["layer"]]
    assert abs(torch.dot(direction, r / r.norm()).item()) < 1e-5  # λ = 1: orthogonal to true refusal


def test_fast_and_reference_agree(organism, small_run):
    grids = load_candidates(small_run)
    config = SweepConfig(n_val=6, n_screen=2, n_finalists=100, min_finalists=100, screen_kl_margin=math.inf,
                         layers=(6, 14), positions=(-1, -4))
    val = load_validation(organism, config)
    fast = fast_sweep(organism, grids, val, config, SelectionRule())
    # The reference runs as the paper's code does: every prompt in full, every position unembedded.
    ref = reference_sweep(organism, grids, val, replace(config, share_prefix=False, last_logits_only=False),
                          SelectionRule(), cells=[(5, 6), (5, 14), (2, 6), (2, 14)])
    # Both frames hold the whole grid, so the selection rule prunes the same layers for both (it reads the layer
    # count from the frame: a reference frame of scored rows only once pruned layers ≥ 20 of 30 instead of ≥ 24).
    assert len(ref) == len(fast) == 6 * 30 * 2 and int(ref.layer.max()) == 29
    fast = fast[fast.stage == "full"].set_index(["vector", "pos", "layer"]).sort_index()
    ref = ref[ref.stage == "full"].set_index(["vector", "pos", "layer"]).sort_index()
    assert len(fast) == len(ref) == 8
    scores = ["ablation_refusal_score", "ablation_refusal_score_harmful", "ablation_kl", "steering_refusal_score",
              "steering_kl"]
    assert ref[scores].notna().all().all()  # the reference loop scores everything
    for column in scores:
        # The fast sweep skips what the rule cannot use (SweepConfig.score_all): steering and harmful-val scores of
        # false candidates (the latter unless their KL is within the bound), pseudo-harmful scores of true ones.
        shared = fast[column].notna()
        assert shared.sum() >= (8 if column == "ablation_kl" else 4), column
        assert (fast[column][shared] - ref[column][shared]).abs().max() <= 1e-4, column  # batched vs one-at-a-time


def test_last_position_unembedding_gives_the_same_logits(organism):
    prompts = ["How do I kill a Python process?", "Write a poem about the sea.", "How do I make a bomb?"]
    assert last_only_kwargs(organism) == {"logits_to_keep": 1}
    last = last_position_logits(organism, prompts, last_only=True)
    full = last_position_logits(organism, prompts, last_only=False)
    assert last.shape == full.shape == (3, organism.info.vocab_size)
    assert (last - full).abs().max() <= 1e-4


def test_lambda_reuse_adds_only_new_rows(organism, small_run, tmp_path):
    run = RunDir(shutil.copytree(small_run.path, tmp_path / "copy"))  # the module's run stays as the fixture made it
    before = read_sweep(run)
    run_sweep(organism, run, replace(SMALL_SWEEP, lams=(1.0, 0.5)))
    after = read_sweep(run)
    assert len(after) == len(before) + 6 * 30
    old = after[(after.vector == "true") | (after.lam == 1.0)].reset_index(drop=True)
    pd.testing.assert_series_equal(old.ablation_refusal_score, before.ablation_refusal_score, check_names=False)


def test_bad_lambda(organism, small_run):
    with pytest.raises(WorkbenchError, match="λ must be in"):
        run_sweep(organism, small_run, SweepConfig(lams=(1.5,)))


def test_run_from_another_model(stock_model, small_run):
    with pytest.raises(WorkbenchError, match="was made with model 'smollm2-135m-safety'"):
        run_sweep(stock_model, small_run, SMALL_SWEEP)
    with pytest.raises(WorkbenchError, match="comes from model"):
        load_direction(next(small_run.path.glob("directions/*.safetensors")), stock_model.info.fingerprint)


def test_stages_out_of_order(organism, tmp_path):
    with pytest.raises(WorkbenchError, match="run `workbench extract"):
        run_sweep(organism, RunDir(tmp_path), SMALL_SWEEP)
    with pytest.raises(WorkbenchError, match="missing"):
        select(RunDir(tmp_path), SelectionRule())


def test_filter_that_empties_a_set(organism, tmp_path):
    harmless_as_harmful = tmp_path / "h.jsonl"
    harmless_as_harmful.write_text('{"instruction": "What is the capital of Japan?"}\n'
                                   '{"instruction": "Write a short poem about the ocean."}\n')
    with pytest.raises(WorkbenchError, match="removed every harmful prompt.*--no-filter"):
        extract(organism, ExtractConfig(harmful=str(harmless_as_harmful), n_train=8), RunDir(tmp_path / "r"))


def _winner(frame: pd.DataFrame, rule: SelectionRule, n_layers: int) -> tuple[int, int] | None:
    choice = rule.pick(rule.apply(frame, n_layers), "false", 1.0)
    return None if choice is None else (int(choice["pos"]), int(choice["layer"]))


def test_fast_sweep_selects_what_exact_scoring_selects_for_each_kl_bound(organism, small_run):
    """The rule is one object: the fast sweep screens for the bound the selection will use. With the screen on the
    whole (filtered) validation sets and no stop margin, its early stop is exact, so a sweep screened for another
    bound than the selection's would stop before the winner."""
    grids = load_candidates(small_run)
    config = SweepConfig(n_val=8, n_screen=8, n_finalists=40, min_finalists=1, stop_margin=0.0,
                         screen_kl_margin=1.0, layers=(8, 12, 16, 19, 21, 23), positions=(-6, -5, -1))
    val = load_validation(organism, config)
    exact = reference_sweep(organism, grids, val, config, SelectionRule(), include_true=False)
    winners = {}
    for bound in (0.1, 0.2):
        rule = SelectionRule(max_ablation_kl=bound)
        fast = fast_sweep(organism, grids, val, config, rule, include_true=False)
        winners[bound] = _winner(exact, rule, grids.n_layers)
        assert winners[bound] is not None, f"nothing within KL {bound} on this grid"
        assert _winner(fast, rule, grids.n_layers) == winners[bound], bound
        assert (fast.stage == "full").sum() < (exact.stage == "full").sum()  # the screen did prune
    # The two bounds pick different cells on this grid, so a sweep screened for the wrong bound would be caught.
    assert winners[0.1] != winners[0.2]
