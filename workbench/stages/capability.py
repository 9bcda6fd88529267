"""The capability stage: WikiText-2 perplexity, MMLU, ARC-Challenge and TruthfulQA (`workbench.eval.capability`)
under each intervention, on the weight-edited plain model. Writes `capability.csv` (`task`, `intervention`, `metric`,
`value`, `n`) and `capability.meta.json`, resumable per (task, intervention): a pair is scored again when the
intervention or one of the settings that task depends on (`TASK_SETTINGS`) changed.
"""

import json
from typing import TYPE_CHECKING

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.eval.capability import CapabilityConfig, plain_forward, plain_last_logits, score_task
from workbench.io import atomic_write, write_json
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, never_done
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, stage_outputs

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

__all__ = ["CapabilityConfig", "measure_capability"]
CAPABILITY_COLUMNS = ("task", "intervention", "metric", "value", "n")


def measure_capability(lm: LoadedModel, run: RunDir, config: CapabilityConfig, progress: bool = True) -> pd.DataFrame:
    """Score every (task, intervention) not yet in `capability.csv` with the same settings; returns the table."""
    from workbench.interventions.catalogue import build_interventions, choose, parse_name, signature
    from workbench.interventions.export import plain_hf_model
    from workbench.interventions.gate import Gated
    from workbench.interventions.hooks import Addition
    from workbench.interventions.weight_edit import edited

    config.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    # α values named in the requested interventions (`actadd_r_a<α>`, alone or combined)
    alphas = tuple(dict.fromkeys(a for n in config.interventions or () if (a := parse_name(n)[1]) is not None))
    selection = run.read_json("selection.json", keys=("selections", "r"))
    items = build_interventions(selection, run.path, lm.info.fingerprint, lm.info.d_model, alphas=alphas)
    if config.interventions is None:  # no additions, and no gated entries (their gate reads chat prompts)
        items = [i for i in items if not any(isinstance(p, Addition) for p in i.intervention.parts)
                 and not isinstance(i.intervention, Gated)]
    else:
        items = choose(items, config.interventions)
        gated = [i.name for i in items if isinstance(i.intervention, Gated)]
        if gated:
            raise WorkbenchError(f"capability: {gated[0]} is gated (it decides per chat prompt); the capability tasks "
                                 "are not chat prompts: `workbench frontier` scores TruthfulQA per question under it")
    table_path, meta_path = run.file("capability.csv"), run.file("capability.meta.json")
    table, meta = pd.DataFrame(columns=list(CAPABILITY_COLUMNS)), {}
    try:
        if table_path.exists():
            table = run.read_csv("capability.csv", columns=CAPABILITY_COLUMNS, numeric_columns=("value", "n"))
        if meta_path.exists():
            meta = run.read_json("capability.meta.json")
    except WorkbenchError:  # damaged: score every (task, intervention) again and rewrite both files
        print(f"[capability] {table_path.name} or {meta_path.name} is damaged: scoring every task again")
        table, meta = pd.DataFrame(columns=list(CAPABILITY_COLUMNS)), {}
    plain = None
    for item in items:
        for task in config.tasks:
            key = f"{task}/{item.name}"
            wanted = json.loads(json.dumps({"signature": signature(item.intervention), **config.task_settings(task)}))
            old = meta.get(key)
            if isinstance(old, dict) and {k: old.get(k) for k in wanted} == wanted:  # older metas hold every setting
                continue
            if plain is None:
                plain = plain_hf_model(lm)
            with edited(plain, item.intervention):
                rows = score_task(task, plain_forward(plain), lm.tokenizer, config, progress,
                                  plain_last_logits(plain, lm.tokenizer.pad_token_id or 0))
            table = table[~((table.task == task) & (table.intervention == item.name))]
            table = pd.concat([table, pd.DataFrame([{"task": task, "intervention": item.name, **r} for r in rows])],
                              ignore_index=True)
            meta[key] = wanted
            atomic_write(table_path, lambda tmp, t=table: t.to_csv(tmp, index=False))
            write_json(meta_path, meta)
            print(f"[capability] {task} · {item.name}: "
                  + ", ".join(f"{r['metric']} {r['value']:.4g} (n={r['n']})" for r in rows))
    return table



def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    table = measure_capability(lm, run, config.capability)
    return f"{len(table)} rows -> {run.file('capability.csv')}"


STAGE = Stage("capability", inputs=STAGE_INPUTS["capability"], outputs=stage_outputs("capability"),
              execute=_run, is_done=never_done, resumes=True)
