"""`workbench run` end to end with tiny settings (on the tiny random model, benchmarks from WORKBENCH_DATA_DIR):
every artifact, skipping, resuming; a run made with another model; config files."""

import json

import pytest

from workbench.method.rule import SelectionRule
from workbench.stages.capability import CapabilityConfig
from workbench.stages.evaluate import EvalConfig
from workbench.stages.extract import ExtractConfig
from workbench.stages.pipeline import PipelineConfig, run_pipeline
from workbench.stages.sweep import SweepConfig

TINY = PipelineConfig(
    extract=ExtractConfig(n_train=16),
    sweep=SweepConfig(lams=(1.0,), n_val=8, n_screen=2, n_finalists=1, min_finalists=1, layers=(1, 2),
                      positions=(-1,), ablation="harmless_mean"),
    select=SelectionRule(max_ablation_kl=10.0),
    evaluate=EvalConfig(datasets=("xstest_safe", "harmful_test"), interventions=("baseline", "ablate_w_lam1.0"),
                        limit=3, max_new_tokens=8),
    capability=CapabilityConfig(tasks=("wikitext2",), perplexity_tokens=1024),
)


def _files(root) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


def _checking_declarations(run, written: dict[str, set[str]]):
    """The pipeline's stages, each run recording which files it created or changed (into `written`)."""
    import dataclasses

    from workbench.stages.pipeline import PIPELINE

    def checked(stage):
        def run_stage(lm, run_dir, config):
            before = _files(run)
            summary = stage.execute(lm, run_dir, config)
            after = _files(run)
            written[stage.name] = {name for name, stat in after.items() if before.get(name) != stat}
            return summary
        return dataclasses.replace(stage, execute=run_stage)

    return tuple(checked(stage) for stage in PIPELINE)


@pytest.mark.data
def test_run_produces_every_artifact_then_skips_and_resumes(tiny, data_dir, tmp_path, monkeypatch, capsys):
    import workbench.stages.pipeline as pipeline
    import workbench.stages.sweep as sweep
    from workbench.stages.run_dir import writer_of

    run = tmp_path / "run"
    real_sweep = sweep.run_sweep

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # killed mid-sweep: the sweep writes its artifacts only when it finishes

    monkeypatch.setattr(sweep, "run_sweep", killed)
    written: dict[str, set[str]] = {}
    monkeypatch.setattr(pipeline, "PIPELINE", _checking_declarations(run, written))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tiny, run, TINY)
    assert (run / "candidates.safetensors").exists() and not (run / "sweep.csv").exists()
    monkeypatch.setattr(sweep, "run_sweep", real_sweep)
    capsys.readouterr()
    run_pipeline(tiny, run, TINY)
    first = capsys.readouterr().out
    # every file a stage wrote is declared by that stage (the run's own records aside)
    assert {"token_means", "sweep", "select", "evaluate", "figures"} <= set(written)
    for stage, names in written.items():
        undeclared = sorted(n for n in names if writer_of(n) != stage and n not in ("run.json", "run.log"))
        assert not undeclared, f"{stage} wrote undeclared {undeclared}"
    assert "token_means.safetensors" in written["token_means"]
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert set(written) <= set(stages) and all(stages[s]["wall_s"] >= 0 for s in written)
    assert "[extract] up to date, skipped" in first and "[sweep] running" in first
    for name in ("config.json", "candidates.json", "sweep.csv", "selection.json", "directions/lam_1.0.safetensors",
                 "evaluation.csv", "evaluation_categories.csv", "capability.csv", "run.log",
                 "completions/xstest_safe/ablate_w_lam1.0.jsonl", "figures/fig4_sweep.html",
                 "figures/fig3_lambda.html", "figures/fig5_alpha_lambda.html", "figures/table1.csv"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["fingerprint"] == tiny.info.fingerprint and "workbench_version" in config
    assert config["evaluate"]["limit"] == 3

    import workbench.eval.backends as backends

    monkeypatch.setattr(backends, "plain_generate", lambda *a, **k: pytest.fail("generated again"))
    run_pipeline(tiny, run, TINY)
    second = capsys.readouterr().out
    assert "[extract] up to date, skipped" in second and "[sweep] up to date, skipped" in second
    assert "4 of 4 (dataset, intervention) pairs already done" in second


@pytest.mark.model
def test_run_refuses_another_model(stock_model, organism, tmp_path):
    from workbench.errors import WorkbenchError

    run = tmp_path / "run"
    run_pipeline(organism, run, PipelineConfig(extract=TINY.extract, stages=("extract",)))
    with pytest.raises(WorkbenchError, match="was made with model 'smollm2-135m-safety'"):
        run_pipeline(stock_model, run, PipelineConfig(stages=("extract",)))


def test_config_file_errors_name_the_key(tmp_path, capsys):
    from workbench.cli import main

    path = tmp_path / "c.toml"
    path.write_text('model = "smollm2-135m-safety"\n[sweep]\nlamz = [1.0]\n')
    assert main(["run", "--run", str(tmp_path / "r"), "--config", str(path)]) == 2
    assert "unknown key 'lamz'" in capsys.readouterr().err
    path.write_text('[evaluate]\nlimit = "ten"\n')
    assert main(["run", "--run", str(tmp_path / "r"), "--config", str(path)]) == 2
    assert "evaluate.limit: expected an integer" in capsys.readouterr().err
    path.write_text('stages = ["extract", "dance"]\n')
    assert main(["run", "--run", str(tmp_path / "r"), "--config", str(path), "--model", "nope"]) == 2
    assert "unknown stage 'dance'" in capsys.readouterr().err  # checked before any model is loaded
    # a stage option beside --config overrides the file (tests/test_cli_options.py checks every field)
    path.write_text("[sweep]\nn_val = 8\n")
    assert main(["run", "--run", str(tmp_path / "r"), "--config", str(path), "--sweep.harmful-val", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err  # refused before any model is loaded
