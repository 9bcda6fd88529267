"""The surgical selection option: a harmful-score margin in the rule, and generation re-ranking in select."""

import math
from dataclasses import asdict, replace

import pandas as pd
import pytest
from tiny_model import TINY_RUN_RULE

from workbench.errors import WorkbenchError
from workbench.method.rule import SelectionRule


def _sweep() -> pd.DataFrame:
    """Three fully scored false candidates at λ = 1: the paper's pick (lowest pseudo-harmful score) also removes
    true refusal (harmful 4.0 → 1.0); the surgical one keeps it."""
    base = {"vector": "w'", "lam": 1.0, "pos": -1, "stage": "full", "sweep_note": "", "ablation_kl": 0.1,
            "steering_refusal_score": math.nan}
    rows = [
        {**base, "layer": 1, "ablation_refusal_score_pseudo_harmful": -2.0, "ablation_refusal_score_harmful": 1.0},
        {**base, "layer": 2, "ablation_refusal_score_pseudo_harmful": -1.0, "ablation_refusal_score_harmful": 3.6},
        {**base, "layer": 3, "ablation_refusal_score_pseudo_harmful": -0.5, "ablation_refusal_score_harmful": 4.2},
        {**base, "layer": 4, "ablation_refusal_score_pseudo_harmful": -3.0, "ablation_refusal_score_harmful": 4.0,
         "ablation_kl": 0.5},
    ]
    return pd.DataFrame(rows)


def test_paper_rule_ignores_harmful_and_the_surgical_rule_keeps_it():
    sweep = _sweep()
    paper = SelectionRule(prune_layer_fraction=0.0)
    assert paper.pick(paper.apply(sweep, 10), "w'", 1.0)["layer"] == 1
    surgical = replace(paper, max_harmful_drop=0.5)
    applied = surgical.apply(sweep, 10, harmful_baseline=4.0)
    assert applied.filter_reason.tolist() == ["harmful score drops > 0.5", "", "", "kl > 0.2"]
    assert surgical.pick(applied, "w'", 1.0)["layer"] == 2  # 3.6 ≥ 4.0 − 0.5
    tight = replace(paper, max_harmful_drop=0.1)
    assert tight.pick(tight.apply(sweep, 10, harmful_baseline=4.0), "w'", 1.0)["layer"] == 3
    with pytest.raises(WorkbenchError, match="baseline"):
        surgical.apply(sweep, 10)


def test_rule_fields_are_checked_and_records_read_back_strictly():
    for bad in ({"max_harmful_drop": -1.0}, {"rerank_top_k": 1}, {"rerank_n": 0}, {"rerank_max_harmful_rise": 2.0}):
        with pytest.raises(WorkbenchError):
            replace(SelectionRule(), **bad).validate()
    rule = replace(SelectionRule(), max_harmful_drop=1.0)
    assert SelectionRule.from_record(asdict(rule)) == rule
    old = {k: v for k, v in asdict(SelectionRule()).items() if k != "max_harmful_drop"}
    with pytest.raises(WorkbenchError, match="lacks field 'max_harmful_drop'"):
        SelectionRule.from_record(old)
    with pytest.raises(WorkbenchError, match="unknown field 'kl_bound'"):
        SelectionRule.from_record({**asdict(SelectionRule()), "kl_bound": 0.1})
    reranking = asdict(replace(SelectionRule(), rerank_top_k=3))
    assert SelectionRule.screening_record(asdict(SelectionRule())) == SelectionRule.screening_record(reranking)
    assert SelectionRule.screening_record(asdict(rule)) != SelectionRule.screening_record(asdict(SelectionRule()))


def test_a_surgical_rule_needs_a_sweep_screened_for_it(tiny, tiny_run):
    """The tiny run's sweep is fast and screened for the paper's rule: selecting with the surgical one is refused."""
    from workbench.stages.select import select

    rule = replace(TINY_RUN_RULE, max_harmful_drop=0.5)
    with pytest.raises(WorkbenchError, match="chose its finalists for the rule"):
        select(tiny_run, rule)


def test_surgical_sweep_and_select_on_the_tiny_model(tiny, tiny_run):
    from workbench.stages.select import read_selection, select
    from workbench.stages.sweep import SweepConfig, run_sweep

    margin = 0.3
    rule = replace(TINY_RUN_RULE, max_harmful_drop=margin)
    run_sweep(tiny, tiny_run, SweepConfig(lams=(1.0,), n_val=16, mode="exact"), rule)
    baseline = tiny_run.read_json("sweep.json")["baseline_refusal_score"]["harmful"]
    result = select(tiny_run, rule)
    frame = read_selection(tiny_run)
    false = frame[(frame.vector == "w'") & (frame.stage == "full")]
    assert rule.first_pruned_layer(4) == 4  # nothing pruned on the 4-layer model
    within = false.ablation_kl <= rule.max_ablation_kl
    expected = false[within & (false.ablation_refusal_score_harmful >= baseline - margin)]
    assert set(zip(false[false.kept].pos, false[false.kept].layer, strict=True)) == \
        set(zip(expected.pos, expected.layer, strict=True))
    if expected.empty:
        assert result["selections"] == []
    else:
        best = expected.loc[expected.ablation_refusal_score_pseudo_harmful.idxmin()]
        chosen = result["selections"][0]
        assert (chosen["pos"], chosen["layer"]) == (int(best.pos), int(best.layer))


def test_rerank_by_generation_on_the_tiny_model(tiny, tiny_run):
    """Re-ranking the best k by a generation check: the records hold the baseline and each candidate's compliance,
    and the pick is the most compliant on pseudo-harmful val among those not more compliant on harmful val."""
    from workbench.stages.select import select

    rule = replace(TINY_RUN_RULE, rerank_top_k=3, rerank_n=4, rerank_max_new_tokens=4, rerank_max_harmful_rise=1.0)
    with pytest.raises(WorkbenchError, match="needs the model"):
        select(tiny_run, rule)
    result = select(tiny_run, rule, tiny)
    records = result["rerank"]["1.0"]
    assert records[0]["candidate"] == "baseline" and 2 <= len(records) <= 4
    candidates = [r for r in records[1:] if r["harmful_ok"]]
    best = max(candidates, key=lambda r: (r["pseudo_harmful_compliance"], -r["ablation_refusal_score_pseudo_harmful"]))
    chosen = result["selections"][0]
    assert (chosen["pos"], chosen["layer"]) == (best["pos"], best["layer"])
    for r in records:
        assert 0.0 <= r["pseudo_harmful_compliance"] <= 1.0 and 0.0 <= r["harmful_compliance"] <= 1.0


def test_a_rerank_that_rejects_every_candidate_says_why(tiny, tiny_run, monkeypatch):
    from workbench.stages import select as select_stage

    records = [{"candidate": "baseline", "pseudo_harmful_compliance": 0.1, "harmful_compliance": 0.0},
               {"candidate": "(-1, 2)", "pseudo_harmful_compliance": 0.9, "harmful_compliance": 0.5}]
    monkeypatch.setattr(select_stage, "rerank_candidates", lambda *args: (None, records))
    rule = replace(TINY_RUN_RULE, rerank_top_k=2)
    with pytest.raises(WorkbenchError, match=r"rejected every re-ranked candidate .*\(-1, 2\): pseudo-harmful 90%, "
                                             r"harmful 50%"):
        select_stage.select(tiny_run, rule, tiny)
