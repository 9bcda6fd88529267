"""Step 6: pick the surgical false-refusal direction per λ with the selection rule (`method.rule.SelectionRule`).

Reads `sweep.csv`/`sweep.json`; writes `selection.csv` (every sweep row with `kept` and `filter_reason` under the
rule), `selection.json` (baseline, the rule, one selection per λ, the Arditi true-refusal pick) and
`directions/lam_<λ>.safetensors` (and `directions/r.safetensors`); when the run has token means
(`token_means.safetensors`), each direction file also holds its affine-ablation offsets `offsets_harmless_mean`
(M_l·ĉ per layer), so evaluate, chat and the weight edit need nothing else. The sweep chose its finalists for a rule: a
different rule is refused unless the sweep scored every candidate in full (re-run the sweep with that rule).
"""

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.interventions.directions import OFFSETS_KEY, save_direction
from workbench.io import atomic_write, file_sha256, write_json
from workbench.method.prompt_filter import keep_for, kept
from workbench.method.refusal_math import affine_offsets, partial_orthogonalize, unit
from workbench.method.rule import SelectionRule, row_record
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs
from workbench.stages.sweep import recorded_sweep
from workbench.stages.token_means import TOKEN_MEANS, read_token_means

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

SELECTION_COLUMNS = ("kept", "filter_reason")


def _rule_flags(rule: dict) -> str:
    """The `workbench sweep` options that screen for `rule`: each field that differs from the paper's rule."""
    flags = []
    for name, value in rule.items():
        if value != getattr(SelectionRule(), name):
            flag = name.replace("_", "-")
            flags.append((f"--{flag}" if value else f"--no-{flag}") if isinstance(value, bool)
                         else f"--{flag} {'none' if value is None else value}")
    return " ".join(flags)


def sweep_rule(run: RunDir) -> SelectionRule:
    """The rule the run's sweep chose its finalists for (recorded in `sweep.json`)."""
    return recorded_sweep(run).rule


def check_rule(run: RunDir, sweep: pd.DataFrame, rule: SelectionRule) -> None:
    """Refuse to select with a rule the sweep was not screened for, unless it scored in full every candidate the
    rule can pick (an exact sweep, `workbench sweep --mode exact`, serves any rule that prunes at least its layers)."""
    screened_for = sweep_rule(run)
    if SelectionRule.screening_record(asdict(screened_for)) == SelectionRule.screening_record(asdict(rule)):
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

    selection = run.read_json("selection.json", keys=("selections", "r"))
    check_selection(selection, run.path)
    for s in selection["selections"]:
        if abs(float(s["lam"]) - float(lam)) < 1e-9:
            return run.file(s["direction_file"])
    lams = ", ".join(str(s["lam"]) for s in selection["selections"])
    raise WorkbenchError(f"{run.path} has no selected direction at λ={lam} (selected: {lams or 'none'})")


def read_selection(run: RunDir) -> pd.DataFrame:
    """`selection.csv`: the sweep's rows with `kept` and `filter_reason` under the rule select applied."""
    from workbench.stages.sweep_algorithms import COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS

    frame = run.read_csv("selection.csv", columns=(*COLUMNS, *SELECTION_COLUMNS),
                         text_columns=(*TEXT_COLUMNS, "filter_reason", "kept"), numeric_columns=NUMERIC_COLUMNS)
    frame["kept"] = frame["kept"] == "True"
    return frame


def is_current(run: RunDir, rule: SelectionRule) -> bool:
    """Whether `selection.json` was made by `rule` from the `sweep.csv` now in the run (and its selection files read
    back: damaged ones are selected again)."""
    from workbench.interventions.catalogue import check_selection
    from workbench.interventions.directions import read_direction_file

    if not (run.file("selection.json").exists() and run.file("selection.csv").exists()
            and run.file("sweep.csv").exists()):
        return False
    try:
        record = run.read_json("selection.json", keys=("selections", "r"))
        check_selection(record, run.path)
        read_selection(run)
        keys = ("direction", "raw_w", "raw_r") + ((OFFSETS_KEY,) if run.file(TOKEN_MEANS).exists() else ())
        for s in record["selections"]:
            read_direction_file(run.file(s["direction_file"]), keys)  # token means without offsets: select again
    except WorkbenchError:
        return False
    return record.get("rule") == asdict(rule) and record.get("sweep_sha256") == file_sha256(run.file("sweep.csv"))


