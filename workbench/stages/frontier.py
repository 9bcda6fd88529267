"""`workbench frontier`: the trade-off between over-refusal and harmful compliance, for w′ against every baseline
direction at the run's selected cell.

At the reference selection's cell (the largest λ), on validation prompts (greedy generations, the calibrated judge
beside the paper's substring judge, Wilson intervals), for these families (`frontier.csv`'s `family`):
- `w'` at each λ of `lams` (w′ = w − λ·proj_r(w); λ = 0 is raw w);
- `r (partial)`: r ablated with strength β (x − β(x·r̂)r̂ on every residual write; β = 1 is r's ablation), each β of
  `betas`: the "weaker r" curve;
- `random`: a random unit direction (seeded, isotropic) ablated in full, per seed of `seeds`: what any ablation costs;
- `gated w'`: the largest λ's w′ gated by the run's gate (`workbench gate`), where the run has one, at each let-through
  bound of `gate_bounds` (the gate's probe and cell; the threshold set on its contrast prompts for each bound): the
  gate's dial;
- `baseline`.
The paper's claim is that w′ lies *above* the weaker-r curve (more over-refusal compliance at the same harmful
compliance); "There is more to refusal than a single direction" (arXiv 2602.02132) finds any refusal-related direction
lies *on* it. `frontier.csv` answers it per w′ point: `margin_over_r` is its over-refusal compliance minus the r curve's
(piecewise linear through baseline and the β points, by harmful compliance) at its harmful compliance.
TruthfulQA MC1/MC2 per intervention (`n_truthfulqa` questions, 0 to skip) shows a direction that buys compliance with
confabulation.

Artifacts: `frontier/completions/<dataset>/<intervention>.jsonl` (resumable per pair, as `evaluate`'s),
`frontier/truthfulqa.json` (per-question scores, resumable per intervention), `frontier.csv`, `frontier.json`.
The figure (`figures/frontier.html`) is drawn by the figures stage.
"""

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from workbench.data import get_spec, load_dataset, load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.judge import PAPER_JUDGE, JudgeOptions
from workbench.eval.stats import wilson_interval
from workbench.interventions.catalogue import NamedIntervention, signature
from workbench.interventions.directions import read_direction_file
from workbench.interventions.gate import GATE_FILE, Gated, decide, load_gate
from workbench.interventions.hooks import BASELINE, Ablation
from workbench.io import atomic_write, write_json
from workbench.method.refusal_math import partial_orthogonalize
from workbench.method.vectors import GATED_W_PRIME, W_PRIME
from workbench.models.fingerprint import check_made_for
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, jsonable, never_done
from workbench.stages.evaluate import EvalConfig, configured_judges, generate_pairs, judge_columns, read_completions
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs
from workbench.stages.sweep import recorded_sweep

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

FOLDER = "frontier/completions"
FRONTIER_COLUMNS = ("family", "intervention", "param", "judge", "n_over_refusal", "over_refusal", "over_refusal_low",
                    "over_refusal_high", "n_harmful", "harmful", "harmful_low", "harmful_high", "margin_over_r",
                    "n_truthfulqa", "truthfulqa_mc1", "truthfulqa_mc2", "gate_open_over_refusal", "gate_open_harmful")
"""`frontier.csv`: one row per intervention × judge: compliance rates (k/n) on the over-refusal and harmful validation
prompts with Wilson intervals, the margin over the r curve (w′ rows), TruthfulQA MC1/MC2, and for gated rows the share
of each set's prompts the gate opened for."""
FAMILIES = ("baseline", W_PRIME, "r (partial)", "random", GATED_W_PRIME)
"""`frontier.csv`'s `family` values (see the module docstring)."""


