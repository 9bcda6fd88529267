"""The main job: extract → sweep → select → evaluate → capability → figures into one run directory, resumable.

A stage whose outputs exist and were made with the same model and config is skipped (evaluation and capability
resume per (dataset or task, intervention)); stages write atomically, so an interrupted stage leaves its previous
outputs (or none) and simply runs again. `config.json` holds the resolved config, the model and the package
version; `run.log` the stage log.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from workbench import __version__
from workbench.capability import CapabilityConfig, measure_capability
from workbench.errors import WorkbenchError
from workbench.evaluation import EvalConfig, evaluate
from workbench.extraction import ExtractConfig, extract
from workbench.io import write_json
from workbench.models.loader import LoadedModel
from workbench.run_dir import RunDir
from workbench.selection import SelectConfig, select
from workbench.sweep import SweepConfig, run_sweep, same_settings

STAGES = ("extract", "sweep", "select", "evaluate", "capability", "figures")


def main_job_evaluation() -> EvalConfig:
    """The main job's evaluation, sized for ≤ 30 minutes of the whole job on 2 CPU cores: every intervention of the
    run (α = 1 only), 24 prompts per dataset, 48 new tokens. `workbench evaluate` runs the full sets."""
    return EvalConfig(alphas=(1.0,), limit=24, max_new_tokens=48)


def main_job_capability() -> CapabilityConfig:
    """Baseline and every ablation; WikiText-2 on 4,096 tokens and 50 ARC-Challenge questions. MMLU is left out
    (its 5-shot prompts cost ≈ 2.5 min per intervention for 50 questions on 2 CPU cores, and a 135M model is at
    chance on it); with `tasks` including "mmlu" it uses 50 questions."""
    return CapabilityConfig(tasks=("wikitext2", "arc_challenge"), interventions=None, perplexity_tokens=4096,
                            mmlu_n=50, arc_n=50)


@dataclass(frozen=True)
class PipelineConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    evaluate: EvalConfig = field(default_factory=main_job_evaluation)
    capability: CapabilityConfig = field(default_factory=main_job_capability)
    stages: tuple[str, ...] = STAGES
    """Which stages run (in this order); e.g. ("extract", "sweep", "select") for the directions only."""

    def validate(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise WorkbenchError(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")


def _json_roundtrip(obj) -> dict:
    return json.loads(json.dumps(obj))


class _Log:
    def __init__(self, run: RunDir):
        self.path = run.file("run.log")

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")


def run_pipeline(lm: LoadedModel, run_path, config: PipelineConfig, force: bool = False) -> dict:
    config.validate()
    config.sweep.validate()
    run = RunDir(run_path)
    run.path.mkdir(parents=True, exist_ok=True)
    log = _Log(run)
    resolved = _json_roundtrip({"model": lm.info.to_dict(), "workbench_version": __version__, **asdict(config)})
    previous_path = run.file("config.json")
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else None
    if previous is not None and not force and previous["model"]["fingerprint"] != lm.info.fingerprint:
        raise WorkbenchError(f"{run.path} was made with model {previous['model']['name']!r}: use another --run "
                             "or --force to start over")
    stale = (force or previous is None or previous.get("extract") != resolved["extract"]
             or not run.file("candidates.safetensors").exists())
    write_json(previous_path, resolved)
    log(f"[run] {lm.info.name} (fingerprint {lm.info.fingerprint}) -> {run.path}; stages {', '.join(config.stages)}")
    if "extract" in config.stages:
        if stale:
            for name in ("candidates.json", "sweep.csv", "sweep.json", "selection.json"):
                run.file(name).unlink(missing_ok=True)
            log("[extract] computing candidate grids")
            extract(lm, config.extract, run)
        else:
            log("[extract] up to date, skipped")
    if "sweep" in config.stages:
        sweep_json = run.file("sweep.json")
        swept = json.loads(sweep_json.read_text()) if sweep_json.exists() else None
        if (swept is not None and same_settings(swept["config"], config.sweep)
                and set(map(float, config.sweep.lams)) <= set(map(float, swept["config"]["lams"]))):
            log("[sweep] up to date, skipped")
        else:
            log("[sweep] scoring candidates")
            run.file("selection.json").unlink(missing_ok=True)
            run_sweep(lm, run, config.sweep)
    result = {}
    if "select" in config.stages:
        result = select(run, config.select)
        for s in result["selections"]:
            log(f"[select] λ={s['lam']}: pos {s['pos']}, layer {s['layer']}, ablation refusal score "
                f"{s['ablation_refusal_score']:+.3f} (baseline {result['baseline']['pseudo_harmful']:+.3f}), "
                f"KL {s['ablation_kl']:.3f}")
    if "evaluate" in config.stages:
        log("[evaluate] generating under each intervention")
        frame = evaluate(lm, run, config.evaluate)
        log(f"[evaluate] {len(frame)} (dataset, intervention) rates -> {run.file('evaluation.csv')}")
    if "capability" in config.stages:
        log("[capability] perplexity, MMLU, ARC-Challenge")
        table = measure_capability(lm, run, config.capability)
        log(f"[capability] {len(table)} rows -> {run.file('capability.csv')}")
    if "figures" in config.stages:
        from workbench.figures import run_figures

        written = run_figures(run)
        log(f"[figures] {len(written)} files -> {run.file('figures')}")
    log("[run] done")
    return result
