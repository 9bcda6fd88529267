"""Evaluation and capability on the organism, small n, on the real benchmarks (WORKBENCH_DATA_DIR)."""

import json

import pandas as pd
import pytest
import torch

from workbench.errors import WorkbenchError

pytestmark = pytest.mark.model


def test_intervention_names_from_a_run(organism, selected_run):
    from workbench.interventions.catalogue import build_interventions, choose

    selection = selected_run.read_json("selection.json")
    items = build_interventions(selection, selected_run.path, organism.info.fingerprint, organism.info.d_model,
                                alphas=(0.5,))
    names = [i.name for i in items]
    assert names[:5] == ["baseline", "ablate_false_lam1.0", "ablate_false_lam0.0", "ablate_false_raw", "ablate_true"]
    assert {"actadd_true_a0.5", "ablate_false_lam1.0+actadd_true_a0.5", "ablate_false_lam0.0+actadd_true_a0.5"} <= set(
        names)
    with pytest.raises(WorkbenchError, match="unknown intervention"):
        choose(items, ("ablate_everything",))
    with pytest.raises(WorkbenchError, match="another|fingerprint"):
        build_interventions(selection, selected_run.path, "0" * 16, organism.info.d_model, alphas=())
    with pytest.raises(WorkbenchError, match="width"):
        build_interventions(selection, selected_run.path, organism.info.fingerprint, 64, alphas=())