@dataclass(frozen=True)
class FrontierConfig:
    """What `workbench frontier` measures."""

    pseudo_harmful_val: str | None = None
    """Over-refusal (pseudo-harmful) validation prompts (None: the sweep's `pseudo_harmful_val`)."""
    harmful_val: str | None = None
    """Harmful validation prompts (None: the sweep's `harmful_val`)."""
    n_val: int | None = 32
    """Prompts per set (None: all)."""
    lams: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
    """λ values of w′ (0: raw w)."""
    betas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    """Strengths β of r's partial ablation."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the random directions."""
    gated: bool = True
    """Include the gated w′ when the run has a gate."""
    gate_bounds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
    """Let-through bounds of the gated points (each threshold set on the gate's harmful contrast prompts)."""
    max_new_tokens: int = 48
    """Greedy tokens per completion."""
    batch_size: int = 32
    """Prompts per generation batch."""
    judge: str = "keywords"
    """The calibrated judge (beside the paper's substring judge); `frontier.csv` has rows for both."""
    judge_options: JudgeOptions = field(default_factory=JudgeOptions)
    """How to build it (the model judge's model, dtype and read-out)."""
    n_truthfulqa: int = 100
    """TruthfulQA questions per intervention (0: skip)."""
    ci_level: float = 0.95
    """Confidence level of the Wilson intervals."""
    seed: int = 0
    """Seed of the TruthfulQA sample."""

    def validate(self) -> None:
        for lam in self.lams:
            if not 0.0 <= lam <= 1.0:
                raise WorkbenchError(f"frontier lams must be in [0, 1], got {lam}")
        for beta in self.betas:
            if not 0.0 < beta <= 1.0:
                raise WorkbenchError(f"frontier betas must be in (0, 1], got {beta}")
        for bound in self.gate_bounds:
            if not 0.0 <= bound <= 1.0:
                raise WorkbenchError(f"frontier gate_bounds must be in [0, 1], got {bound}")
        if self.n_val is not None and self.n_val < 1:
            raise WorkbenchError(f"frontier n_val must be at least 1 (or None for all), got {self.n_val}")
        if self.n_truthfulqa < 0:
            raise WorkbenchError(f"frontier n_truthfulqa must be 0 (skip) or more, got {self.n_truthfulqa}")
        self.eval_config().validate()

    def eval_config(self) -> EvalConfig:
        """The generation and judging settings, as `evaluate` takes them."""
        return EvalConfig(datasets=tuple(d for d in (self.pseudo_harmful_val, self.harmful_val) if d is not None)
                          or ("bundled_harmful_val",), limit=self.n_val, max_new_tokens=self.max_new_tokens,
                          batch_size=self.batch_size, judge=self.judge, judge_options=self.judge_options,
                          ci_level=self.ci_level)


def _name(family: str, param: float | int | None) -> str:
    return {"baseline": "baseline", W_PRIME: f"wprime_lam{param}", "r (partial)": f"r_beta{param}",
            "random": f"random_seed{param}", GATED_W_PRIME: f"gated_wprime_bound{param}"}[family]


def frontier_interventions(run: RunDir, lm: LoadedModel, config: FrontierConfig) -> list[tuple[str, float | None,
                                                                                               NamedIntervention]]:
    """(family, param, named intervention) of every point of the frontier, at the reference selection's cell."""
    selection = run.read_json("selection.json", keys=("selections", "r"))["selections"]
    if not selection:
        raise WorkbenchError(f"{run.file('selection.json')} has no selections: the frontier needs a selected w′ "
                             f"(run `workbench select --run {run.path}`)")
    reference = max(selection, key=lambda s: float(s["lam"]))
    tensors, meta = read_direction_file(run.file(reference["direction_file"]), ("raw_w", "raw_r"))
    check_made_for(reference["direction_file"], meta, lm.info.fingerprint, lm.info.name,
                   "the frontier needs the run's own model")
    w, r = tensors["raw_w"].float(), tensors["raw_r"].float()
    out: list[tuple[str, float | None, NamedIntervention]] = [("baseline", None, NamedIntervention("baseline",
                                                                                                     BASELINE))]
    by_lam = {}
    for lam in config.lams:
        name = _name(W_PRIME, float(lam))
        item = NamedIntervention(name, Ablation(partial_orthogonalize(w, r, float(lam)), name))
        by_lam[float(lam)] = item
        out.append((W_PRIME, float(lam), item))
    for beta in config.betas:
        name = _name("r (partial)", float(beta))
        out.append(("r (partial)", float(beta), NamedIntervention(name, Ablation(r, name, strength=float(beta)))))
    for seed in config.seeds:
        name = _name("random", int(seed))
        vector = torch.randn(lm.info.d_model, generator=torch.Generator().manual_seed(int(seed)))
        out.append(("random", int(seed), NamedIntervention(name, Ablation(vector, name))))
    if config.gated and run.file(GATE_FILE).exists():
        gate = load_gate(run.file(GATE_FILE))
        gate.check_model(lm.info.fingerprint, lm.info.d_model, lm.info.n_layers, f"gate {run.file(GATE_FILE)}")
        lam = float(gate.meta.get("gates_lam", reference["lam"]))
        gated_selection = next((s for s in selection if float(s["lam"]) == lam), None)
        if gated_selection is None:
            raise WorkbenchError(f"the gate gates w′ at λ = {lam}, which the selection does not hold: re-run "
                                 f"`workbench gate --run {run.path}`")
        same_cell = (gated_selection["pos"], gated_selection["layer"]) == (reference["pos"], reference["layer"])
        if same_cell and lam in by_lam:
            inner = by_lam[lam].intervention  # the frontier's own w′ point: its completions route the gated ones
        else:
            from workbench.interventions.directions import load_direction

            direction, _ = load_direction(run.file(gated_selection["direction_file"]), lm.info.fingerprint,
                                          lm.info.d_model)
            inner = Ablation(direction, f"wprime_selected_lam{lam}")
        gates = {gate.bound: gate}
        if run.file("gate.json").exists():
            from workbench.stages.gate import gate_at_bound

            gates = {float(b): gate_at_bound(run, float(b)) for b in config.gate_bounds} or gates
        for bound, at_bound in sorted(gates.items()):
            name = _name(GATED_W_PRIME, bound)
            out.append((GATED_W_PRIME, bound, NamedIntervention(name, Gated(inner, at_bound, name))))
    return out


