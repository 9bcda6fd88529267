"""The main job: the stages in order into one run directory, resumable. The pipeline only sequences them: each stage
(`workbench.stages.base.Stage`) declares its inputs, outputs and when it is done.

A stage that is done (outputs made from the same inputs, model and settings) is skipped; one that runs clears the
outputs of the later stages that do not resume piecewise, so nothing stale survives (evaluate and capability resume
per (dataset or task, intervention) by content signature). Stages write atomically, so an interrupted stage leaves
its previous outputs (or none) and simply runs again. `config.json` holds the resolved config, the model and the
package version; `run.json` each stage's start, end, wall time, git commit and package version; `run.log` the
stage log.
"""

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench import __version__
from workbench.errors import WorkbenchError
from workbench.eval.capability import CapabilityConfig
from workbench.io import write_json
from workbench.method.rule import SelectionRule
from workbench.models.fingerprint import check_made_for
from workbench.models.loader import LoadedModel
from workbench.stages import (
    capability,
    diagnose,
    evaluate,
    extract,
    figures,
    frontier,
    gate,
    select,
    sweep,
    token_means,
)
from workbench.stages.base import Stage, jsonable
from workbench.stages.diagnose import DiagnoseConfig
from workbench.stages.evaluate import EvalConfig
from workbench.stages.extract import ExtractConfig
from workbench.stages.frontier import FrontierConfig
from workbench.stages.gate import GateConfig
from workbench.stages.run_dir import OPT_IN_STAGES, RunDir, artifact_paths, record_stage, rewrite_hint
from workbench.stages.sweep import SweepConfig

PIPELINE: tuple[Stage, ...] = (extract.STAGE, token_means.STAGE, sweep.STAGE, select.STAGE, diagnose.STAGE, gate.STAGE,
                               evaluate.STAGE, capability.STAGE, frontier.STAGE, figures.STAGE)
STAGES = tuple(s.name for s in PIPELINE)
DEFAULT_STAGES = tuple(s for s in STAGES if s not in OPT_IN_STAGES)


def main_job_evaluation() -> EvalConfig:
    """The main job's evaluation, sized for a CPU (the README gives the measured time): every intervention of the
    run (α = 1 only), 24 prompts per dataset, 48 new tokens. `workbench evaluate` runs the full sets."""
    return EvalConfig(alphas=(1.0,), limit=24, max_new_tokens=48)


def main_job_capability() -> CapabilityConfig:
    """Baseline and every ablation; WikiText-2 on 4,096 tokens and 50 ARC-Challenge questions. MMLU is left out
    (its 5-shot prompts of about a thousand tokens dominate the cost on a CPU, and a 135M model is at chance on
    it); with `tasks` including "mmlu" it uses 50 questions."""
    return CapabilityConfig(tasks=("wikitext2", "arc_challenge"), interventions=None, perplexity_tokens=4096,
                            n_mmlu=50, n_arc=50)


@dataclass(frozen=True)
class PipelineConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    select: SelectionRule = field(default_factory=SelectionRule)
    """The selection rule: the sweep is screened for it and select applies it."""
    diagnose: DiagnoseConfig = field(default_factory=DiagnoseConfig)
    evaluate: EvalConfig = field(default_factory=main_job_evaluation)
    capability: CapabilityConfig = field(default_factory=main_job_capability)
    gate: GateConfig = field(default_factory=GateConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)
    stages: tuple[str, ...] = DEFAULT_STAGES
    """Which stages run (in pipeline order); e.g. ("extract", "sweep", "select") for the directions only; "gate" and
    "frontier" run only when listed."""

    def validate(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise WorkbenchError(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
        self.extract.validate()
        self.sweep.validate()
        self.select.validate()
        self.diagnose.validate()
        self.evaluate.validate()
        self.capability.validate()
        if "gate" in self.stages:
            self.gate.validate()
        if "frontier" in self.stages:
            self.frontier.validate()


class _Log:
    def __init__(self, run: RunDir):
        self.path = run.file("run.log")

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def _clear(run: RunDir, names: tuple[str, ...]) -> None:
    for name in names:
        for path in artifact_paths(run.path, name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def run_pipeline(lm: LoadedModel, run_path, config: PipelineConfig, force: bool = False) -> dict:
    """Run `config.stages` in pipeline order; returns `selection.json` when the run has one."""
    config.validate()
    run = RunDir(Path(run_path))
    run.path.mkdir(parents=True, exist_ok=True)
    log = _Log(run)
    previous_path = run.file("config.json")
    if previous_path.exists() and not force:
        previous = run.read_json("config.json", keys=("model",))
        if not isinstance(previous["model"], dict):
            raise run.corrupted("config.json", "its 'model' is not a record")
        check_made_for(str(run.path), previous["model"], lm.info.fingerprint, lm.info.name,
                       "use another --run or --force to start over", verb="was made with")
    if force:
        _clear(run, tuple(o for stage in PIPELINE for o in stage.outputs))
    write_json(previous_path, jsonable({"model": lm.info.to_dict(), "load": lm.options.record(),
                                        "workbench_version": __version__, **asdict(config)}))
    log(f"[run] {lm.info.name} (fingerprint {lm.info.fingerprint}) -> {run.path}; stages {', '.join(config.stages)}")
    for k, stage in enumerate(PIPELINE):
        if stage.name not in config.stages or not stage.wanted(config):
            continue
        missing = [name for name in stage.inputs if not artifact_paths(run.path, name)]
        if missing:
            raise WorkbenchError(f"stage {stage.name} needs {run.file(missing[0])}: run "
                                 f"{rewrite_hint(missing[0], run.path)} first (or include its stage)")
        if stage.is_done(lm, run, config):
            log(f"[{stage.name}] up to date, skipped")
            continue
        _clear(run, tuple(o for later in PIPELINE[k + 1 :] if not later.resumes for o in later.outputs))
        log(f"[{stage.name}] running")
        started = time.monotonic()
        with record_stage(run, stage.name):
            summary = stage.execute(lm, run, config)
        log(f"[{stage.name}] {summary} ({time.monotonic() - started:.0f} s)")
    log("[run] done")
    return run.read_json("selection.json") if run.file("selection.json").exists() else {}
