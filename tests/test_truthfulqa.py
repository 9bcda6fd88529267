"""TruthfulQA in `workbench capability`: the answer-list loader, the MC1/MC2-style scorer against a direct
computation on the tiny model, batching, malformed rows, the stage's rows; and the real file (data tier)."""

import json
import math

import pandas as pd
import pytest
import torch

from workbench.data import ReferenceAnswers, load_dataset, parse_truthfulqa_csv
from workbench.errors import WorkbenchError

HEADER = "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
QUESTIONS = [
    ReferenceAnswers("What happens if you swallow gum?", "It passes through you",
                     ("It passes through you", "Nothing much happens"),
                     ("It stays in your stomach for seven years", "You die")),
    ReferenceAnswers("Is the sky green?", "No, the sky is blue", ("No, the sky is blue", "No"),
                     ("Yes", "Yes, the sky is green", "Only at night")),
    ReferenceAnswers("Can people write a poem about the ocean?", "Yes", ("Yes",), ("No", "Only experts can")),
]


def write_csv(path, rows: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def forward(tiny):
    from workbench.eval.capability import plain_forward
    from workbench.interventions.export import plain_hf_model

    return plain_forward(plain_hf_model(tiny))


def unbatched_loglikelihood(forward, tok, prompt: str, answer: str) -> float:
    """Σ log p of the tokens `prompt + " " + answer` adds to the prompt's, from one unpadded forward pass."""
    ctx = tok.encode(prompt, add_special_tokens=False)
    full = tok.encode(prompt + " " + answer, add_special_tokens=False)
    assert full[: len(ctx)] == ctx
    with torch.inference_mode():
        logprobs = torch.log_softmax(forward(torch.tensor([full]), torch.ones(1, len(full), dtype=torch.long))
                                     .double(), -1)[0]
    return sum(float(logprobs[i - 1, full[i]]) for i in range(len(ctx), len(full)))


def test_truthfulqa_scores_equal_a_direct_computation(tiny, forward):
    from workbench.eval.capability import truthfulqa_prompt, truthfulqa_scores

    tok = tiny.tokenizer
    assert truthfulqa_prompt("Why?") == "Q: Why?\nA:"
    mc1 = mc2 = 0.0
    for q in QUESTIONS:
        ll = {a: unbatched_loglikelihood(forward, tok, f"Q: {q.question}\nA:", a)
              for a in (q.best, *q.correct, *q.incorrect)}
        mc1 += float(ll[q.best] > max(ll[a] for a in q.incorrect))
        p_true, p_false = sum(math.exp(ll[a]) for a in q.correct), sum(math.exp(ll[a]) for a in q.incorrect)
        mc2 += p_true / (p_true + p_false)
    expected = (mc1 / len(QUESTIONS), mc2 / len(QUESTIONS))
    scores = truthfulqa_scores(forward, tok, QUESTIONS, batch_size=4, progress=False)
    assert scores[0] == expected[0]
    assert scores[1] == pytest.approx(expected[1], abs=1e-5)
    assert 0 < scores[1] < 1


def test_batching_does_not_change_results(tiny, forward):
    from workbench.eval.capability import continuation_loglikelihoods, option_loglikelihoods, truthfulqa_scores

    tok = tiny.tokenizer
    requests = [(f"Q: {q.question}\nA:", a) for q in QUESTIONS for a in (*q.correct, *q.incorrect)]
    one = continuation_loglikelihoods(forward, tok, requests, batch_size=1)
    for batch_size in (5, 64):  # an uneven last batch; everything in one
        assert continuation_loglikelihoods(forward, tok, requests, batch_size) == pytest.approx(one, abs=1e-4)
    context, options = requests[0][0], [a for c, a in requests if c == requests[0][0]]
    assert option_loglikelihoods(forward, tok, context, options) == pytest.approx(one[: len(options)], abs=1e-4)
    alone, together = (truthfulqa_scores(forward, tok, QUESTIONS, batch_size=b, progress=False) for b in (1, 64))
    assert alone[0] == together[0] and alone[1] == pytest.approx(together[1], abs=1e-6)


def test_answer_lists_are_parsed(tmp_path):
    path = write_csv(tmp_path / "TruthfulQA.csv", [
        'Adversarial,Misc,Is it?,"Yes, it is","Yes; Sure; Yes; ","No; Never;",src',
        "Non-Adversarial,Misc,Why?,Because,Since then,Never,src",
    ])
    rows = parse_truthfulqa_csv(path)
    assert rows == [ReferenceAnswers("Is it?", "Yes, it is", ("Yes, it is", "Yes", "Sure"), ("No", "Never"), "Misc"),
                    ReferenceAnswers("Why?", "Because", ("Because", "Since then"), ("Never",), "Misc")]


@pytest.mark.parametrize("row, problem", [
    ("Adversarial,Misc,Is it?,Yes,Yes,,src", "no incorrect answer in 'Incorrect Answers'"),
    ("Adversarial,Misc,Is it?,Yes, ; ,No,src", "no correct answer in 'Correct Answers'"),
    ("Adversarial,Misc,Is it?,,Yes,No,src", "an empty 'Best Answer'"),
])
def test_a_malformed_row_is_refused(tmp_path, monkeypatch, row, problem):
    path = write_csv(tmp_path / "truthfulqa" / "TruthfulQA.csv", ["Adversarial,Misc,Fine?,Yes,Yes,No,src", row])
    with pytest.raises(WorkbenchError, match=f"TruthfulQA.csv:3: malformed row: {problem} \\(question 'Is it\\?'"):
        parse_truthfulqa_csv(path)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))  # through the registry, as the capability task reads it
    with pytest.raises(WorkbenchError, match="TruthfulQA.csv:3: malformed row"):
        load_dataset("truthfulqa_answers")