def test_evaluation_end_to_end_and_resume(organism, selected_run, data_dir, monkeypatch):
    import workbench.stages.evaluate as evaluation
    from workbench.stages.evaluate import EvalConfig, evaluate, read_completions
    from workbench.viz.figures import table1

    config = EvalConfig(datasets=("harmful_test", "xstest_safe"),
                        interventions=("baseline", "ablate_false_lam1.0", "ablate_true", "actadd_true_a1.0"),
                        alphas=(1.0,), limit=12, max_new_tokens=24)
    frame = evaluate(organism, selected_run, config, progress=False)
    assert set(frame.columns) >= {"dataset", "intervention", "n", "compliance_rate", "ci_low", "ci_high"}
    assert len(frame) == 8 and (frame.n == 12).all()
    rows = [json.loads(line) for line in
            selected_run.file("completions/xstest_safe/baseline.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"instruction", "category", "response", "refused"}
    recomputed = 1 - sum(r["refused"] for r in rows) / len(rows)
    baseline = frame.set_index(["dataset", "intervention"]).loc[("xstest_safe", "baseline")]
    assert baseline.compliance_rate == pytest.approx(recomputed)
    assert baseline.ci_low <= baseline.compliance_rate <= baseline.ci_high
    rates = frame.set_index(["dataset", "intervention"]).compliance_rate
    # The organism refuses harmful requests; ablating r (its refusal direction) takes that away.
    # (24 tokens on the first 12 prompts: measured 33% → 67% for r ablation, 75% → 0% on XSTest-safe for α = 1)
    assert rates[("harmful_test", "baseline")] <= 0.5
    assert rates[("harmful_test", "ablate_true")] > rates[("harmful_test", "baseline")]
    # and adding r (α = 1) makes it refuse safe prompts it answered.
    assert rates[("xstest_safe", "actadd_true_a1.0")] < rates[("xstest_safe", "baseline")]
    assert pd.read_csv(selected_run.file("evaluation.csv")).shape[0] == 8
    assert "category" in pd.read_csv(selected_run.file("evaluation_categories.csv")).columns
    assert list(table1(frame).columns) == ["baseline", "ablate_false_lam1.0", "ablate_true"]

    # Resume: nothing is generated again with the same settings ...
    def no_generation(*args, **kwargs):
        raise AssertionError("finished pairs were generated again")

    monkeypatch.setattr(evaluation, "plain_greedy_generate", no_generation)
    again = evaluate(organism, selected_run, config, progress=False)
    pd.testing.assert_frame_equal(again, frame)
    # ... and a pair whose file was lost (an interrupted run) is the only one redone.
    selected_run.file("completions/harmful_test/ablate_true.meta.json").unlink()
    calls = []

    def count(model, chat, instructions, *args, **kwargs):
        calls.append(len(instructions))
        return ["I'm sorry"] * len(instructions)

    monkeypatch.setattr(evaluation, "plain_greedy_generate", count)
    evaluate(organism, selected_run, config, progress=False)
    assert calls == [12]
    assert len(read_completions(selected_run)) == 8 * 12


def test_evaluation_bad_input(organism, selected_run, data_dir):
    from workbench.stages.evaluate import EvalConfig, evaluate

    with pytest.raises(WorkbenchError, match="not a prompt set"):
        evaluate(organism, selected_run, EvalConfig(datasets=("mmlu",), interventions=("baseline",)))
    with pytest.raises(WorkbenchError, match="unknown dataset"):
        evaluate(organism, selected_run, EvalConfig(datasets=("nope",), interventions=("baseline",)))
    with pytest.raises(WorkbenchError, match="finite"):
        evaluate(organism, selected_run, EvalConfig(datasets=("xstest_safe",), alphas=(float("inf"),)))


def test_option_loglikelihoods_match_unpadded(organism):
    from workbench.stages.capability import (
        last_logits_from,
        mmlu_prompt,
        option_loglikelihoods,
        plain_forward,
        plain_last_logits,
    )
    from workbench.data import MultipleChoice
    from workbench.interventions.export import plain_hf_model

    plain = plain_hf_model(organism)
    forward = plain_forward(plain)
    tok = organism.tokenizer
    context, options = "Question: What color is the sky on a clear day?\nAnswer:", ["blue", "a loud green dog"]
    batched = option_loglikelihoods(forward, tok, context, options)
    for option, value in zip(options, batched, strict=True):
        ctx = tok.encode(context, add_special_tokens=False)
        full = tok.encode(context + " " + option, add_special_tokens=False)
        with torch.inference_mode():
            logprobs = torch.log_softmax(forward(torch.tensor([full]), torch.ones(1, len(full), dtype=torch.long))
                                         .double(), -1)[0]
        expected = sum(float(logprobs[i - 1, full[i]]) for i in range(len(ctx), len(full)))
        assert value == pytest.approx(expected, abs=1e-4)
    assert batched[0] > batched[1]
    # MMLU's last-position logits: left-padded, last position only, equal to each sequence run alone.
    seqs = [tok.encode(t, add_special_tokens=False) for t in
            ("The capital of France is", "2+2?\nA. 3\nB. 4\nAnswer:", "Paris")]
    pad = tok.pad_token_id or 0
    last, padded_right = plain_last_logits(plain, pad)(seqs), last_logits_from(forward, pad)(seqs)
    with torch.inference_mode():
        alone = torch.stack([forward(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0, -1] for s in seqs])
    assert last.shape == (3, organism.info.vocab_size)
    assert (last - alone).abs().max() <= 1e-3 and (padded_right - alone).abs().max() <= 1e-3
    q = MultipleChoice("2+2?", ("3", "4", "5", "6"), 1, "elementary_mathematics")
    assert mmlu_prompt(q, [q]) == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")


def test_capability_on_the_organism(organism, selected_run, data_dir):
    from workbench.stages.capability import CapabilityConfig, measure_capability
    from workbench.data import load_dataset
    from workbench.eval.scoring import perplexity

    config = CapabilityConfig(interventions=("baseline", "ablate_false_lam1.0"), perplexity_tokens=2048,
                              mmlu_n=8, arc_n=8)
    table = measure_capability(organism, selected_run, config, progress=False)
    assert set(table.columns) == {"task", "intervention", "metric", "value", "n"}
    values = table.set_index(["task", "intervention", "metric"]).value
    # Our plain-model perplexity equals the hooked model's on the same tokens.
    hooked = perplexity(organism, load_dataset("wikitext2"), max_tokens=2048, progress=False)
    assert values[("wikitext2", "baseline", "perplexity")] == pytest.approx(hooked, rel=1e-4)
    assert 5 < hooked < 100
    for task, metric in (("mmlu", "acc"), ("arc_challenge", "acc"), ("arc_challenge", "acc_norm")):
        assert 0.0 <= values[(task, "baseline", metric)] <= 1.0
    assert len(table) == 2 * 4
    again = measure_capability(organism, selected_run, config, progress=False)  # resumes: nothing to do
    pd.testing.assert_frame_equal(again.reset_index(drop=True), table.reset_index(drop=True), check_dtype=False)