def rerank_candidates(lm: LoadedModel, run: RunDir, frame: pd.DataFrame, rule: SelectionRule,
                      lam: float) -> tuple[dict | None, list[dict]]:
    """The rule's generation re-ranking at λ: the `rerank_top_k` eligible candidates with the lowest objective each
    ablated (as the sweep ablated: to zero or to the harmless mean) while the model answers `rerank_n` refused
    pseudo-harmful and `rerank_n` refused harmful validation prompts (greedy, `rerank_max_new_tokens`, judged by
    `rerank_judge`, the calibrated keyword judge unless the rule names another). Picks the highest pseudo-harmful
    compliance among candidates whose harmful compliance exceeds the unablated model's by at most
    `rerank_max_harmful_rise` (ties: lower objective); returns (the pick or None, one record per candidate and the
    baseline)."""
    from workbench.data import load_prompts
    from workbench.eval.generation import hooked_generate
    from workbench.eval.judges import make_judge
    from workbench.eval.scoring import refusal_scores
    from workbench.interventions.hooks import BASELINE, Ablation, applied
    from workbench.stages.extract import load_candidates
    from workbench.stages.token_means import ensure_token_means

    recorded = recorded_sweep(run).config
    grids = load_candidates(run)
    means = ensure_token_means(lm, run) if recorded.ablation == "harmless_mean" else None
    objective = rule.objective("w'")
    rows = frame[(frame.vector == "w'") & frame.kept & (frame.lam == lam)].sort_values(objective)
    rows = rows.head(rule.rerank_top_k)
    prompts = {}
    for key, name in (("pseudo_harmful", recorded.pseudo_harmful_val), ("harmful", recorded.harmful_val)):
        pool = [p.instruction for p in load_prompts(name, limit=recorded.n_val)]
        refused = kept(refusal_scores(lm, pool), keep_for(key))  # the validation filter, on the unablated model
        prompts[key] = [p for p, k in zip(pool, refused.tolist(), strict=True) if k][: rule.rerank_n]
        if not prompts[key]:
            raise WorkbenchError(f"re-ranking: the model refuses none of the {len(pool)} prompts of {name!r}, so a "
                                 "generation check cannot tell candidates apart; select without rerank_top_k")
    judge = make_judge(rule.rerank_judge)

    def compliance(intervention, what: str) -> dict[str, float]:
        out = {}
        with applied(lm, intervention):
            for key, items in prompts.items():
                texts = hooked_generate(lm, items, rule.rerank_max_new_tokens, desc=f"rerank {what} {key}")
                out[key] = 1.0 - sum(judge.judge(items, texts)) / len(texts) if texts else float("nan")
        return out

    base = compliance(BASELINE, "baseline")
    records = [{"candidate": "baseline", **{f"{k}_compliance": v for k, v in base.items()}}]
    for row in rows.to_dict("records"):
        p = grids.positions.index(int(row["pos"]))
        w, r = grids.w[p, int(row["layer"])], grids.r[p, int(row["layer"])]
        direction = partial_orthogonalize(w, r, lam)
        offsets = affine_offsets(means, direction) if means is not None else None  # as the sweep ablated
        found = compliance(Ablation(direction, "rerank", offsets=offsets), f"({row['pos']},{row['layer']})")
        records.append({"candidate": f"({int(row['pos'])}, {int(row['layer'])})", "pos": int(row["pos"]),
                        "layer": int(row["layer"]), objective: float(row[objective]),
                        **{f"{k}_compliance": v for k, v in found.items()},
                        "harmful_ok": found["harmful"] <= base["harmful"] + rule.rerank_max_harmful_rise + 1e-12})
    ok = [x for x in records[1:] if x["harmful_ok"]]
    if not ok:
        return None, records
    best = max(ok, key=lambda x: (x["pseudo_harmful_compliance"], -x[objective]))
    pick = rows[(rows.pos == best["pos"]) & (rows.layer == best["layer"])].iloc[0]
    return row_record(pick), records


