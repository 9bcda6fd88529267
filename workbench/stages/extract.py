"""Step 1–3 of the method as a stage: mean residual activations at every layer and EOI position of the training
prompts the paper's refusal-score filter keeps (`models.activations`), and the true/false refusal candidate grids."""

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from safetensors.torch import save_file

from workbench.data import check_prompt_source, load_prompts
from workbench.errors import WorkbenchError
from workbench.io import atomic_write, write_json
from workbench.method.grids import CandidateGrids
from workbench.method.prompt_filter import keep_for
from workbench.method.refusal_math import mean_difference
from workbench.models.activations import MeanResult, mean_activations
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, jsonable
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig


@dataclass(frozen=True)
class ExtractConfig:
    """What `workbench extract` uses."""

    harmful: str = "bundled_harmful_train"
    """Harmful training prompts (registered dataset name or JSONL file)."""
    harmless: str = "bundled_harmless_train"
    """Harmless training prompts."""
    pseudo_harmful: str = "bundled_pseudo_harmful_train"
    """Pseudo-harmful training prompts (safe but sound harmful)."""
    n_train: int | None = None
    """Cap on prompts per set (None: the whole set)."""
    filter_train: bool = True
    """The paper's filter: keep harmful/pseudo-harmful prompts with refusal score > 0, harmless ones with < 0."""
    batch_size: int = 32
    """Prompts per forward pass."""

    def validate(self) -> None:
        if self.n_train is not None and self.n_train < 1:
            raise WorkbenchError(f"extract n_train must be at least 1 (or None for all), got {self.n_train}")
        if self.batch_size < 1:
            raise WorkbenchError(f"extract batch_size must be at least 1, got {self.batch_size}")
        for name in (self.harmful, self.harmless, self.pseudo_harmful):
            check_prompt_source(name)


def extract(lm: LoadedModel, config: ExtractConfig, run: RunDir) -> dict:
    """Write `candidates.safetensors` (raw true/false refusal grids, means) and `candidates.json`."""
    config.validate()
    sets = {"harmful": config.harmful, "harmless": config.harmless, "pseudo_harmful": config.pseudo_harmful}
    means: dict[str, MeanResult] = {}
    for key, name in sets.items():
        prompts = [p.instruction for p in load_prompts(name, limit=config.n_train)]
        means[key] = mean_activations(lm, prompts, keep_for(key, config.filter_train), config.batch_size,
                                      desc=f"means {key}")
        if means[key].n_kept == 0:
            raise WorkbenchError(
                f"the refusal-score filter removed every {key} prompt of {name!r} ({means[key].n_total} prompts): "
                "this model does not refuse them as expected; pass --no-filter-train to keep all prompts"
            )
    r_grid = mean_difference(means["harmful"].mean, means["harmless"].mean)
    w_grid = mean_difference(means["pseudo_harmful"].mean, means["harmless"].mean)
    tensors = {
        "r": r_grid.float().contiguous(),
        "w": w_grid.float().contiguous(),
        **{f"mean_{k}": m.mean.float().contiguous() for k, m in means.items()},
    }
    atomic_write(run.file("candidates.safetensors"), lambda tmp: save_file(tensors, str(tmp)))
    record = {
        "model": lm.info.to_dict(),
        "load": lm.options.record(),
        "config": asdict(config),
        "positions": lm.chat.eoi_positions,
        "position_tokens": lm.chat.eoi_token_strings,
        "n_layers": lm.info.n_layers,
        "d_model": lm.info.d_model,
        "prompt_counts": {k: {"dataset": sets[k], "total": m.n_total, "kept": m.n_kept} for k, m in means.items()},
        **provenance(),
    }
    write_json(run.file("candidates.json"), record)
    return record


def load_candidates(run: RunDir) -> CandidateGrids:
    """The run's candidate grids, checked against `candidates.json` (positions, layers, width)."""
    record = run.read_json("candidates.json", keys=("positions", "model"))
    tensors = run.read_tensors("candidates.safetensors", keys=("r", "w"))
    true, false = tensors["r"], tensors["w"]
    expected = (len(record["positions"]), record.get("n_layers", true.shape[1] if true.ndim == 3 else -1),
                record.get("d_model", true.shape[-1]))
    for name, grid in (("r", true), ("w", false)):
        if tuple(grid.shape) != expected:
            raise run.corrupted("candidates.safetensors", f"{name} has shape {tuple(grid.shape)}, candidates.json "
                                f"says {expected} (positions, layers, d_model)")
    means = {k.removeprefix("mean_"): v for k, v in tensors.items() if k.startswith("mean_")}
    return CandidateGrids(true, false, [int(p) for p in record["positions"]], means)



def _is_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    if not (run.file("candidates.json").exists() and run.file("candidates.safetensors").exists()):
        return False
    try:
        record = run.read_json("candidates.json", keys=("config", "model"))
        load_candidates(run)
    except WorkbenchError:  # damaged candidates: extract again (which rewrites them)
        return False
    return (record["config"] == jsonable(asdict(config.extract))
            and record["model"].get("fingerprint") == lm.info.fingerprint)


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    record = extract(lm, config.extract, run)
    counts = ", ".join(f"{k} {v['kept']}/{v['total']}" for k, v in record["prompt_counts"].items())
    return f"candidate grids from {counts} prompts (kept/total)"


STAGE = Stage("extract", inputs=STAGE_INPUTS["extract"], outputs=stage_outputs("extract"), execute=_run,
              is_done=_is_done)
