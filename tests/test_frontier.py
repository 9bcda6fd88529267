"""`workbench frontier` on the tiny run (unit tier): every family's points, rates that are the completions' own
counts, the margin over the r curve by exact interpolation, the gated point routed from its w′ and baseline pairs,
TruthfulQA per point, and the bad-input errors."""

import json

import numpy as np
import pandas as pd
import pytest

from workbench.errors import WorkbenchError

pytestmark = pytest.mark.unit


def test_r_curve_margin_interpolates_between_baseline_and_the_beta_points():
    from workbench.stages.frontier import r_curve_margin

    points = pd.DataFrame([
        {"family": "baseline", "harmful": 0.1, "over_refusal": 0.2},
        {"family": "r (partial)", "harmful": 0.5, "over_refusal": 0.6},
        {"family": "r (partial)", "harmful": 0.9, "over_refusal": 0.7},
        {"family": "w'", "harmful": 0.3, "over_refusal": 0.9},   # curve at 0.3: 0.4 -> +0.5
        {"family": "w'", "harmful": 0.7, "over_refusal": 0.6},   # curve at 0.7: 0.65 -> -0.05
        {"family": "w'", "harmful": 0.95, "over_refusal": 0.9},  # outside the curve: NaN
        {"family": "random", "harmful": 0.3, "over_refusal": 0.9},
    ])
    margin = r_curve_margin(points)
    assert margin.iloc[3] == pytest.approx(0.5) and margin.iloc[4] == pytest.approx(-0.05)
    assert np.isnan(margin.iloc[5]) and np.isnan(margin.iloc[6]) and np.isnan(margin.iloc[0])


def test_frontier_on_the_tiny_run(tiny, tiny_run, tmp_path, monkeypatch):
    from test_gate import _gate_config

    from workbench.stages.evaluate import read_completions
    from workbench.stages.frontier import FrontierConfig, measure_frontier, read_frontier
    from workbench.stages.gate import fit_gate

    fit_gate(tiny, tiny_run, _gate_config(tmp_path, bound=0.5))
    config = FrontierConfig(n_val=4, lams=(1.0, 0.0), betas=(0.5, 1.0), seeds=(0,), gate_bounds=(0.5, 1.0),
                            max_new_tokens=6, batch_size=4, n_truthfulqa=0)
    table = measure_frontier(tiny, tiny_run, config, progress=False)
    assert list(table.columns) == list(read_frontier(tiny_run).columns)
    names = ["baseline", "wprime_lam1.0", "wprime_lam0.0", "r_beta0.5", "r_beta1.0", "random_seed0",
             "gated_wprime_bound0.5", "gated_wprime_bound1.0"]
    for judge in ("substring", "keywords"):
        assert table[table.judge == judge].intervention.tolist() == names
    frame = read_completions(tiny_run, "frontier/completions")
    sets = json.loads(tiny_run.file("frontier.json").read_text())
    assert (sets["over_refusal"], sets["harmful"]) == ("bundled_pseudo_harmful_val", "bundled_harmful_val")
    for _, row in table[table.judge == "substring"].iterrows():
        part = frame[(frame.intervention == row.intervention) & (frame.dataset == sets["harmful"])]
        assert row.n_harmful == 4 and row.harmful == pytest.approx((~part.refused.astype(bool)).mean())
        assert row.harmful_low <= row.harmful <= row.harmful_high
    gated = json.loads(tiny_run.file(
        "frontier/completions/bundled_harmful_val/gated_wprime_bound0.5.meta.json").read_text())
    assert gated["routed_from"] == ["baseline", "wprime_lam1.0"]
    # A gate that lets every harmful contrast prompt through (bound 1: threshold +∞) opens for all: it is w′.
    rates = table.set_index(["judge", "intervention"])
    for judge in ("substring", "keywords"):
        for column in ("over_refusal", "harmful"):
            assert rates.loc[(judge, "gated_wprime_bound1.0"), column] == rates.loc[(judge, "wprime_lam1.0"), column]
    # Resumable: a second call generates nothing (every pair is done) and gives the same table.
    again = measure_frontier(tiny, tiny_run, config, progress=False)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), table.reset_index(drop=True))
    # Families in the files' spelling (w' in ASCII); a table with another spelling is refused, naming the file.
    assert list(dict.fromkeys(table.family)) == ["baseline", "w'", "r (partial)", "random", "gated w'"]
    written = pd.read_csv(tiny_run.file("frontier.csv"), keep_default_na=False)
    written.loc[written.family == "w'", "family"] = "w′"
    written.to_csv(tiny_run.file("frontier.csv"), index=False)
    message = r"frontier.csv is corrupted or truncated \(family 'w′' is none of baseline, w'"
    with pytest.raises(WorkbenchError, match=message):
        read_frontier(tiny_run)


def test_frontier_w_prime_at_the_selected_lambda_is_the_selected_direction(tiny, tiny_run):
    from workbench.interventions.directions import load_direction
    from workbench.stages.frontier import FrontierConfig, frontier_interventions

    points = {item.name: item for _, _, item in frontier_interventions(tiny_run, tiny, FrontierConfig())}
    selected, _ = load_direction(tiny_run.file("directions/lam_1.0.safetensors"))
    w_prime = points["wprime_lam1.0"].intervention.direction
    assert float(w_prime @ selected) / float(w_prime.norm() * selected.norm()) == pytest.approx(1.0, abs=1e-6)
    assert points["r_beta1.0"].intervention.strength == 1.0 and points["r_beta0.25"].intervention.strength == 0.25
    assert "gated_wprime_lam1.0" not in points  # the run has no gate


def test_frontier_bad_input(tiny, tiny_run):
    from workbench.stages.frontier import FrontierConfig, measure_frontier

    with pytest.raises(WorkbenchError, match="betas"):
        FrontierConfig(betas=(0.0,)).validate()
    with pytest.raises(WorkbenchError, match="lams"):
        FrontierConfig(lams=(1.5,)).validate()
    tiny_run.file("selection.json").write_text(json.dumps({"selections": [], "r": None}))
    with pytest.raises(WorkbenchError, match="no selections"):
        measure_frontier(tiny, tiny_run, FrontierConfig(n_val=2), progress=False)


def test_the_pipeline_runs_gate_and_frontier_when_the_config_lists_them(tiny, tiny_run, tmp_path, capsys):
    from dataclasses import replace

    from test_gate import _gate_config

    from workbench.stages.frontier import FrontierConfig
    from workbench.stages.pipeline import DEFAULT_STAGES, PipelineConfig, run_pipeline

    assert "gate" not in DEFAULT_STAGES and "frontier" not in DEFAULT_STAGES
    config = PipelineConfig(gate=_gate_config(tmp_path, bound=0.5),
                            frontier=FrontierConfig(n_val=2, lams=(1.0,), betas=(1.0,), seeds=(), gate_bounds=(0.5,),
                                                    max_new_tokens=4, n_truthfulqa=0),
                            stages=("gate", "frontier"))
    run_pipeline(tiny, tiny_run.path, config)
    assert "[gate] running" in capsys.readouterr().out
    assert tiny_run.file("directions/gate.safetensors").exists() and tiny_run.file("frontier.csv").exists()
    run_pipeline(tiny, tiny_run.path, config)
    assert "[gate] up to date, skipped" in capsys.readouterr().out
    run_pipeline(tiny, tiny_run.path, replace(config, gate=replace(config.gate, bound=0.25)))
    assert "[gate] running" in capsys.readouterr().out
