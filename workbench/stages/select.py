"""Step 6: pick the surgical false-refusal direction per λ with the selection rule (`method.rule.SelectionRule`).

Reads `sweep.csv`/`sweep.json`; writes `selection.csv` (every sweep row with `kept` and `filter_reason` under the
rule), `selection.json` (baseline, the rule, one selection per λ, the Arditi true-refusal pick) and
`directions/lam_<λ>.safetensors` (and `directions/true.safetensors`). The sweep chose its finalists for a rule: a
different rule is refused unless the sweep scored every candidate in full (re-run the sweep with that rule).
"""

import hashlib
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.interventions.directions import save_direction
from workbench.io import atomic_write, write_json
from workbench.method.refusal_math import partial_orthogonalize
from workbench.method.rule import SelectionRule
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage
from workbench.stages.run_dir import RunDir, provenance

SELECTION_COLUMNS = ("kept", "filter_reason")


def _rule_flags(rule: dict) -> str:
    return (f"--max-kl {rule['max_ablation_kl']} --true-max-kl {rule['true_max_ablation_kl']} "
            f"--prune-layers {rule['prune_layer_fraction']}" + (" --induce-refusal" if rule["induce_refusal_filter"]
                                                                 else ""))


def sweep_rule(run: RunDir) -> SelectionRule:
    """The rule the run's sweep chose its finalists for (recorded in `sweep.json`)."""
    recorded = run.read_json("sweep.json", keys=("config",))["config"]
    if not isinstance(recorded.get("rule"), dict):
        raise run.corrupted("sweep.json", "no selection rule recorded (made by an older workbench)")
    try:
        return SelectionRule(**recorded["rule"])
    except TypeError as exc:
        raise run.corrupted("sweep.json", f"bad rule: {exc}") from None


def check_rule(run: RunDir, sweep: pd.DataFrame, rule: SelectionRule) -> None:
    """Refuse to select with a rule the sweep was not screened for, unless it scored in full every candidate the
    rule can pick (an exact sweep, `workbench sweep --mode exact`, serves any rule that prunes at least its layers)."""
    screened_for = sweep_rule(run)
    if screened_for == rule:
        return
    n_layers = int(sweep.layer.max()) + 1 if len(sweep) else 0
    pruned_now = sweep.layer.map(lambda layer: rule.prune_reason(int(layer), n_layers) != "").astype(bool)
    unscored = (sweep.stage == "skipped") & ~sweep.sweep_note.isin(["zero vector (NaN)", "not in sweep grid"])
    exhaustive = not (sweep.stage == "screened").any() and not (unscored & ~pruned_now).any()
    if not exhaustive:
        raise WorkbenchError(
            f"{run.file('sweep.csv')} chose its finalists for the rule {asdict(screened_for)}, not "
            f"{asdict(rule)}: the winner under the new rule may not have been scored. Re-run "
            f"`workbench sweep --run {run.path} {_rule_flags(asdict(rule))}` (or `workbench run` with that [select])"
        )


def selected_direction_file(run: RunDir, lam: float) -> Path:
    """The direction file of the selection at `lam` in a run directory (a clear error when λ was not selected)."""
    from workbench.interventions.catalogue import check_selection

    selection = run.read_json("selection.json", keys=("selections",))
    check_selection(selection, run.path)
    for s in selection["selections"]:
        if abs(float(s["lam"]) - float(lam)) < 1e-9:
            return run.file(s["direction_file"])
    lams = ", ".join(str(s["lam"]) for s in selection["selections"])
    raise WorkbenchError(f"{run.path} has no selected direction at λ={lam} (selected: {lams or 'none'})")


