"""The main job: extract → sweep → select into one run directory, resumable.

A stage whose outputs exist and were made with the same model and config is skipped; stages write atomically, so an
interrupted stage leaves its previous outputs (or none) and simply runs again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from workbench import __version__
from workbench.errors import WorkbenchError
from workbench.extraction import ExtractConfig, extract
from workbench.io import write_json
from workbench.models.loader import LoadedModel
from workbench.run_dir import RunDir
from workbench.selection import SelectConfig, select
from workbench.sweep import SweepConfig, run_sweep, same_settings


@dataclass(frozen=True)
class PipelineConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    select: SelectConfig = field(default_factory=SelectConfig)


def _json_roundtrip(obj) -> dict:
    return json.loads(json.dumps(obj))


def run_pipeline(lm: LoadedModel, run_path, config: PipelineConfig, force: bool = False) -> dict:
    run = RunDir(run_path)
    run.path.mkdir(parents=True, exist_ok=True)
    resolved = _json_roundtrip({"model": lm.info.to_dict(), "workbench_version": __version__, **asdict(config)})
    previous_path = run.file("config.json")
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else None
    if previous is not None and not force:
        if previous["model"]["fingerprint"] != lm.info.fingerprint:
            raise WorkbenchError(f"{run.path} was made with model {previous['model']['name']!r}: use another --run "
                                 "or --force to start over")
    if force or previous is None or previous["extract"] != resolved["extract"]:
        stale = True
    else:
        stale = not run.file("candidates.safetensors").exists()
    write_json(previous_path, resolved)
    if stale:
        for name in ("candidates.json", "sweep.csv", "sweep.json", "selection.json"):
            run.file(name).unlink(missing_ok=True)
        print("[extract] computing candidate grids")
        extract(lm, config.extract, run)
    else:
        print("[extract] up to date, skipped")
    sweep_json = run.file("sweep.json")
    swept = json.loads(sweep_json.read_text()) if sweep_json.exists() else None
    if (swept is not None and same_settings(swept["config"], config.sweep)
            and set(map(float, config.sweep.lams)) <= set(map(float, swept["config"]["lams"]))):
        print("[sweep] up to date, skipped")
    else:
        print("[sweep] scoring candidates")
        run.file("selection.json").unlink(missing_ok=True)
        run_sweep(lm, run, config.sweep)
    result = select(run, config.select)
    for s in result["selections"]:
        print(f"[select] λ={s['lam']}: pos {s['pos']}, layer {s['layer']}, ablation refusal score "
              f"{s['ablation_refusal_score']:+.3f} (baseline {result['baseline']['pseudo_harmful']:+.3f}), "
              f"KL {s['ablation_kl']:.3f}")
    return result
