"""The model judge with the real Qwen judge models and their committed read-outs, on the human-labelled XSTest
completions. Off by default (`real` marker, skipped unless WORKBENCH_REAL=1): `make test-real`."""

import os

import pytest

pytestmark = [
    pytest.mark.data,
    pytest.mark.real,
    pytest.mark.skipif(os.environ.get("WORKBENCH_REAL") != "1",
                       reason="loads the real Qwen judge models: set WORKBENCH_REAL=1 (make test-real)"),
]

FILES = ("llama2orig", "mistralinstruct", "gpt4")


@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_committed_readout_judges_labelled_completions(model, data_dir):
    """The committed read-out (fitted on all three files) agrees with the human labels on the first 60 rows of each
    file at least as well as its leave-one-out figure (docs/JUDGES.md: ≥ 0.93 on every file for both models), and
    decides the same whatever the batch size."""
    from workbench.eval.calibration import agreement_metrics, read_labelled
    from workbench.eval.judge import JudgeOptions
    from workbench.eval.model_judge import default_readout_path, load_model_judge

    assert default_readout_path(model).is_file()
    judge = load_model_judge(JudgeOptions(model=model, batch_size=8))
    assert judge.readout is not None and judge.readout.model == model
    for name in FILES:
        rows = read_labelled(data_dir / f"xstest/labelled_completions/xstest_v2_completions_{name}.csv")
        prompts, completions, labels = rows.prompts[:60], rows.completions[:60], rows.labels[:60]
        verdicts = judge.verdicts(prompts, completions)
        metrics = agreement_metrics(labels, [v.label for v in verdicts])
        assert metrics["agreement"] >= 0.93, (name, metrics)
        assert all(0.0 <= v.score <= 1.0 and v.refusal == (v.score > 0.5) for v in verdicts)
    judge.batch_size = 1
    again = judge.verdicts(prompts[:8], completions[:8])
    assert [v.label for v in again] == [v.label for v in verdicts[:8]]
