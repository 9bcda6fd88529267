"""What a run directory holds, read from its artifacts alone (no model load): `workbench status --run DIR`.

Each pipeline stage is `done` (its artifacts exist and none is older than what it reads), `stale` (an input was
rewritten after it: the stage's command runs it again), `missing`, `not needed` in a run made from committed
directions (no extraction or sweep), or `not run` when the main job was configured without it. Beside the stages:
the model and how it was loaded, the selections, and the evaluation summary (compliance per dataset and
intervention, by the calibrated judge).
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.stages.run_dir import ON_DEMAND_STAGES, OPT_IN_STAGES, STAGE_INPUTS, RunDir, rewrite_hint, stage_outputs

DIRECTION_STAGES = ("extract", "sweep", "select", "diagnose")
"""The stages a run made from committed directions (`evaluate --directions`) does without."""


@dataclass(frozen=True)
class StageState:
    stage: str
    state: str
    """done | stale | missing | not needed (a run from committed directions) | not run (not among the main job's
    configured stages)"""
    detail: str
    """What is there (or what is newer than it)."""
    command: str
    """The command that runs the stage next ("" when done)."""


def _mtime(path: Path) -> float | None:
    """A file's modification time, or for a folder or a pattern (`directions/lam_*.safetensors`) the newest of its
    files' (None when absent or empty)."""
    if "*" in path.name:
        times = [p.stat().st_mtime for p in path.parent.glob(path.name) if p.is_file()]
        return max(times) if times else None
    if path.is_dir():
        times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
        return max(times) if times else None
    return path.stat().st_mtime if path.exists() else None


def stage_states(run: RunDir) -> list[StageState]:
    """Every pipeline stage's state in `run`, in pipeline order."""
    from_directions = _from_directions(run)
    configured = _configured_stages(run)
    states = []
    for stage in STAGE_INPUTS:
        outputs = stage_outputs(stage)
        command = rewrite_hint(outputs[0], run.path).strip("`")
        if stage in ON_DEMAND_STAGES and _mtime(run.file(outputs[0])) is None:
            states.append(StageState(stage, "not needed", "only the affine (harmless_mean) ablation reads it", ""))
            continue
        if configured is not None and stage not in configured and _mtime(run.file(outputs[0])) is None:
            states.append(StageState(stage, "not run", "not among the main job's stages (config.json)", command))
            continue
        if stage in OPT_IN_STAGES and _mtime(run.file(outputs[0])) is None:
            states.append(StageState(stage, "not run", "an opt-in stage", command))
            continue
        if from_directions and stage in DIRECTION_STAGES:
            if stage == "select":
                states.append(StageState(stage, "done", "selection from committed directions", ""))
            else:
                states.append(StageState(stage, "not needed", "made from committed directions", ""))
            continue
        present = {name: _mtime(run.file(name)) for name in outputs}
        if present[outputs[0]] is None:
            states.append(StageState(stage, "missing", "", command))
            continue
        inputs = {name: _mtime(run.file(name)) for name in STAGE_INPUTS[stage]}
        oldest = min(t for t in present.values() if t is not None)
        newer = [name for name, t in inputs.items() if t is not None and t > oldest]
        held = ", ".join(name for name, t in present.items() if t is not None)
        if newer:
            states.append(StageState(stage, "stale", f"{', '.join(newer)} rewritten after it", command))
        else:
            states.append(StageState(stage, "done", held, ""))
    return states


def _configured_stages(run: RunDir) -> list[str] | None:
    """The stages the main job was configured to run (`config.json`), or None for a run made stage by stage."""
    try:
        stages = run.read_json("config.json").get("stages")
    except WorkbenchError:
        return None
    return stages if isinstance(stages, list) else None


def _from_directions(run: RunDir) -> bool:
    try:
        return "from_directions" in run.read_json("candidates.json")
    except WorkbenchError:
        return False


def selections_table(run: RunDir) -> pd.DataFrame | None:
    """The selected cell and its sweep scores per λ (None before `select`)."""
    if not run.file("selection.json").exists():
        return None
    rows = run.read_json("selection.json", keys=("selections", "r"))["selections"]
    columns = ["lam", "pos", "layer", "ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful",
               "ablation_kl"]
    table = pd.DataFrame([{c: s.get(c) for c in columns} for s in rows], columns=columns)
    return table.dropna(axis="columns", how="all")  # a selection from committed directions has no sweep scores


def evaluation_summary(run: RunDir) -> tuple[str, pd.DataFrame] | None:
    """(judge, compliance rate per intervention × dataset) from `evaluation.csv`, by the calibrated judge where the
    run has one (else the paper's); None before `evaluate`."""
    if not run.file("evaluation.csv").exists():
        return None
    frame = run.read_csv("evaluation.csv", columns=("dataset", "intervention", "judge", "rate"),
                         numeric_columns=("rate",))
    judges = list(dict.fromkeys(frame.judge))
    judge = next((j for j in judges if j != "substring"), judges[0] if judges else "substring")
    chosen = frame[frame.judge == judge]
    table = chosen.pivot_table(index="intervention", columns="dataset", values="rate", sort=False)
    return judge, table


def describe(run: RunDir) -> str:
    """The status page as text."""
    run.require_dir()
    lines = [f"run {run.path}"]
    if run.file("candidates.json").exists():
        model = run.model_record()
        lines.append(f"model      {model['name']} (fingerprint {model['fingerprint']})")
        load = run.load_record()
        if load is None:
            lines.append("loaded     not recorded (the defaults: cpu, float32)")
        else:
            lines.append("loaded     " + ", ".join(f"{k} {v}" for k, v in load.items() if v is not None))
    else:
        lines.append(f"model      none yet: {rewrite_hint('candidates.json', run.path).strip('`')}")
    lines.append("")
    states = stage_states(run)
    width = max(len(s.stage) for s in states)
    for s in states:
        run_it = f"  -> {s.command}" if s.command else ""
        lines.append(f"  {s.stage:{width}s}  {s.state:11s} {s.detail}{run_it}".rstrip())
    pending = [s for s in states if s.state in ("missing", "stale")]
    lines.append("")
    lines.append(f"next: {pending[0].command}" if pending else "every stage is done")
    selections = selections_table(run)
    if selections is not None:
        lines += ["", "selections:", selections.to_string(index=False, float_format=lambda v: f"{v:.3f}")]
    summary = evaluation_summary(run)
    if summary is not None:
        judge, table = summary
        lines += ["", f"compliance rate ({judge} judge):",
                  table.to_string(float_format=lambda v: f"{v:.3f}")]
    return "\n".join(lines)
