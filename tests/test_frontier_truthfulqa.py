"""The frontier's TruthfulQA column on the tiny run (data tier: TruthfulQA is read from WORKBENCH_DATA_DIR): each
point's per-question scores are the capability task's, and a gated point takes each question's scores from w′ where
its gate opens and from the baseline elsewhere."""

import json

import pytest

pytestmark = pytest.mark.data


def test_truthfulqa_per_point_and_routed_for_the_gated_points(tiny, tiny_run, tmp_path, data_dir):
    from test_gate import _gate_config

    from workbench.eval.capability import CapabilityConfig, plain_forward, score_task
    from workbench.interventions.export import plain_hf_model
    from workbench.interventions.gate import decide
    from workbench.interventions.hooks import BASELINE
    from workbench.stages.frontier import FrontierConfig, measure_frontier
    from workbench.stages.gate import fit_gate, gate_at_bound

    fit_gate(tiny, tiny_run, _gate_config(tmp_path, bound=0.5))
    config = FrontierConfig(n_val=2, lams=(1.0,), betas=(1.0,), seeds=(), gate_bounds=(0.5, 1.0), max_new_tokens=4,
                            n_truthfulqa=12, judge="substring")
    table = measure_frontier(tiny, tiny_run, config, progress=False).set_index("intervention")
    # The baseline's MC1/MC2 are the capability task's on the same sample.
    plain = plain_hf_model(tiny)
    rows = {r["metric"]: r["value"] for r in score_task("truthfulqa", plain_forward(plain), tiny.tokenizer,
                                                         CapabilityConfig(n_truthfulqa=12), progress=False)}
    assert BASELINE.parts == ()
    assert table.loc["baseline", "truthfulqa_mc1"] == pytest.approx(rows["mc1"])
    assert table.loc["baseline", "truthfulqa_mc2"] == pytest.approx(rows["mc2"])
    assert (table.n_truthfulqa == 12).all()
    # Bound 1: the gate opens for every question, so the gated point is w′.
    assert table.loc["gated_wprime_bound1.0", "truthfulqa_mc2"] == table.loc["wprime_lam1.0", "truthfulqa_mc2"]
    cache = json.loads(tiny_run.file("frontier/truthfulqa.json").read_text())
    from workbench.data import load_dataset
    from workbench.eval.capability import TASK_DATASETS, _sample

    questions = _sample(load_dataset(TASK_DATASETS["truthfulqa"][0]), 12, 0)
    opened = decide(tiny, gate_at_bound(tiny_run, 0.5), [q.question for q in questions]).tolist()
    expected = [cache["wprime_lam1.0"]["scores"][k][1] if o else cache["baseline"]["scores"][k][1]
                for k, o in enumerate(opened)]
    assert table.loc["gated_wprime_bound0.5", "truthfulqa_mc2"] == pytest.approx(sum(expected) / len(expected))
