"""The exact sweep mode (`SweepConfig.mode = "exact"`): every candidate of the grid fully scored, batched, with the
same scores as the reference loop (tiny model in the unit tier, the organism in the model tier); its settings and
the rules it serves."""

import json
import math
from dataclasses import asdict, replace

import pandas as pd
import pytest
from tiny_model import TINY_RUN_RULE

from workbench.errors import WorkbenchError
from workbench.method.rule import SelectionRule
from workbench.stages.extract import load_candidates
from workbench.stages.figures import run_figures
from workbench.stages.select import select
from workbench.stages.sweep import (
    RecordedSweep,
    SweepConfig,
    candidate_scorer,
    load_validation,
    read_sweep,
    recorded_sweep,
    run_sweep,
    same_settings,
)
from workbench.stages.sweep_algorithms import exact_sweep, reference_sweep, to_frame

PRUNE_LAST = replace(TINY_RUN_RULE, prune_layer_fraction=0.25)
"""The tiny run's loose rule, pruning the last of the tiny model's 4 layers."""
SCORES = ["ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful", "ablation_kl",
          "steering_refusal_score", "steering_kl"]


def _full(frame: pd.DataFrame) -> pd.DataFrame:
    full = frame[frame.stage == "full"].fillna({"lam": -1.0})
    return full.set_index(["vector", "lam", "pos", "layer"]).sort_index()


@pytest.mark.parametrize("share_prefix", [True, False])
def test_exact_sweep_equals_reference_loop(tiny, tiny_run, share_prefix):
    """Every score of every candidate of a small grid (true, two λ; 2 positions × 3 layers, one pruned) within
    1e-4 of the reference loop, which runs as the paper's code: one candidate at a time, every prompt in full, every
    position unembedded. A batch of 20 rows packs several candidates per forward pass on short sets and splits the
    three sets (≈ 24 prompts) over passes: both paths of the batching are taken."""
    grids = load_candidates(tiny_run)
    config = SweepConfig(mode="exact", lams=(1.0, 0.5), n_val=16, layers=(1, 2, 3), positions=(-1, -4),
                         batch_size=20, share_prefix=share_prefix)
    rule = PRUNE_LAST
    val = load_validation(tiny, config)
    assert len(val.harmless) <= config.batch_size < len(val.pseudo_harmful + val.harmful + val.harmless)
    exact = to_frame(exact_sweep(candidate_scorer(tiny, config), grids, val, config, rule))
    paper = candidate_scorer(tiny, replace(config, share_prefix=False, last_logits_only=False))
    reference = to_frame(reference_sweep(paper, grids, val, config, rule))
    assert len(exact) == len(reference) == 3 * 6 * 4
    assert set(exact[exact.layer == 3].sweep_note) == {"last 25% of layers"}  # pruned: not scored
    assert (exact.stage == "full").sum() == 3 * 2 * 2 and not (exact.stage == "screened").any()
    assert set(exact.loc[exact.stage == "full", "sweep_note"]) == {""}
    exact, reference = _full(exact), _full(reference)
    assert list(exact.index) == list(reference.index)
    assert exact[SCORES].notna().all().all() and reference[SCORES].notna().all().all()
    assert (exact[SCORES] - reference[SCORES]).abs().max().max() <= 1e-4
    assert reference.ablation_kl.min() > 0.01 and reference.steering_kl.min() > 0.01  # not trivially equal
    assert reference.steering_refusal_score.std() > 0.1  # the per-row steering vectors differ