def read_selection(run: RunDir) -> pd.DataFrame:
    """`selection.csv`: the sweep's rows with `kept` and `filter_reason` under the rule select applied."""
    from workbench.stages.sweep import COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS

    frame = run.read_csv("selection.csv", columns=(*COLUMNS, *SELECTION_COLUMNS),
                         text_columns=(*TEXT_COLUMNS, "filter_reason", "kept"), numeric_columns=NUMERIC_COLUMNS)
    frame["kept"] = frame["kept"] == "True"
    return frame


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_current(run: RunDir, rule: SelectionRule) -> bool:
    """Whether `selection.json` was made by `rule` from the `sweep.csv` now in the run (and its selection files read
    back: damaged ones are selected again)."""
    from workbench.interventions.catalogue import check_selection
    from workbench.interventions.directions import read_direction_file

    if not (run.file("selection.json").exists() and run.file("selection.csv").exists()
            and run.file("sweep.csv").exists()):
        return False
    try:
        record = run.read_json("selection.json", keys=("selections",))
        check_selection(record, run.path)
        read_selection(run)
        for s in record["selections"]:
            read_direction_file(run.file(s["direction_file"]), ("direction", "raw_false", "raw_true"))
    except WorkbenchError:
        return False
    return record.get("rule") == asdict(rule) and record.get("sweep_sha256") == sha256_of(run.file("sweep.csv"))


def select(run: RunDir, rule: SelectionRule | None = None) -> dict:
    """Apply `rule` (default: the one the sweep was screened for) and write the selection artifacts."""
    from workbench.stages.extract import load_candidates
    from workbench.stages.sweep import read_sweep

    sweep_record = run.read_json("sweep.json", keys=("config", "baseline_refusal_score"))
    rule = rule or sweep_rule(run)
    rule.validate()
    sweep = read_sweep(run)
    check_rule(run, sweep, rule)
    grids = load_candidates(run)
    frame = rule.apply(sweep, grids.n_layers)
    atomic_write(run.file("selection.csv"), lambda tmp: frame.to_csv(tmp, index=False))
    model = run.model_record()
    selections, missing = [], []
    for lam in sorted({float(x) for x in frame.loc[frame.vector == "false", "lam"]}, reverse=True):
        choice = rule.pick(frame, "false", lam)
        if choice is None:
            missing.append(lam)
            continue
        p, layer = grids.positions.index(int(choice["pos"])), int(choice["layer"])
        w, r = grids.false_refusal[p, layer], grids.true_refusal[p, layer]
        meta = {"model": model["name"], "fingerprint": model["fingerprint"], "vector": "false", "lam": str(lam),
                "pos": str(choice["pos"]), "layer": str(layer), "run": str(run.path)}
        path = save_direction(run.file(f"directions/lam_{lam}.safetensors"),
                              {"direction": partial_orthogonalize(w, r, lam), "raw_false": w, "raw_true": r}, meta)
        selections.append({"lam": lam, **{k: v for k, v in choice.items() if k not in ("vector", "lam")},
                           "direction_file": str(path.relative_to(run.path))})
    true_choice = rule.pick(frame, "true")
    if true_choice is not None:
        p, layer = grids.positions.index(int(true_choice["pos"])), int(true_choice["layer"])
        r = grids.true_refusal[p, layer]
        meta = {"model": model["name"], "fingerprint": model["fingerprint"], "vector": "true",
                "pos": str(true_choice["pos"]), "layer": str(layer), "run": str(run.path)}
        save_direction(run.file("directions/true.safetensors"), {"direction": r / r.norm(), "raw_true": r}, meta)
    else:
        run.file("directions/true.safetensors").unlink(missing_ok=True)
    if not selections:
        raise WorkbenchError(
            f"no false-refusal candidate passes the selection rule at any λ ({', '.join(map(str, missing))}); "
            f"see filter_reason in {run.file('selection.csv')} and loosen e.g. --max-kl (now {rule.max_ablation_kl})"
        )
    result = {"baseline": sweep_record["baseline_refusal_score"], "rule": asdict(rule), "selections": selections,
              "unselected_lams": missing, "true_refusal": true_choice, "model": model,
              "sweep_sha256": sha256_of(run.file("sweep.csv")), **provenance()}
    write_json(run.file("selection.json"), result)
    return result


def _run(lm: LoadedModel, run: RunDir, config) -> str:
    result = select(run, config.select)
    return "; ".join(
        f"λ={s['lam']}: pos {s['pos']}, layer {s['layer']}, ablation refusal score {s['ablation_refusal_score']:+.3f} "
        f"(baseline {result['baseline']['pseudo_harmful']:+.3f}), KL {s['ablation_kl']:.3f}"
        for s in result["selections"])


STAGE = Stage("select", inputs=("candidates.json", "candidates.safetensors", "sweep.csv", "sweep.json"),
              outputs=("selection.json", "selection.csv", "directions/"), run=_run,
              is_done=lambda lm, run, config: is_current(run, config.select))
