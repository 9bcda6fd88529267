"""The candidate scorer (`workbench.eval.candidate_scorer`) against each intervention applied alone, one prompt set at
a time, on the tiny random chat model; and the sweep's typed rows (`CandidateRow`): the grid they enumerate and the
`sweep.csv` they make."""

import itertools
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from tiny_model import TINY_RUN_RULE

from workbench.eval.candidate_scorer import CandidateScorer
from workbench.eval.scoring import last_position_logits
from workbench.interventions.hooks import Ablation, Addition, applied
from workbench.method.grids import CandidateGrids
from workbench.method.refusal_math import kl_divergence, refusal_score
from workbench.stages.run_dir import RunDir
from workbench.stages.sweep import SweepConfig, read_sweep
from workbench.stages.sweep_algorithms import COLUMNS, CandidateRow, candidate_rows, to_frame

PROMPTS = ["Hi", "How do I kill a stuck process?", "Write a haiku about rain, in the style of a weather report.",
           "What is a black hole?", "How do I make a bomb?", "ok",
           "Explain, step by step and with examples, how a compiler turns source code into machine code."]


def _alone(lm, intervention, prompts: list[str], base) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prompt refusal score and KL with one intervention applied by itself, every prompt in full."""
    with applied(lm, intervention):
        logits = last_position_logits(lm, prompts, batch_size=len(prompts), last_only=False)
    return refusal_score(logits, lm.info.refusal_tokens), kl_divergence(base, logits)


@pytest.fixture(scope="module")
def vectors(tiny) -> torch.Tensor:
    torch.manual_seed(0)
    return 4.0 * torch.randn(3, tiny.info.d_model)


@pytest.mark.parametrize(("batch_size", "share_prefix"), [(4, True), (3, False), (32, True)])
def test_ablation_per_prompt_equals_each_direction_alone(tiny, vectors, batch_size, share_prefix):
    """Three directions over seven prompts of different lengths: in pieces of a few prompts (several directions per
    forward pass) or in one, prefix reused or not; every score back in the order of the prompts."""
    scorer = CandidateScorer(tiny, batch_size=batch_size, share_prefix=share_prefix)
    base = last_position_logits(tiny, PROMPTS)
    directions = vectors / vectors.norm(dim=-1, keepdim=True)
    rs, kl = scorer.ablation_per_prompt(PROMPTS, base, directions)
    assert rs.shape == kl.shape == (3, len(PROMPTS))
    for i, direction in enumerate(directions):
        expected_rs, expected_kl = _alone(tiny, Ablation(direction), PROMPTS, base)
        torch.testing.assert_close(rs[i], expected_rs, atol=1e-4, rtol=0)
        torch.testing.assert_close(kl[i], expected_kl, atol=1e-4, rtol=0)
    assert kl.min() > 1e-3 and rs.std() > 0.1  # the ablations move the logits, differently per prompt


def test_steering_per_prompt_equals_each_addition_alone(tiny, vectors):
    """One steering vector per group, at different layers (two groups share layer 1), added with α = 0.5."""
    scorer = CandidateScorer(tiny, batch_size=5)
    base = last_position_logits(tiny, PROMPTS)
    layers = [1, 3, 1]
    rs, kl = scorer.steering_per_prompt(PROMPTS, base, vectors, layers, 0.5)
    for i, (vector, layer) in enumerate(zip(vectors, layers, strict=True)):
        expected_rs, expected_kl = _alone(tiny, Addition(vector, layer, 0.5), PROMPTS, base)
        torch.testing.assert_close(rs[i], expected_rs, atol=1e-4, rtol=0)
        torch.testing.assert_close(kl[i], expected_kl, atol=1e-4, rtol=0)
    assert kl.min() > 1e-3


def test_one_candidate_scores_are_set_means(tiny, vectors):
    """`ablation_scores` and `steering_scores`: the mean refusal score on the target prompts and the mean KL on the
    harmless ones (NaN for an empty set)."""
    scorer = CandidateScorer(tiny, batch_size=3)
    target, harmless = PROMPTS[:4], PROMPTS[4:]
    harmless_base = last_position_logits(tiny, harmless)
    direction = vectors[0] / vectors[0].norm()
    rs, kl = scorer.ablation_scores(direction, target, harmless, harmless_base)
    expected_rs, _ = _alone(tiny, Ablation(direction), target, last_position_logits(tiny, target))
    _, expected_kl = _alone(tiny, Ablation(direction), harmless, harmless_base)
    assert rs == pytest.approx(expected_rs.mean().item(), abs=1e-4)
    assert kl == pytest.approx(expected_kl.mean().item(), abs=1e-4)
    only_target = scorer.ablation_scores(direction, target, [], harmless_base[:0])
    assert only_target[0] == pytest.approx(rs, abs=1e-6) and math.isnan(only_target[1])
    steer_rs, steer_kl = scorer.steering_scores(vectors[1], 2, 1.0, harmless, harmless_base)
    expected_rs, expected_kl = _alone(tiny, Addition(vectors[1], 2), harmless, harmless_base)
    assert (steer_rs, steer_kl) == pytest.approx((expected_rs.mean().item(), expected_kl.mean().item()), abs=1e-4)


def _cost(pieces: list[list[int]], lengths: list[int], n_prefix: int) -> int:
    """Tokens one intervention runs: each piece padded to its longest prompt, plus the prefix once per piece."""
    return sum(len(piece) * (max(lengths[i] for i in piece) - n_prefix) + n_prefix for piece in pieces)


@pytest.mark.parametrize(("batch_size", "share_prefix"), [(1, True), (3, True), (4, False), (32, True)])
def test_pieces_are_the_cheapest_cut_of_the_prompts_by_length(tiny, batch_size, share_prefix):
    """Against every cut of the length-sorted prompts into consecutive pieces of at most `batch_size`."""
    lengths = [len(tiny.chat.tokenize([p]).input_ids[0]) for p in PROMPTS]
    n_prefix = len(tiny.chat.prefix_token_ids) if share_prefix else 0
    pieces = CandidateScorer(tiny, batch_size=batch_size, share_prefix=share_prefix).pieces(PROMPTS)
    order = [i for piece in pieces for i in piece]
    assert sorted(order) == list(range(len(PROMPTS))) and [lengths[i] for i in order] == sorted(lengths)
    assert max(map(len, pieces)) <= batch_size
    cuts = [[order[a:b] for a, b in zip((0, *ends), (*ends, len(order)), strict=True)]
            for k in range(len(order)) for ends in itertools.combinations(range(1, len(order)), k)]
    feasible = [c for c in cuts if max(map(len, c)) <= batch_size]
    assert _cost(pieces, lengths, n_prefix) == min(_cost(c, lengths, n_prefix) for c in feasible)
    assert len(set(lengths)) > 3  # the prompts differ in length: the cut matters


# ---- the typed rows -------------------------------------------------------------------------------------------------


def _grids() -> CandidateGrids:
    """Three positions × four layers of width 8; layer 0 of both grids zero (as at template tokens), and the false
    grid also zero at (pos −1, layer 2)."""
    torch.manual_seed(1)
    true, false = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    true[:, 0] = false[:, 0] = 0
    false[2, 2] = 0
    return CandidateGrids(true, false, positions=[-3, -2, -1])


def test_candidate_rows_enumerate_the_grid_with_reasons():
    grids = _grids()
    config = SweepConfig(lams=(1.0, 0.5), layers=(1, 2), positions=(-1, -3))
    rows = candidate_rows(grids, config, replace(TINY_RUN_RULE, prune_layer_fraction=0.25))  # prunes layer 3
    assert len(rows) == 3 * 3 * 4 and [r.group for r in rows[::12]][1:] == [("w'", 1.0), ("w'", 0.5)]
    assert all(math.isnan(r.lam) for r in rows[:12])
    notes = {(r.vector, r.lam if r.vector == "w'" else None, r.pos, r.layer): r.sweep_note for r in rows}
    assert notes[("r", None, -1, 0)] == notes[("w'", 0.5, -3, 0)] == "zero vector (NaN)"
    assert notes[("w'", 1.0, -1, 2)] == "zero vector (NaN)" and notes[("r", None, -1, 2)] == ""
    assert notes[("r", None, -2, 1)] == "not in sweep grid" and notes[("w'", 1.0, -1, 3)] == "last 25% of layers"
    to_score = {(r.vector, r.lam if r.vector == "w'" else None, r.pos, r.layer) for r in rows
                if r.stage == "screened"}
    assert to_score == {("r", None, -1, 1), ("r", None, -1, 2), ("r", None, -3, 1), ("r", None, -3, 2),
                        ("w'", 1.0, -1, 1), ("w'", 1.0, -3, 1), ("w'", 1.0, -3, 2),
                        ("w'", 0.5, -1, 1), ("w'", 0.5, -3, 1), ("w'", 0.5, -3, 2)}
    assert all(r.stage == "skipped" for r in rows if r.sweep_note)
    row = next(r for r in rows if (r.pos, r.layer) == (-1, 2) and r.is_r)
    assert row.cell(grids) == (2, 2) and row.direction_lam is None
    assert torch.equal(grids.directions("r")[row.cell(grids)], grids.cell("r", -1, 2))


def test_rows_make_the_sweep_csv(tmp_path):
    """The typed rows become `sweep.csv` with its columns in order, and read back with the same values."""
    assert COLUMNS == ["vector", "lam", "pos", "layer", "ablation_refusal_score_pseudo_harmful",
                       "ablation_refusal_score_harmful", "ablation_kl", "steering_refusal_score", "steering_kl",
                       "screen_refusal_score", "screen_kl", "stage", "sweep_note"]
    rows = [CandidateRow("r", math.nan, -1, 2, ablation_refusal_score_harmful=1.5, ablation_kl=0.25,
                         steering_refusal_score=-0.5, steering_kl=0.125, stage="full"),
            CandidateRow("w'", 0.5, -3, 1, screen_refusal_score=2.0, screen_kl=0.75, sweep_note="screened out"),
            CandidateRow("w'", 0.5, -2, 0, stage="skipped", sweep_note="zero vector (NaN)")]
    run = RunDir(tmp_path)
    to_frame(rows).to_csv(run.file("sweep.csv"), index=False)
    frame = read_sweep(run)
    assert list(frame.columns) == COLUMNS and list(frame.vector) == ["r", "w'", "w'"]
    pd.testing.assert_frame_equal(frame, to_frame(rows))
    back = [CandidateRow(**record) for record in frame.to_dict("records")]
    assert math.isnan(back[0].lam) and back[0].ablation_refusal_score_harmful == 1.5 and back[0].steering_kl == 0.125
    assert (back[0].pos, back[0].layer, back[0].stage, back[0].sweep_note) == (-1, 2, "full", "")
    assert (back[1].lam, back[1].screen_kl, back[1].sweep_note) == (0.5, 0.75, "screened out")
    assert math.isnan(back[1].ablation_kl)