def validation_sets(run: RunDir, config: FrontierConfig) -> tuple[str, str]:
    """(over-refusal set, harmful set): the config's, else the sweep's validation sets."""
    over, harmful = config.pseudo_harmful_val, config.harmful_val
    if over is None or harmful is None:
        if not run.file("sweep.json").exists():
            raise WorkbenchError(f"{run.path} has no sweep.json to take the validation sets from: give "
                                 "--pseudo-harmful-val SET and --harmful-val SET")
        recorded = recorded_sweep(run).config
        over = over or recorded.pseudo_harmful_val
        harmful = harmful or recorded.harmful_val
    for name in (over, harmful):
        if get_spec(name).kind != "prompts":
            raise WorkbenchError(f"frontier: dataset {name!r} is not a prompt set (see `workbench datasets`)")
    return str(over), str(harmful)


def _truthfulqa(lm: LoadedModel, run: RunDir, points, config: FrontierConfig, progress: bool) -> dict[str, dict]:
    """Per-question TruthfulQA (mc1, mc2) of each point, resumable in `frontier/truthfulqa.json`; a gated point is
    routed per question (its gate decides on the question asked as a chat instruction)."""
    from workbench.eval.capability import TASK_DATASETS, _sample, plain_forward, truthfulqa_per_question
    from workbench.interventions.export import plain_hf_model
    from workbench.interventions.weight_edit import edited

    if config.n_truthfulqa == 0:
        return {}
    questions = _sample(load_dataset(TASK_DATASETS["truthfulqa"][0]), config.n_truthfulqa, config.seed)
    path = "frontier/truthfulqa.json"
    cache = run.read_json(path) if run.file(path).exists() else {}
    plain = None
    out = {}
    for family, _, item in points:
        key = {"signature": signature(item.intervention), "n": len(questions), "seed": config.seed}
        if family == GATED_W_PRIME:
            continue
        old = cache.get(item.name)
        if isinstance(old, dict) and {k: old.get(k) for k in key} == key:
            out[item.name] = old
            continue
        plain = plain or plain_hf_model(lm)
        with edited(plain, item.intervention):
            scores = truthfulqa_per_question(plain_forward(plain), lm.tokenizer, questions, 16, progress)
        out[item.name] = cache[item.name] = {**key, "scores": [list(s) for s in scores]}
        write_json(run.file(path), cache)
    for family, _, item in points:
        if family != GATED_W_PRIME:
            continue
        inner = next((i.name for f, _, i in points if i.intervention is item.intervention.inner), None)
        if inner is None or "baseline" not in out:
            continue
        open_rows = decide(lm, item.intervention.gate, [q.question for q in questions], config.batch_size)
        scores = [out[inner]["scores"][k] if bool(o) else out["baseline"]["scores"][k]
                  for k, o in enumerate(open_rows.tolist())]
        out[item.name] = {"n": len(questions), "scores": scores, "routed_from": ["baseline", inner],
                          "opened": int(open_rows.sum())}
    return out


def r_curve_margin(points: pd.DataFrame) -> pd.Series:
    """Each row's over-refusal compliance minus the r curve's at its harmful compliance (the curve: baseline and the
    r (partial) rows sorted by harmful compliance, linearly interpolated; NaN outside its range or for non-w′ rows)."""
    curve = points[points.family.isin(["baseline", "r (partial)"])].sort_values("harmful")
    xs, ys = curve.harmful.to_numpy(float), curve.over_refusal.to_numpy(float)
    out = []
    for _, row in points.iterrows():
        if row.family not in (W_PRIME, GATED_W_PRIME) or len(xs) < 2 or not xs[0] <= row.harmful <= xs[-1]:
            out.append(float("nan"))
            continue
        out.append(float(row.over_refusal - np.interp(row.harmful, xs, ys)))
    return pd.Series(out, index=points.index)