def select(run: RunDir, rule: SelectionRule | None = None, lm: LoadedModel | None = None) -> dict:
    """Apply `rule` (default: the one the sweep was screened for) and write the selection artifacts. A rule that
    re-ranks by generation (`rerank_top_k`) needs the model `lm`."""
    from workbench.stages.extract import load_candidates
    from workbench.stages.sweep import read_sweep

    sweep_record = run.read_json("sweep.json", keys=("config", "baseline_refusal_score"))
    rule = rule or sweep_rule(run)
    rule.validate()
    if rule.rerank_top_k and lm is None:
        raise WorkbenchError("the rule re-ranks candidates by generation (rerank_top_k): select needs the model")
    sweep = read_sweep(run)
    check_rule(run, sweep, rule)
    grids = load_candidates(run)
    means = read_token_means(run, grids.n_layers, grids.d_model)

    def with_offsets(tensors: dict) -> dict:
        return tensors if means is None else {**tensors, OFFSETS_KEY: affine_offsets(means, tensors["direction"])}

    harmful_baseline = sweep_record["baseline_refusal_score"].get("harmful")
    frame = rule.apply(sweep, grids.n_layers, harmful_baseline)
    atomic_write(run.file("selection.csv"), lambda tmp: frame.to_csv(tmp, index=False))
    model = run.model_record()
    selections, missing, reranked = [], [], {}
    for lam in sorted({float(x) for x in frame.loc[frame.vector == "w'", "lam"]}, reverse=True):
        choice = rule.pick(frame, "w'", lam)
        if rule.rerank_top_k and choice is not None:
            choice, reranked[str(lam)] = rerank_candidates(lm, run, frame, rule, lam)
        if choice is None:
            missing.append(lam)
            continue
        p, layer = grids.positions.index(int(choice["pos"])), int(choice["layer"])
        w, r = grids.w[p, layer], grids.r[p, layer]
        meta = {"model": model["name"], "fingerprint": model["fingerprint"], "vector": "w'", "lam": str(lam),
                "pos": str(choice["pos"]), "layer": str(layer), "run": str(run.path)}
        path = save_direction(run.file(f"directions/lam_{lam}.safetensors"),
                              with_offsets({"direction": partial_orthogonalize(w, r, lam), "raw_w": w,
                                            "raw_r": r}), meta)
        selections.append({"lam": lam, **{k: v for k, v in choice.items() if k not in ("vector", "lam")},
                           "direction_file": str(path.relative_to(run.path))})
    r_choice = rule.pick(frame, "r")
    if r_choice is not None:
        p, layer = grids.positions.index(int(r_choice["pos"])), int(r_choice["layer"])
        r = grids.r[p, layer]
        meta = {"model": model["name"], "fingerprint": model["fingerprint"], "vector": "r",
                "pos": str(r_choice["pos"]), "layer": str(layer), "run": str(run.path)}
        save_direction(run.file("directions/r.safetensors"), with_offsets({"direction": unit(r),
                                                                              "raw_r": r}), meta)
    else:
        run.file("directions/r.safetensors").unlink(missing_ok=True)
    if not selections and reranked:
        found = "; ".join(f"{r['candidate']}: pseudo-harmful {r['pseudo_harmful_compliance']:.0%}, harmful "
                          f"{r['harmful_compliance']:.0%}" for records in reranked.values() for r in records)
        raise WorkbenchError(
            f"the generation check rejected every re-ranked candidate at λ {', '.join(reranked)}: each raised harmful "
            f"compliance by more than rerank_max_harmful_rise = {rule.rerank_max_harmful_rise} over the baseline "
            f"({found}); raise it, re-rank more candidates, or select without re-ranking")
    if not selections:
        raise WorkbenchError(
            f"no false-refusal candidate passes the selection rule at any λ ({', '.join(map(str, missing))}); "
            f"see filter_reason in {run.file('selection.csv')} and loosen e.g. --max-ablation-kl (now "
            f"{rule.max_ablation_kl})"
        )
    result = {"baseline": sweep_record["baseline_refusal_score"], "rule": asdict(rule), "selections": selections,
              "unselected_lams": missing, "r": r_choice, "model": model,
              **({"rerank": reranked} if rule.rerank_top_k else {}),
              "sweep_sha256": file_sha256(run.file("sweep.csv")), **provenance()}
    write_json(run.file("selection.json"), result)
    return result


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    result = select(run, config.select, lm)
    return "; ".join(
        f"λ={s['lam']}: pos {s['pos']}, layer {s['layer']}, "
        f"ablation refusal score {s['ablation_refusal_score_pseudo_harmful']:+.3f} "
        f"(baseline {result['baseline']['pseudo_harmful']:+.3f}), KL {s['ablation_kl']:.3f}"
        for s in result["selections"])


STAGE = Stage("select", inputs=STAGE_INPUTS["select"], outputs=stage_outputs("select"), execute=_run,
              is_done=lambda lm, run, config: is_current(run, config.select))
