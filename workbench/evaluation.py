"""`workbench evaluate`: greedy completions under each intervention on the paper's benchmarks, judged, with
bootstrap confidence intervals; resumable per (dataset, intervention).

Interventions come from a run directory's selection (`selection.json`, `directions/`):
- `baseline`: nothing;
- `ablate_false_lam<λ>`: ablate the selected w' at each selected λ;
- `ablate_false_raw`: ablate raw w at the reference cell (the selection with the largest λ);
- `ablate_true`: ablate r, the Arditi true-refusal selection if the rule found one, else r at the reference cell;
- `actadd_true_a<α>`: add α·r (raw) at r's layer, and `ablate_false_lam<λ>+actadd_true_a<α>` for every λ, α.
Generation runs on a plain transformers copy of the model with the intervention baked in (`weight_edit.edited`):
exact for ablations (weight orthogonalization), a block pre-hook for additions.

Artifacts: `completions/<dataset>/<intervention>.jsonl` (`instruction`, `category`, `response`, `refused`, and
`refused_<judge>` for extra judges) with a `.meta.json` sidecar, `evaluation.csv`, `evaluation_categories.csv`,
`interventions.json`, and `judge_agreement.csv` when a second judge ran.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from workbench.data import get_spec, load_dataset
from workbench.errors import WorkbenchError
from workbench.generation import plain_greedy_generate
from workbench.interventions import BASELINE, Ablation, Addition, Combined, Intervention
from workbench.io import atomic_write, write_json, write_jsonl
from workbench.judge import Judge, SubstringJudge, agreement_table
from workbench.models.loader import LoadedModel
from workbench.run_dir import RunDir
from workbench.stats import bootstrap_ci

DATASET_GROUPS = {
    "or_bench_hard_test": "over-refusal",
    "xstest_refused": "over-refusal",
    "xstest_safe": "over-refusal",
    "oktest_100": "over-refusal",
    "harmful_test": "harmful",
    "jailbreakbench": "harmful",
    "xstest_unsafe": "harmful",
}
DEFAULT_DATASETS = tuple(DATASET_GROUPS)


@dataclass(frozen=True)
class EvalConfig:
    """What `workbench evaluate` generates and how."""

    datasets: tuple[str, ...] = DEFAULT_DATASETS
    """Registered prompt sets (over-refusal sets: compliance is good; harmful sets: compliance is bad)."""
    interventions: tuple[str, ...] | None = None
    """Intervention names to run (None: all that the run directory defines)."""
    alphas: tuple[float, ...] = (0.5, 1.0)
    """Activation-addition coefficients α for `actadd_true_a<α>` and the combinations."""
    limit: int | None = None
    """First `limit` prompts of every dataset (None: all)."""
    max_new_tokens: int = 64
    """Greedy tokens per completion (the paper uses 512; 64 keeps CPU runs short and the judge's verdicts stable)."""
    batch_size: int = 32
    """Prompts per generation batch."""
    n_bootstrap: int = 1000
    """Bootstrap resamples for the 95% interval of each compliance rate."""
    seed: int = 0
    """Seeds the bootstrap."""


@dataclass(frozen=True, eq=False)
class NamedIntervention:
    name: str
    intervention: Intervention
    description: dict = field(default_factory=dict)


def lam_name(lam: float) -> str:
    return f"ablate_false_lam{float(lam)}"


def alpha_name(alpha: float) -> str:
    return f"actadd_true_a{float(alpha)}"


def parse_name(name: str) -> tuple[float | None, float | None]:
    """(λ of an ablated w′, α of an added r) named by an intervention (None where absent); inverse of the above."""
    lam = alpha = None
    for part in name.split("+"):
        if part.startswith("ablate_false_lam"):
            lam = float(part.removeprefix("ablate_false_lam"))
        elif part.startswith("actadd_true_a"):
            alpha = float(part.removeprefix("actadd_true_a"))
    return lam, alpha


def signature(intervention: Intervention) -> str:
    """A content hash of an intervention (directions, layers, coefficients): completions are reused only if equal."""
    digest = hashlib.sha256()
    for part in intervention.parts:
        if isinstance(part, Ablation):
            digest.update(b"ablate")
            digest.update(part.direction.detach().float().cpu().numpy().tobytes())
        else:
            digest.update(f"add:{part.layer}:{part.coeff!r}".encode())
            digest.update(part.vector.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_interventions(
    run: RunDir, fingerprint: str, d_model: int, alphas: tuple[float, ...]
) -> list[NamedIntervention]:
    """Every intervention a run directory defines (see the module docstring)."""
    from safetensors import safe_open

    from workbench.selection import load_direction

    selection = run.read_json("selection.json")
    if not selection["selections"]:
        raise WorkbenchError(f"{run.file('selection.json')} has no selections: nothing to evaluate")
    out = [NamedIntervention("baseline", BASELINE, {"kind": "baseline"})]
    ablations = {}
    for s in selection["selections"]:
        direction, meta = load_direction(run.file(s["direction_file"]), fingerprint, d_model)
        name = lam_name(s["lam"])
        ablations[float(s["lam"])] = Ablation(direction, name)
        out.append(NamedIntervention(name, ablations[float(s["lam"])],
                                     {"kind": "ablate_false", "lam": float(s["lam"]), "pos": int(s["pos"]),
                                      "layer": int(s["layer"]), "file": s["direction_file"]}))
    reference = max(selection["selections"], key=lambda s: float(s["lam"]))
    with safe_open(str(run.file(reference["direction_file"])), "pt") as f:
        raw_false, raw_true = f.get_tensor("raw_false"), f.get_tensor("raw_true")
    cell = {"pos": int(reference["pos"]), "layer": int(reference["layer"])}
    out.append(NamedIntervention("ablate_false_raw", Ablation(raw_false, "ablate_false_raw"),
                                 {"kind": "ablate_false_raw", **cell, "file": reference["direction_file"]}))
    true_file = run.file("directions/true.safetensors")
    if true_file.exists():
        _, meta = load_direction(true_file, fingerprint, d_model)
        with safe_open(str(true_file), "pt") as f:
            r = f.get_tensor("raw_true")
        r_cell, r_source = {"pos": int(meta["pos"]), "layer": int(meta["layer"])}, "Arditi selection (true.safetensors)"
    else:
        r, r_cell, r_source = raw_true, cell, "r at the reference cell (the Arditi rule selected no true direction)"
    out.append(NamedIntervention("ablate_true", Ablation(r, "ablate_true"),
                                 {"kind": "ablate_true", **r_cell, "source": r_source}))
    for alpha in alphas:
        add = Addition(r, r_cell["layer"], float(alpha), alpha_name(alpha))
        out.append(NamedIntervention(alpha_name(alpha), add,
                                     {"kind": "actadd_true", "alpha": float(alpha), **r_cell, "source": r_source}))
        for lam, ablation in ablations.items():
            out.append(NamedIntervention(f"{lam_name(lam)}+{alpha_name(alpha)}", Combined((ablation, add)),
                                         {"kind": "ablate_false+actadd_true", "lam": lam, "alpha": float(alpha)}))
    return out


def choose(items: list[NamedIntervention], names: tuple[str, ...] | None) -> list[NamedIntervention]:
    if names is None:
        return items
    known = {i.name: i for i in items}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise WorkbenchError(f"unknown intervention(s) {', '.join(unknown)}; this run defines: {', '.join(known)}")
    return [known[n] for n in names]


def _paths(run: RunDir, dataset: str, name: str) -> tuple[Path, Path]:
    base = run.file(f"completions/{dataset}/{name}")
    return base.with_name(base.name + ".jsonl"), base.with_name(base.name + ".meta.json")


def _settings(item: NamedIntervention, config: EvalConfig, n: int, judges: list[Judge]) -> dict:
    return {"intervention": item.name, "signature": signature(item.intervention), "n": n, "limit": config.limit,
            "max_new_tokens": config.max_new_tokens, "judges": [j.name for j in judges]}


def _done(run: RunDir, dataset: str, settings: dict) -> bool:
    data, meta = _paths(run, dataset, settings["intervention"])
    return data.exists() and meta.exists() and json.loads(meta.read_text()) == settings


def evaluate(lm: LoadedModel, run: RunDir, config: EvalConfig, judges: list[Judge] | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Generate, judge and summarize; finished (dataset, intervention) pairs with equal settings are skipped."""
    from workbench.export import plain_hf_model
    from workbench.weight_edit import edited

    run.check_model(lm.info.fingerprint, lm.info.name)
    judges = [SubstringJudge(), *(judges or [])]
    items = choose(build_interventions(run, lm.info.fingerprint, lm.info.d_model, config.alphas),
                   config.interventions)
    write_json(run.file("interventions.json"),
               {i.name: {**i.description, "signature": signature(i.intervention)} for i in items})
    datasets = {}
    for name in config.datasets:
        if get_spec(name).kind != "prompts":
            raise WorkbenchError(f"dataset {name!r} is not a prompt set")
        datasets[name] = load_dataset(name, limit=config.limit)
    todo = [(item, name) for item in items for name, prompts in datasets.items()
            if not _done(run, name, _settings(item, config, len(prompts), judges))]
    print(f"[evaluate] {len(items) * len(datasets) - len(todo)} of {len(items) * len(datasets)} "
          "(dataset, intervention) pairs already done")
    if todo:
        plain = plain_hf_model(lm)
        bar = tqdm(total=len(todo), desc="evaluate", unit="set", disable=not progress)
        for item in items:
            pending = [name for it, name in todo if it is item]
            if not pending:
                continue
            with edited(plain, item.intervention):
                for name in pending:
                    prompts = datasets[name]
                    instructions = [p.instruction for p in prompts]
                    responses = plain_greedy_generate(plain, lm.chat, instructions, config.max_new_tokens,
                                                      config.batch_size, progress=progress,
                                                      desc=f"{name} · {item.name}")
                    labels = {j.name: j.judge(instructions, responses) for j in judges}
                    rows = []
                    for k, (p, response) in enumerate(zip(prompts, responses, strict=True)):
                        row = {"instruction": p.instruction, "category": p.category, "response": response,
                               "refused": labels["substring"][k]}
                        row.update({f"refused_{j}": v[k] for j, v in labels.items() if j != "substring"})
                        rows.append(row)
                    data, meta = _paths(run, name, item.name)
                    write_jsonl(data, rows)
                    write_json(meta, _settings(item, config, len(prompts), judges))
                    bar.update(1)
        bar.close()
    return summarize(run, config)


def read_completions(run: RunDir) -> pd.DataFrame:
    """Every finished completion file of a run: one row per completion with `dataset` and `intervention`."""
    frames = []
    for meta_path in sorted(run.path.glob("completions/*/*.meta.json")):
        data = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".jsonl")
        if not data.exists():
            continue
        frame = pd.read_json(data, lines=True)
        if frame.empty:
            continue
        frame["dataset"] = meta_path.parent.name
        frame["intervention"] = json.loads(meta_path.read_text())["intervention"]
        frames.append(frame)
    if not frames:
        raise WorkbenchError(f"{run.path} has no completions: run `workbench evaluate --run {run.path}` first")
    return pd.concat(frames, ignore_index=True)


def summarize(run: RunDir, config: EvalConfig = EvalConfig()) -> pd.DataFrame:
    """`evaluation.csv` (+ per-category rates and judge agreement) from the completion files."""
    frame = read_completions(run)
    judge_columns = [c for c in frame.columns if c.startswith("refused_")]
    rows, categories = [], []
    for (dataset, name), group in frame.groupby(["dataset", "intervention"], sort=True):
        complied = (~group.refused.astype(bool)).to_numpy()
        low, high = bootstrap_ci(complied, config.n_bootstrap, seed=config.seed)
        row = {"dataset": dataset, "intervention": name, "n": len(group), "compliance_rate": float(complied.mean()),
               "ci_low": low, "ci_high": high, "group": DATASET_GROUPS.get(dataset, "other")}
        for column in judge_columns:
            row[f"compliance_rate_{column.removeprefix('refused_')}"] = float((~group[column].astype(bool)).mean())
        rows.append(row)
        for category, sub in group.groupby(group.category.fillna("(none)")):
            categories.append({"dataset": dataset, "intervention": name, "category": category, "n": len(sub),
                               "compliance_rate": float((~sub.refused.astype(bool)).mean())})
    result = pd.DataFrame(rows)
    atomic_write(run.file("evaluation.csv"), lambda tmp: result.to_csv(tmp, index=False))
    cats = pd.DataFrame(categories)
    atomic_write(run.file("evaluation_categories.csv"), lambda tmp: cats.to_csv(tmp, index=False))
    if judge_columns:
        labels = {"substring": frame.refused.astype(bool).tolist()}
        labels.update({c.removeprefix("refused_"): frame[c].astype(bool).tolist() for c in judge_columns})
        table = agreement_table(labels)
        atomic_write(run.file("judge_agreement.csv"), lambda tmp: table.to_csv(tmp, index=False))
    return result


def table1(evaluation: pd.DataFrame, lam: float = 1.0) -> pd.DataFrame:
    """The paper's Table 1 contrast: compliance per dataset under baseline, w' (λ), raw w and r ablation."""
    names = ["baseline", lam_name(lam), "ablate_false_raw", "ablate_true"]
    present = [n for n in names if n in set(evaluation.intervention)]
    wide = evaluation.pivot(index="dataset", columns="intervention", values="compliance_rate")[present]
    order = [d for d in DATASET_GROUPS if d in wide.index] + [d for d in wide.index if d not in DATASET_GROUPS]
    return wide.loc[order]

