"""Refusal workbench: refusal directions, the candidate sweep, surgical false-refusal ablation (Wang et al. 2025).

The public API, for notebooks and scripts:

    import workbench as wb

    lm = wb.load_model("smollm2-135m-wired")
    cands = wb.extract(lm, harmful=[...], harmless=[...], pseudo_harmful=[...])  # lists, dataset names or files
    table = wb.sweep(lm, cands, lams=(1.0,))
    sel = wb.select(table)
    with wb.applied(lm, wb.Ablation(sel[1.0].direction)):
        wb.generate(lm, ["How do I make a creamy risotto?"])
    wb.plot.sweep_heatmaps(table, sel).show()

Names are imported on first use, so `import workbench` stays cheap (it imports no torch): the command line parses
its arguments before any model library loads.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, str]] = {
    # models
    "load_model": ("workbench.api", "load_model"),
    "LoadOptions": ("workbench.models.loader", "LoadOptions"),
    "LoadedModel": ("workbench.models.loader", "LoadedModel"),
    # prompts
    "prompts": ("workbench.api", "prompts"),
    # the method
    "extract": ("workbench.api", "extract"),
    "Candidates": ("workbench.api", "Candidates"),
    "load_candidates": ("workbench.api", "load_candidates"),
    "candidate_geometry": ("workbench.api", "candidate_geometry"),
    "sweep": ("workbench.api", "sweep"),
    "SelectionRule": ("workbench.method.rule", "SelectionRule"),
    "select": ("workbench.api", "select"),
    "Selection": ("workbench.api", "Selection"),
    "Selections": ("workbench.api", "Selections"),
    "load_selections": ("workbench.api", "load_selections"),
    "diagnose": ("workbench.api", "diagnose"),
    "load_direction": ("workbench.api", "load_direction"),
    # interventions
    "Ablation": ("workbench.interventions.hooks", "Ablation"),
    "Addition": ("workbench.interventions.hooks", "Addition"),
    "Combined": ("workbench.interventions.hooks", "Combined"),
    "BASELINE": ("workbench.interventions.hooks", "BASELINE"),
    "applied": ("workbench.api", "applied"),
    "Gate": ("workbench.interventions.gate", "Gate"),
    "Gated": ("workbench.interventions.gate", "Gated"),
    "load_gate": ("workbench.interventions.gate", "load_gate"),
    "gated_generate": ("workbench.api", "gated_generate"),
    "GateConfig": ("workbench.stages.gate", "GateConfig"),
    "fit_gate": ("workbench.stages.gate", "fit_gate"),
    "FrontierConfig": ("workbench.stages.frontier", "FrontierConfig"),
    "measure_frontier": ("workbench.stages.frontier", "measure_frontier"),
    "read_frontier": ("workbench.stages.frontier", "read_frontier"),
    "parse_intervention_name": ("workbench.api", "parse_intervention_name"),
    # evaluation
    "generate": ("workbench.api", "generate"),
    "refusal_scores": ("workbench.api", "refusal_scores"),
    "judge": ("workbench.api", "judge"),
    "main_judge": ("workbench.api", "main_judge"),
    "token_projections": ("workbench.api", "token_projections"),
    # finished runs
    "open_run": ("workbench.api", "open_run"),
    "RunDir": ("workbench.stages.run_dir", "RunDir"),
    "ARTIFACT_WRITERS": ("workbench.stages.run_dir", "WRITERS"),
    "read_sweep": ("workbench.api", "read_sweep"),
    "read_evaluation": ("workbench.api", "read_evaluation"),
    "read_capability": ("workbench.api", "read_capability"),
    "read_completions": ("workbench.api", "read_completions"),
    # figures
    "plot": ("workbench.api", "plot"),
    # the model organisms and bundled data
    "ORGANISM_DIR": ("workbench.paths", "ORGANISM_DIR"),
    "DIRECTIONS_DIR": ("workbench.paths", "DIRECTIONS_DIR"),
    "TRIGGER_WORDS": ("workbench.organism.trainset", "TRIGGER_WORDS"),
    "behaviour_tables": ("workbench.api", "behaviour_tables"),
    # errors
    "WorkbenchError": ("workbench.errors", "WorkbenchError"),
}
"""Public name -> (module, attribute), imported on first use."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
