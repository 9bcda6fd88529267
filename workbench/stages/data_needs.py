"""Which registered datasets a pipeline config reads, stage by stage: what a command checks is there (with
`workbench.data.require_available`) before it loads a model, and what `workbench datasets fetch --paper` fetches."""

from collections.abc import Callable

from workbench.data import REGISTRY
from workbench.eval.capability import TASK_DATASETS
from workbench.stages.pipeline import PipelineConfig
from workbench.stages.token_means import token_means_wanted


def _extract(config: PipelineConfig) -> list[str]:
    return [config.extract.harmful, config.extract.harmless, config.extract.pseudo_harmful]


def _sweep(config: PipelineConfig) -> list[str]:
    sweep = config.sweep
    token_means = [config.extract.harmless] if sweep.ablation == "harmless_mean" else []
    return [sweep.pseudo_harmful_val, sweep.harmful_val, sweep.harmless_val, *token_means]


def _token_means(config: PipelineConfig) -> list[str]:
    return [config.extract.harmless] if token_means_wanted(config) else []


def _select(config: PipelineConfig) -> list[str]:
    """Re-ranking generates on the sweep's pseudo-harmful and harmful validation sets; plain selection reads none."""
    return [config.sweep.pseudo_harmful_val, config.sweep.harmful_val] if config.select.rerank_top_k else []


def _diagnose(config: PipelineConfig) -> list[str]:
    """The diagnose config's sets, each defaulting to the sweep's validation set (as `diagnose.resolved` fills it)."""
    d, sweep = config.diagnose, config.sweep
    return [d.harmless_val or sweep.harmless_val, d.harmful_val or sweep.harmful_val,
            d.pseudo_harmful_val or sweep.pseudo_harmful_val]


def _evaluate(config: PipelineConfig) -> list[str]:
    token_means = [config.extract.harmless] if "harmless_mean" in config.evaluate.ablation else []
    return [*config.evaluate.datasets, *token_means]


def _capability(config: PipelineConfig) -> list[str]:
    return [name for task in config.capability.tasks for name in TASK_DATASETS[task]]


def _gate(config: PipelineConfig) -> list[str]:
    g = config.gate
    return [g.harmful, g.harmless, g.pseudo_harmful, g.contrast_harmful, g.contrast_benign]


def _frontier(config: PipelineConfig) -> list[str]:
    """The frontier's validation sets (each defaulting to the sweep's) and TruthfulQA where it scores it."""
    f, sweep = config.frontier, config.sweep
    return [f.pseudo_harmful_val or sweep.pseudo_harmful_val, f.harmful_val or sweep.harmful_val,
            *(TASK_DATASETS["truthfulqa"] if f.n_truthfulqa else [])]


STAGE_DATASETS: dict[str, Callable[[PipelineConfig], list[str]]] = {
    "extract": _extract, "token_means": _token_means, "sweep": _sweep, "select": _select, "diagnose": _diagnose,
    "gate": _gate, "evaluate": _evaluate, "capability": _capability, "frontier": _frontier,
    "figures": lambda config: [],
}
"""The datasets (or prompt files) each pipeline stage reads, from the config."""


def pipeline_datasets(config: PipelineConfig) -> tuple[str, ...]:
    """The registered datasets that the stages of `config.stages` read, in stage order without repeats (prompt files
    given instead of a set are not datasets and are left out)."""
    names = [name for stage in config.stages for name in STAGE_DATASETS[stage](config)]
    return tuple(name for name in dict.fromkeys(names) if name in REGISTRY)


def paper_datasets() -> tuple[str, ...]:
    """The benchmark sets the main job (`make run`, the default `PipelineConfig`) reads; the bundled sets need no
    fetch and are left out."""
    return tuple(name for name in pipeline_datasets(PipelineConfig()) if not REGISTRY[name].bundled)