def measure_frontier(lm: LoadedModel, run: RunDir, config: FrontierConfig, progress: bool = True) -> pd.DataFrame:
    """Generate, judge and tabulate every point of the frontier (see the module docstring); writes `frontier.csv`.

        table = wb.measure_frontier(lm, wb.RunDir("runs/default"), wb.FrontierConfig(n_val=32))
    """
    import gc
    import time

    config.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    started = time.monotonic()
    over, harmful = validation_sets(run, config)
    points = frontier_interventions(run, lm, config)
    datasets = {over: load_prompts(over, limit=config.n_val), harmful: load_prompts(harmful, limit=config.n_val)}
    for name, prompts in datasets.items():
        if not prompts:
            raise WorkbenchError(f"frontier: set {name!r} has no prompts")
    eval_config = config.eval_config()
    judges = configured_judges(eval_config)
    items = [item for _, _, item in points]
    from workbench.eval.backends import InProcessBackend

    generate_pairs(lm, run, items, datasets, eval_config, judges, InProcessBackend(config.batch_size), progress,
                   FOLDER)
    del judges  # a model judge's weights go before TruthfulQA makes its plain copy of the model
    gc.collect()
    tqa = _truthfulqa(lm, run, points, config, progress)
    frame = read_completions(run, FOLDER)
    rows = []
    for judge, column in judge_columns(frame).items():
        for family, param, item in points:
            row = {"family": family, "intervention": item.name, "param": param, "judge": judge}
            for key, dataset in (("over_refusal", over), ("harmful", harmful)):
                part = frame[(frame.dataset == dataset) & (frame.intervention == item.name)]
                if part.empty or part[column].isna().any():
                    break
                k, n = int((~part[column].astype(bool)).sum()), len(part)
                low, high = wilson_interval(k, n, config.ci_level)
                row.update({f"n_{key}": n, key: k / n, f"{key}_low": low, f"{key}_high": high})
                if family == GATED_W_PRIME:
                    meta = run.read_json(f"{FOLDER}/{dataset}/{item.name}.meta.json")
                    opened = meta.get("gate_opened")
                    row[f"gate_open_{key}"] = opened / n if isinstance(opened, int) else math.nan
            else:
                scores = tqa.get(item.name, {}).get("scores")
                row.update({"n_truthfulqa": len(scores) if scores else 0,
                            "truthfulqa_mc1": float(np.mean([s[0] for s in scores])) if scores else math.nan,
                            "truthfulqa_mc2": float(np.mean([s[1] for s in scores])) if scores else math.nan})
                rows.append(row)
    table = pd.DataFrame(rows, columns=list(FRONTIER_COLUMNS))
    parts = [g.assign(margin_over_r=r_curve_margin(g)) for _, g in table.groupby("judge", sort=False)]
    table = pd.concat(parts) if parts else table
    atomic_write(run.file("frontier.csv"), lambda tmp: table.to_csv(tmp, index=False))
    opened = {item.name: tqa[item.name]["opened"] for f, _, item in points if f == GATED_W_PRIME and item.name in tqa}
    write_json(run.file("frontier.json"), jsonable({
        "config": asdict(config), "over_refusal": over, "harmful": harmful, "model": lm.info.name,
        "fingerprint": lm.info.fingerprint, "wall_s": round(time.monotonic() - started, 1),
        "truthfulqa_gate_opened": opened, **provenance()}))
    return table


def read_frontier(run: RunDir) -> pd.DataFrame:
    """`frontier.csv`, checked.

        wb.plot.frontier_figure(wb.read_frontier(wb.RunDir("runs/default"))).show()
    """
    table = run.read_csv("frontier.csv", columns=FRONTIER_COLUMNS,
                         numeric_columns=("over_refusal", "over_refusal_low", "over_refusal_high", "harmful",
                                          "harmful_low", "harmful_high"))
    unknown = sorted(set(table.family) - set(FAMILIES))
    if unknown:
        raise run.corrupted("frontier.csv", f"family {unknown[0]!r} is none of {', '.join(FAMILIES)}")
    return table


def main_frontier_judge(table: pd.DataFrame) -> str:
    """The calibrated judge of a frontier table (any judge but the paper's), else the paper's."""
    others = [j for j in dict.fromkeys(table.judge) if j != PAPER_JUDGE]
    return others[0] if others else PAPER_JUDGE


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    table = measure_frontier(lm, run, config.frontier)
    return f"{table.intervention.nunique()} interventions -> {run.file('frontier.csv')}"


STAGE = Stage("frontier", inputs=STAGE_INPUTS["frontier"], outputs=stage_outputs("frontier"), execute=_run,
              is_done=never_done, resumes=True)

