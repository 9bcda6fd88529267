"""The stages as the run directory's one artifact registry: every file a stage writes is declared (`WRITERS`), once,
by one stage; each stage's outputs are its declarations; `run.json` records every stage's run."""

import json

import pytest

from workbench.stages.pipeline import PIPELINE, STAGES
from workbench.stages.run_dir import (
    STAGE_COMMANDS,
    STAGE_INPUTS,
    WRITERS,
    RunDir,
    declaration_clashes,
    record_stage,
    stage_outputs,
    stage_times,
    writer_of,
)


def test_each_stage_declares_its_outputs_once():
    assert tuple(STAGE_INPUTS) == STAGES  # in pipeline order
    for stage in PIPELINE:
        assert stage.outputs == stage_outputs(stage.name) and stage.outputs, stage.name
        assert stage.inputs == STAGE_INPUTS[stage.name]
    assert set(WRITERS.values()) <= set(STAGE_COMMANDS) == {*STAGES, "run", "report"}
    assert declaration_clashes(WRITERS) == []
    # the clash the gate's file once had with the select stage's whole directions/ folder is caught
    assert declaration_clashes({**WRITERS, "directions/": "select"}) == [("directions/gate.safetensors", "directions/")]
    assert declaration_clashes({"a/b.csv": "x", "a/*.csv": "y"}) == [("a/b.csv", "a/*.csv")]
    assert writer_of("directions/lam_0.5.safetensors") == "select"
    assert writer_of("directions/gate.safetensors") == "gate"
    assert writer_of("completions/xstest/baseline.jsonl") == "evaluate" and writer_of("notes.txt") is None


def test_run_json_records_each_stage(tmp_path):
    run = RunDir(tmp_path)
    with record_stage(run, "sweep"):
        pass
    with pytest.raises(RuntimeError), record_stage(run, "select"):
        raise RuntimeError("interrupted")  # a stage that fails is not recorded
    record = json.loads(run.file("run.json").read_text())["stages"]
    assert set(record) == {"sweep"}
    assert set(record["sweep"]) == {"started", "ended", "wall_s", "git_commit", "workbench_version"}
    assert record["sweep"]["started"] <= record["sweep"]["ended"]
    assert stage_times(run) == {"sweep": record["sweep"]["wall_s"]}
    run.file("run.json").write_text(json.dumps({"stages": {"sweep": 3}}))
    with pytest.raises(Exception, match="run.json is corrupted"):
        stage_times(run)