def test_exact_mode_is_recorded_and_serves_any_rule_with_its_pruning(tiny, tiny_run, monkeypatch):
    from workbench.stages import sweep_algorithms

    fig4 = tiny_run.file("figures/fig4_sweep.html")
    run_figures(tiny_run)  # the fixture's fast sweep (n_screen 4)
    assert "others screen estimates on 4 prompts per set" in fig4.read_text()
    config = SweepConfig(mode="exact", lams=(1.0,), n_val=8, layers=(1, 2, 3), positions=(-1,))
    run_sweep(tiny, tiny_run, config, PRUNE_LAST)
    recorded = recorded_sweep(tiny_run)
    assert recorded.config.mode == "exact"
    frame = read_sweep(tiny_run)
    assert (frame.stage == "full").sum() == 2 * 2 and not (frame.stage == "screened").any()
    # A fast request is not served by the exact sweep, nor an exact one by a fast sweep; an exact request with
    # another KL bound or other screen settings is (the exact sweep's rows do not depend on them).
    assert not same_settings(recorded, replace(config, mode="fast"), PRUNE_LAST)
    assert not same_settings(RecordedSweep(replace(config, mode="fast"), PRUNE_LAST), config, PRUNE_LAST)
    other = replace(PRUNE_LAST, max_ablation_kl=8.0, r_max_ablation_kl=9.0, induce_refusal_filter=True)
    assert same_settings(recorded, replace(config, n_screen=2, steer_w=True), other)
    assert not same_settings(recorded, config, replace(PRUNE_LAST, prune_layer_fraction=0.5))
    old = json.loads(tiny_run.file("sweep.json").read_text())
    del old["config"]["mode"]
    tiny_run.file("sweep.json").write_text(json.dumps(old))
    with pytest.raises(WorkbenchError, match="sweep.json is corrupted .*lacks 'mode'.*another workbench version"):
        recorded_sweep(tiny_run)  # a record without a field is an error, not a silent default
    tiny_run.file("sweep.json").write_text(json.dumps({**old, "config": {**old["config"], "mode": "exact"}}))
    calls = []
    monkeypatch.setattr(sweep_algorithms, "exact_sweep", lambda *args, **kwargs: calls.append(args))
    run_sweep(tiny, tiny_run, config, other)  # reused: nothing scored again
    assert calls == []
    # select takes any rule that prunes at least the sweep's layers; with less pruning the winner may be unscored
    for rule in (replace(PRUNE_LAST, max_ablation_kl=8.0), replace(PRUNE_LAST, prune_layer_fraction=0.5)):
        result = select(tiny_run, rule)
        assert result["rule"] == asdict(rule) and result["selections"][0]["layer"] < rule.first_pruned_layer(4)
    with pytest.raises(WorkbenchError, match="chose its finalists for the rule"):
        select(tiny_run, replace(PRUNE_LAST, prune_layer_fraction=0.0))
    run_figures(tiny_run)
    assert "exact: every cell fully scored" in fig4.read_text()


def test_unknown_mode_names_the_modes():
    with pytest.raises(WorkbenchError, match="unknown sweep mode 'slow': use one of fast, exact"):
        SweepConfig(mode="slow").validate()


@pytest.mark.model
@pytest.mark.slow  # the reference loop unembeds every position
def test_exact_sweep_equals_reference_loop_on_the_organism(organism, selected_run):
    """The organism (float32, SmolLM2's 30-token system prefix): every score of a 2 × 2 grid at λ = 1 and 0, and the
    true candidates, within 1e-4 of the paper-style reference loop."""
    grids = load_candidates(selected_run)
    config = SweepConfig(mode="exact", lams=(1.0, 0.0), n_val=8, layers=(9, 15), positions=(-1, -6))
    val = load_validation(organism, config)
    exact = to_frame(exact_sweep(candidate_scorer(organism, config), grids, val, config, SelectionRule()))
    paper = candidate_scorer(organism, replace(config, share_prefix=False, last_logits_only=False))
    reference = to_frame(reference_sweep(paper, grids, val, config, SelectionRule()))
    exact, reference = _full(exact), _full(reference)
    assert len(exact) == 3 * 4 and list(exact.index) == list(reference.index)
    assert exact[SCORES].notna().all().all()
    assert (exact[SCORES] - reference[SCORES]).abs().max().max() <= 1e-4
    assert reference.ablation_kl.max() > 0.01 and not math.isclose(reference.steering_kl.max(), 0.0)


def test_cli_and_config_file_take_the_mode(tiny_run, capsys):
    from workbench.cli import main
    from workbench.stages.config_file import from_dict
    from workbench.stages.pipeline import PipelineConfig

    with pytest.raises(SystemExit) as caught:  # refused by argparse, before the model loads
        main(["sweep", "--run", str(tiny_run.path), "--mode", "slow"])
    assert caught.value.code == 2 and "argument --mode: invalid choice: 'slow'" in capsys.readouterr().err
    assert main(["sweep", "--run", str(tiny_run.path), "--mode", "exact", "--n-val", "8", "--layers", "1", "2",
                 "--positions", "-1"]) == 0
    assert "scored 4 candidates fully, 0 screened out, 44 skipped" in capsys.readouterr().out  # r, w′: 2 layers
    assert json.loads(tiny_run.file("sweep.json").read_text())["config"]["mode"] == "exact"
    config = from_dict(PipelineConfig, {"sweep": {"mode": "exact", "n_val": 8}}, where="run.toml")
    assert (config.sweep.mode, config.sweep.n_val) == ("exact", 8)
    with pytest.raises(WorkbenchError, match="unknown sweep mode 'fastest'"):
        from_dict(PipelineConfig, {"sweep": {"mode": "fastest"}}).validate()
