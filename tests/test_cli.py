"""The CLI on the real default model."""

import json

import pytest

from workbench.cli import main


@pytest.mark.model
def test_chat_answers_sensibly(capsys):
    assert main(["chat", "--model", "smollm2-135m-instruct", "What is the capital of France?"]) == 0
    assert "Paris" in capsys.readouterr().out


@pytest.mark.model
def test_chat_prompts_file(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"instruction": "What is the capital of France?"}) + "\n")
    args = ["chat", "--model", "smollm2-135m-instruct", "--prompts-file", str(path), "--max-new-tokens", "12"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and set(rows[0]) == {"instruction", "response", "refused"}
    assert "Paris" in rows[0]["response"] and rows[0]["refused"] is False


def test_unknown_model_exits_2_with_one_line(capsys):
    assert main(["chat", "--model", "nope", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'nope'" in err[0]


def test_datasets_lists_registry(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "xstest_safe" in out and "bundled_pseudo_harmful" in out


def test_models_lists_default(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out


def test_export_argument_errors(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--run needs --lam" in capsys.readouterr().err
    assert main(["export", "--lam", "1.0", "--out", str(tmp_path / "o")]) == 2
    assert "--lam needs --run" in capsys.readouterr().err
    assert main(["export", "--out", str(tmp_path / "o")]) == 2
    assert "give --model" in capsys.readouterr().err


def test_evaluate_needs_a_selection(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "workbench extract" in capsys.readouterr().err  # candidates.json missing: says which command makes it