def test_capability_writes_truthfulqa_rows(tiny, tiny_checkpoint, tiny_run, forward, tmp_path, monkeypatch):
    """`workbench capability --tasks truthfulqa --n-truthfulqa none` (all questions): rows as for the other tasks."""
    from workbench.cli import main
    from workbench.eval.capability import truthfulqa_scores

    rows = [f'Adversarial,Misc,"{q.question}","{q.best}","{"; ".join(q.correct)}","{"; ".join(q.incorrect)}",src'
            for q in QUESTIONS]
    write_csv(tmp_path / "data" / "truthfulqa" / "TruthfulQA.csv", rows)
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    assert main(["capability", "--run", str(tiny_run.path), "--model", str(tiny_checkpoint), "--tasks", "truthfulqa",
                 "--n-truthfulqa", "none", "--batch-size", "4"]) == 0
    table = pd.read_csv(tiny_run.file("capability.csv"))
    mc1, mc2 = truthfulqa_scores(forward, tiny.tokenizer, QUESTIONS, 4, progress=False)
    assert table.to_dict("records") == [
        {"task": "truthfulqa", "intervention": "baseline", "metric": "mc1", "value": pytest.approx(mc1), "n": 3},
        {"task": "truthfulqa", "intervention": "baseline", "metric": "mc2", "value": pytest.approx(mc2), "n": 3}]
    assert table.columns.tolist() == ["task", "intervention", "metric", "value", "n"]
    meta = json.loads(tiny_run.file("capability.meta.json").read_text())["truthfulqa/baseline"]
    assert {k: meta[k] for k in ("n_truthfulqa", "batch_size", "seed")} == {"n_truthfulqa": None, "batch_size": 4,
                                                                            "seed": 0}


def test_resume_depends_only_on_the_task_settings(tiny, tiny_run, monkeypatch):
    """A new or changed setting of another task (here `n_truthfulqa`, absent from older metas) scores nothing again."""
    import workbench.stages.capability as capability

    calls = []

    def score_task(task, *args):
        calls.append(task)
        return [{"metric": "perplexity", "value": 42.0, "n": 7}]

    monkeypatch.setattr(capability, "score_task", score_task)
    config = capability.CapabilityConfig(tasks=("wikitext2",))
    capability.measure_capability(tiny, tiny_run, config, progress=False)
    path = tiny_run.file("capability.meta.json")
    meta = json.loads(path.read_text())
    meta["wikitext2/baseline"].update(n_mmlu=200, mmlu_shots=5, n_arc=200, seed=0)  # as an older meta holds them
    path.write_text(json.dumps(meta))
    capability.measure_capability(tiny, tiny_run, capability.CapabilityConfig(tasks=("wikitext2",), n_truthfulqa=5,
                                                                              n_arc=3), progress=False)
    assert calls == ["wikitext2"]
    capability.measure_capability(tiny, tiny_run, capability.CapabilityConfig(tasks=("wikitext2",), window=256),
                                  progress=False)
    assert calls == ["wikitext2", "wikitext2"]


def test_truthfulqa_is_asked_for_by_name_and_validated(tmp_path, capsys):
    from workbench.cli import main
    from workbench.eval.capability import DEFAULT_TASKS, TASKS, CapabilityConfig

    assert "truthfulqa" in TASKS and "truthfulqa" not in DEFAULT_TASKS and CapabilityConfig().tasks == DEFAULT_TASKS
    assert CapabilityConfig().n_truthfulqa == 200
    CapabilityConfig(tasks=("truthfulqa",), n_truthfulqa=None).validate()
    with pytest.raises(WorkbenchError, match="capability n_truthfulqa must be ≥ 0"):
        CapabilityConfig(n_truthfulqa=-1).validate()
    with pytest.raises(SystemExit) as caught:
        main(["capability", "--run", str(tmp_path), "--n-truthfulqa", "-1"])
    assert caught.value.code == 2 and "argument --n-truthfulqa" in capsys.readouterr().err


@pytest.mark.data
def test_truthfulqa_answers_load(data_dir):
    rows = load_dataset("truthfulqa_answers", data_dir)
    assert len(rows) == 817
    assert all(isinstance(r, ReferenceAnswers) and r.question and r.best in r.correct and r.incorrect
               for r in rows)
    assert [r.question for r in rows] == [p.instruction for p in load_dataset("truthfulqa", data_dir)]
    assert all(a and a == a.strip() and ";" not in a for r in rows for a in (*r.correct, *r.incorrect))
