"""`workbench evaluate`: greedy completions under each intervention on the paper's benchmarks, judged, with
Wilson 95% intervals; resumable per (dataset, intervention).

Interventions are the run's named catalogue (`workbench.interventions.catalogue`).
Generation runs on a backend (`workbench.eval.backends`): by default in-process, on a plain transformers copy of the
model with the intervention baked in (`weight_edit.edited`: exact for ablations (weight orthogonalization), a block
pre-hook for additions); or on an OpenAI-compatible server (vLLM) that serves each intervention under its name.
Both write the same files; a pair's `.meta.json` records which backend made it (`backend`), outside its settings.

Artifacts: `completions/<dataset>/<intervention>.jsonl` (`instruction`, `category`, `response`, `refused`, and
`refused_<judge>` for extra judges) with a `.meta.json` sidecar, `evaluation.csv`, `evaluation_categories.csv`,
`interventions.json`, and `judge_agreement.csv` when a second judge ran.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from workbench.data import DATASET_GROUPS, dataset_group, get_spec, load_dataset
from workbench.errors import WorkbenchError
from workbench.eval.backends import GenerationBackend, GenerationJob, InProcessBackend
from workbench.eval.judge import Judge, SubstringJudge, agreement_table
from workbench.eval.stats import wilson_interval
from workbench.interventions.catalogue import NamedIntervention, build_interventions, choose, signature
from workbench.interventions.hooks import ABLATION_TARGETS
from workbench.io import atomic_write, write_json, write_jsonl
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, never_done
from workbench.stages.run_dir import RunDir

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
    ablation: tuple[str, ...] = ("zero",)
    """What the catalogue's ablations set the projection to: "zero", and/or "harmless_mean" (their affine variants,
    named `..._affine`; the run's token means are computed when missing)."""
    limit: int | None = None
    """First `limit` prompts of every dataset (None: all)."""
    max_new_tokens: int = 64
    """Greedy tokens per completion (the paper uses 512; 64 keeps CPU runs short and the judge's verdicts stable)."""
    batch_size: int = 32
    """Prompts per generation batch."""
    ci_level: float = 0.95
    """Confidence level of each compliance rate's Wilson interval."""

    def validate(self) -> None:
        if not self.datasets:
            raise WorkbenchError("evaluate: give at least one dataset")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise WorkbenchError(f"evaluate {name} must be at least 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise WorkbenchError(f"evaluate limit must be at least 1 (or None for all), got {self.limit}")
        if not 0 < self.ci_level < 1:
            raise WorkbenchError(f"evaluate ci_level must be in (0, 1), got {self.ci_level}")
        if not self.ablation or any(a not in ABLATION_TARGETS for a in self.ablation):
            raise WorkbenchError(f"evaluate ablation must be one or more of {', '.join(ABLATION_TARGETS)}, got "
                                 f"{', '.join(self.ablation) or 'none'}")
        for alpha in self.alphas:
            if not math.isfinite(alpha):
                raise WorkbenchError(f"evaluate alphas must be finite numbers, got {alpha}")
        for name in self.datasets:
            if get_spec(name).kind != "prompts":
                raise WorkbenchError(f"dataset {name!r} is not a prompt set (it holds {get_spec(name).kind}): "
                                     "evaluate generates on prompt sets (see `workbench datasets`)")


def _paths(run: RunDir, dataset: str, name: str) -> tuple[Path, Path]:
    base = run.file(f"completions/{dataset}/{name}")
    return base.with_name(base.name + ".jsonl"), base.with_name(base.name + ".meta.json")


def _settings(item: NamedIntervention, config: EvalConfig, n: int, judges: list[Judge]) -> dict:
    return {"intervention": item.name, "signature": signature(item.intervention), "n": n, "limit": config.limit,
            "max_new_tokens": config.max_new_tokens, "judges": [j.name for j in judges]}


def _done(run: RunDir, dataset: str, settings: dict) -> bool:
    data, meta = _paths(run, dataset, settings["intervention"])
    if not (data.exists() and meta.exists()):
        return False
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or {k: v for k, v in recorded.items() if k != "backend"} != settings:
            return False
        return len(read_completion_rows(run, str(data.relative_to(run.path)))) == settings["n"]
    except (json.JSONDecodeError, UnicodeDecodeError, WorkbenchError):
        return False  # a damaged sidecar or completions file: generate this pair again


def evaluate(lm: LoadedModel, run: RunDir, config: EvalConfig, judges: list[Judge] | None = None,
             progress: bool = True, backend: GenerationBackend | None = None) -> pd.DataFrame:
    """Generate (on `backend`, default in-process), judge and summarize; finished (dataset, intervention) pairs with
    equal settings are skipped, and each pair is written as soon as it is generated (an interrupted call keeps
    them)."""
    config.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    backend = backend or InProcessBackend(config.batch_size)
    judges = [SubstringJudge(), *(judges or [])]
    selection = run.read_json("selection.json", keys=("selections",))
    token_means = None
    if "harmless_mean" in config.ablation:
        from workbench.stages.token_means import ensure_token_means

        token_means = ensure_token_means(lm, run)
    items = choose(build_interventions(selection, run.path, lm.info.fingerprint, lm.info.d_model, config.alphas,
                                       config.ablation, token_means), config.interventions)
    write_json(run.file("interventions.json"),
               {i.name: {**i.description, "signature": signature(i.intervention)} for i in items})
    datasets = {}
    for name in config.datasets:
        datasets[name] = load_dataset(name, limit=config.limit)
    todo = [GenerationJob(name, item, tuple(p.instruction for p in prompts))
            for item in items for name, prompts in datasets.items()
            if not _done(run, name, _settings(item, config, len(prompts), judges))]
    print(f"[evaluate] {len(items) * len(datasets) - len(todo)} of {len(items) * len(datasets)} "
          "(dataset, intervention) pairs already done")
    if todo:
        bar = tqdm(total=len(todo), desc="evaluate", unit="set", disable=not progress)
        try:
            for job, responses in backend.generate(lm, todo, config.max_new_tokens, progress=progress):
                _write_pair(run, job, datasets[job.dataset], responses, config, judges, backend.name)
                bar.update(1)
        finally:
            bar.close()
    return summarize(run, config)


def _write_pair(run: RunDir, job: GenerationJob, prompts: list, responses: list[str], config: EvalConfig,
                judges: list[Judge], backend: str) -> None:
    """Judge one (dataset, intervention) pair's completions and write them with their settings sidecar."""
    if len(responses) != len(prompts):
        raise WorkbenchError(f"{backend} returned {len(responses)} completions for the {len(prompts)} prompts of "
                             f"{job.dataset} under {job.intervention.name}")
    instructions = list(job.instructions)
    labels = {j.name: j.judge(instructions, responses) for j in judges}
    rows = []
    for k, (p, response) in enumerate(zip(prompts, responses, strict=True)):
        row = {"instruction": p.instruction, "category": p.category, "response": response,
               "refused": labels["substring"][k]}
        row.update({f"refused_{j}": v[k] for j, v in labels.items() if j != "substring"})
        rows.append(row)
    data, meta = _paths(run, job.dataset, job.intervention.name)
    write_jsonl(data, rows)
    write_json(meta, {**_settings(job.intervention, config, len(prompts), judges), "backend": backend})


def read_completion_rows(run: RunDir, name: str) -> list[dict]:
    """One completions file (`name` relative to the run), checked line by line: every line a JSON object with a
    `response` and a boolean `refused`, the last one ending in a newline (not cut off)."""
    path = run.require(name)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise run.corrupted(name, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    if text and not text.endswith("\n"):
        raise run.corrupted(name, f"line {text.count(chr(10)) + 1} is cut off (no newline at the end)")
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise run.corrupted(name, f"line {lineno} is not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict) or not isinstance(row.get("refused"), bool) or "response" not in row:
            raise run.corrupted(name, f"line {lineno} is not an object with 'response' and a boolean 'refused'")
        rows.append(row)
    return rows


def read_completions(run: RunDir) -> pd.DataFrame:
    """Every finished completion file of a run: one row per completion with `dataset` and `intervention`."""
    frames = []
    for meta_path in sorted(run.path.glob("completions/*/*.meta.json")):
        data = meta_path.with_name(meta_path.name.removesuffix(".meta.json") + ".jsonl")
        if not data.exists():
            continue
        name = str(data.relative_to(run.path))
        intervention = run.read_json(str(meta_path.relative_to(run.path)), keys=("intervention",))["intervention"]
        frame = pd.DataFrame(read_completion_rows(run, name))
        if frame.empty:
            continue
        frame["dataset"] = meta_path.parent.name
        frame["intervention"] = intervention
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
        low, high = wilson_interval(int(complied.sum()), len(complied), config.ci_level)
        row = {"dataset": dataset, "intervention": name, "n": len(group), "compliance_rate": float(complied.mean()),
               "ci_low": low, "ci_high": high, "group": dataset_group(dataset)}
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


def _run(lm: LoadedModel, run: RunDir, config) -> str:
    frame = evaluate(lm, run, config.evaluate)
    return f"{len(frame)} (dataset, intervention) rates -> {run.file('evaluation.csv')}"


STAGE = Stage("evaluate", inputs=("selection.json", "directions/"),
              outputs=("evaluation.csv", "evaluation_categories.csv", "interventions.json", "completions/"),
              run=_run, is_done=never_done, resumes=True)
