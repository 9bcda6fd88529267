"""`workbench evaluate`: greedy completions under each intervention on the paper's benchmarks, judged, with
Wilson 95% intervals; resumable per (dataset, intervention).

Interventions are the run's named catalogue (`workbench.interventions.catalogue`).
Generation runs on a backend (`workbench.eval.backends`): by default in-process, on a plain transformers copy of the
model with the intervention baked in (`weight_edit.edited`: exact for ablations (weight orthogonalization), a block
pre-hook for additions); or on an OpenAI-compatible server (vLLM) that serves each intervention under its name.
Both write the same files; a pair's `.meta.json` records which backend made it (`backend`), outside its settings.

Every completion is labelled by the paper's substring judge (`refused`, for fidelity) and by the configured calibrated
judge (`judge`, default `keywords`; `model` for the model judge): `refused_<judge>`, `label_<judge>` (compliance,
refusal or partial) and `score_<judge>` where it has one. Judging is separate from generating: a pair generated before
is judged again (not regenerated) when the configured judge changes.

Artifacts: `completions/<dataset>/<intervention>.jsonl` (`instruction`, `category`, `response` and the labels above)
with a `.meta.json` sidecar, `evaluation.csv` (one row per dataset × intervention × judge, with explicit columns:
`EVALUATION_COLUMNS`), `evaluation_categories.csv`, `interventions.json`, and `judge_agreement.csv`.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from tqdm.auto import tqdm

from workbench.data import DATASET_GROUPS, dataset_group, get_spec, load_dataset
from workbench.errors import WorkbenchError
from workbench.eval.backends import GenerationBackend, GenerationJob, InProcessBackend
from workbench.eval.calibration import agreement_table
from workbench.eval.judge import PAPER_JUDGE, Judge, JudgeOptions, SubstringJudge
from workbench.eval.judges import make_judge
from workbench.eval.stats import wilson_interval
from workbench.interventions.catalogue import (
    NamedIntervention,
    build_interventions,
    choose,
    describe_name,
    signature,
)
from workbench.interventions.gate import Gated, decide
from workbench.interventions.hooks import ABLATION_TARGETS
from workbench.io import atomic_write, write_json, write_jsonl
from workbench.method.vectors import is_label
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage, never_done
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, stage_outputs

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

DEFAULT_DATASETS = tuple(DATASET_GROUPS)


@dataclass(frozen=True)
class EvalConfig:
    """What `workbench evaluate` generates and how."""

    datasets: tuple[str, ...] = DEFAULT_DATASETS
    """Registered prompt sets (over-refusal sets: compliance is good; harmful sets: compliance is bad)."""
    interventions: tuple[str, ...] | None = None
    """Intervention names to run (None: all that the run directory defines)."""
    alphas: tuple[float, ...] = (0.5, 1.0)
    """Activation-addition coefficients α for `actadd_r_a<α>` and the combinations."""
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
    judge: str = "keywords"
    """The calibrated judge that labels every completion beside the paper's substring judge (substring, keywords,
    model, endpoint); the figures and Table 1 use it and show the paper's beside it."""
    judge_options: JudgeOptions = JudgeOptions()
    """How to build it (the model judge's model, dtype and read-out; the endpoint's URL)."""

    def validate(self) -> None:
        if not self.datasets:
            raise WorkbenchError("evaluate: give at least one dataset")
        from workbench.eval.judges import JUDGES

        if self.judge not in JUDGES:
            raise WorkbenchError(f"evaluate: unknown judge {self.judge!r}: choose one of {', '.join(JUDGES)}")
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


COMPLETIONS = "completions"
"""The folder of a run that `evaluate` writes its completions to (the frontier writes to `frontier/completions`)."""


def _paths(run: RunDir, dataset: str, name: str, folder: str = COMPLETIONS) -> tuple[Path, Path]:
    base = run.file(f"{folder}/{dataset}/{name}")
    return base.with_name(base.name + ".jsonl"), base.with_name(base.name + ".meta.json")


def _settings(item: NamedIntervention, config: EvalConfig, n: int) -> dict:
    return {"intervention": item.name, "signature": signature(item.intervention), "n": n, "limit": config.limit,
            "max_new_tokens": config.max_new_tokens}


NOT_SETTINGS = ("backend", "judges", "routed_from", "gate_opened")
"""Sidecar keys that record how a pair was made or judged, not what it is (a pair is reused whatever they say)."""


def _done(run: RunDir, dataset: str, settings: dict, folder: str = COMPLETIONS) -> bool:
    data, meta = _paths(run, dataset, settings["intervention"], folder)
    if not (data.exists() and meta.exists()):
        return False
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        if not isinstance(recorded, dict) or {k: v for k, v in recorded.items() if k not in NOT_SETTINGS} != settings:
            return False
        return len(read_completion_rows(run, str(data.relative_to(run.path)))) == settings["n"]
    except (json.JSONDecodeError, UnicodeDecodeError, WorkbenchError):
        return False  # a damaged sidecar or completions file: generate this pair again


def run_from_directions(run: RunDir, files: list[str | Path], load: dict | None = None) -> RunDir:
    """A run directory to evaluate selected direction files in (`lam_<λ>.safetensors` written by `select`, e.g. the
    committed ones in `data/directions/`), without the extraction and sweep that made them: `candidates.json` names
    their model, `selection.json` their cells, and the files are copied into `directions/`. Refused: files from two
    models, files without a λ (a true-refusal file), two files with one λ, or a run directory that already holds
    another selection. A gate file among them (`gate.safetensors`, from `workbench gate`) is copied beside the
    directions, so the catalogue gains the gated w′; it must come from the same model and gate one of the λs.
    `load`: the load options to record (`LoadOptions.record()`), which later commands reuse."""
    import shutil

    from workbench.interventions.directions import read_direction_file
    from workbench.interventions.gate import GATE_FILE, is_gate_file, load_gate

    gates = [Path(f) for f in files if is_gate_file(f)]
    files = [f for f in files if Path(f) not in gates]
    if len(gates) > 1:
        raise WorkbenchError(f"--directions: {len(gates)} gate files; give at most one")
    if not files:
        raise WorkbenchError("--directions: give at least one direction file")
    metas = [(Path(f), read_direction_file(f)[1]) for f in files]
    if gates:
        gate = load_gate(gates[0])
        fingerprints = {m.get("fingerprint") for _, m in metas}
        if fingerprints != {gate.meta.get("fingerprint")}:
            raise WorkbenchError(f"gate {gates[0]} comes from model {gate.meta.get('model')!r}, not the directions' "
                                 "model: give the gate fitted for them")
        if float(gate.meta.get("gates_lam", "nan")) not in {float(m.get("lam", "nan")) for _, m in metas}:
            raise WorkbenchError(f"gate {gates[0]} gates w′ at λ = {gate.meta.get('gates_lam')}, which none of the "
                                 "--directions holds")
    lams = []
    for path, meta in metas:
        if meta.get("vector") != "w'" or "lam" not in meta:
            raise WorkbenchError(f"{path} is not a selected w′ direction (no λ in its metadata): give lam_<λ> files")
        read_direction_file(path, ("raw_w", "raw_r"))  # what the catalogue's raw w and r come from
        lams.append(float(meta["lam"]))
    models = {(m.get("model"), m.get("fingerprint")) for _, m in metas}
    if len(models) > 1:
        raise WorkbenchError(f"--directions come from more than one model: {sorted(map(str, models))}")
    if len(set(lams)) != len(lams):
        raise WorkbenchError(f"--directions: two files with λ = {max(set(lams), key=lams.count)}")
    selections = [{"lam": lam, "pos": int(meta["pos"]), "layer": int(meta["layer"]),
                   "direction_file": f"directions/lam_{lam}.safetensors", "source": str(path)}
                  for lam, (path, meta) in zip(lams, metas, strict=True)]
    if run.file("selection.json").exists():
        recorded = run.read_json("selection.json", keys=("selections", "r"))["selections"]
        if [(s["lam"], s["pos"], s["layer"]) for s in recorded] != [(s["lam"], s["pos"], s["layer"]) for s in
                                                                     selections]:
            raise WorkbenchError(f"{run.path} already holds another selection: use a new --run directory")
        for gate_path in gates:  # a gate given for a run made before
            atomic_write(run.file(GATE_FILE), lambda tmp, source=gate_path: shutil.copyfile(source, tmp))
        return run
    name, fingerprint = models.pop()
    run.path.mkdir(parents=True, exist_ok=True)
    for selection, (path, _) in zip(selections, metas, strict=True):
        target = run.file(selection["direction_file"])
        atomic_write(target, lambda tmp, source=path: shutil.copyfile(source, tmp))
    for gate_path in gates:
        atomic_write(run.file(GATE_FILE), lambda tmp, source=gate_path: shutil.copyfile(source, tmp))
    write_json(run.file("candidates.json"), {"model": {"name": name, "fingerprint": fingerprint},
                                             **({"load": load} if load is not None else {}),
                                             "from_directions": [str(p) for p, _ in metas]})
    write_json(run.file("selection.json"), {"selections": selections, "r": None, "from_directions": True})
    return run


def configured_judges(config: EvalConfig, extra: list[Judge] | None = None) -> list[Judge]:
    """The substring judge, the configured calibrated judge (when it is another) and any `extra` judges."""
    judges: list[Judge] = [SubstringJudge()]
    if config.judge != PAPER_JUDGE:
        judges.append(make_judge(config.judge, config.judge_options))
    names = {j.name for j in judges}
    return judges + [j for j in extra or [] if j.name not in names]


def evaluate(lm: LoadedModel, run: RunDir, config: EvalConfig, judges: list[Judge] | None = None,
             progress: bool = True, backend: GenerationBackend | None = None) -> pd.DataFrame:
    """Generate (on `backend`, default in-process), judge and summarize; finished (dataset, intervention) pairs with
    equal settings are skipped, and each pair is written as soon as it is generated (an interrupted call keeps
    them). `judges` are extra judges beside the configured ones."""
    config.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    backend = backend or InProcessBackend(config.batch_size)
    judges = configured_judges(config, judges)
    selection = run.read_json("selection.json", keys=("selections", "r"))
    token_means = None
    if "harmless_mean" in config.ablation:
        from workbench.stages.token_means import ensure_token_means

        token_means = ensure_token_means(lm, run)
    items = choose(build_interventions(selection, run.path, lm.info.fingerprint, lm.info.d_model, config.alphas,
                                       config.ablation, token_means), config.interventions)
    write_json(run.file("interventions.json"),
               {i.name: {**i.description, "signature": signature(i.intervention)} for i in items})
    datasets = {name: load_dataset(name, limit=config.limit) for name in config.datasets}
    generate_pairs(lm, run, items, datasets, config, judges, backend, progress)
    return summarize(run, config)


def generate_pairs(lm: LoadedModel, run: RunDir, items: list[NamedIntervention], datasets: dict[str, list],
                   config: EvalConfig, judges: list[Judge], backend: GenerationBackend, progress: bool = True,
                   folder: str = COMPLETIONS) -> None:
    """Every (dataset, intervention) pair not yet done with equal settings: generated on `backend`, judged and written
    under `folder` as soon as it is finished. A gated pair whose baseline and inner pairs are done is *routed* from them
    (each prompt's gate decision picks its completion) instead of generated again; finished pairs judged before by
    other judges are judged again, not regenerated."""
    pairs = [(name, item) for item in items for name in datasets]
    todo = [GenerationJob(name, item, tuple(p.instruction for p in datasets[name]))
            for name, item in pairs if not _done(run, name, _settings(item, config, len(datasets[name])), folder)]
    tag = "evaluate" if folder == COMPLETIONS else folder.split("/")[0]
    print(f"[{tag}] {len(pairs) - len(todo)} of {len(pairs)} (dataset, intervention) pairs already done")
    gated = [job for job in todo if isinstance(job.intervention.intervention, Gated)]
    rest = [job for job in todo if job not in gated]
    bar = tqdm(total=len(todo), desc=tag, unit="set", disable=not progress or not todo)
    try:
        for job, responses in backend.generate(lm, rest, config.max_new_tokens, progress=progress) if rest else ():
            _write_pair(run, job, datasets[job.dataset], responses, config, judges, backend.name, folder)
            bar.update(1)
        by_name = {item.name: item for item in items}
        unroutable = []
        for job in gated:
            inner = by_name.get(job.intervention.intervention.inner.label)
            sources = [by_name.get("baseline"), inner]
            n = len(job.instructions)
            if all(src is not None and _done(run, job.dataset, _settings(src, config, n), folder) for src in sources):
                responses, opened = _routed_from(lm, run, job, folder, config.batch_size)
                _write_pair(run, job, datasets[job.dataset], responses, config, judges, "routed", folder,
                            routed_from=[src.name for src in sources], gate_opened=opened)
                bar.update(1)
            else:
                unroutable.append(job)
        for job, responses in backend.generate(lm, unroutable, config.max_new_tokens, progress=progress) \
                if unroutable else ():
            _write_pair(run, job, datasets[job.dataset], responses, config, judges, backend.name, folder)
            bar.update(1)
    finally:
        bar.close()
    generated = {(job.dataset, job.intervention.name) for job in todo}  # written just now, by these judges
    for name, item in pairs:  # pairs generated before with other judges: judged again, not regenerated
        if (name, item.name) not in generated:
            judge_pair(run, name, item.name, judges, folder)


def _routed_from(lm: LoadedModel, run: RunDir, job: GenerationJob, folder: str, batch_size: int
                 ) -> tuple[list[str], int]:
    """A gated job's completions from its finished baseline and inner pairs: each prompt's gate decision (taken on the
    loaded model) picks the inner intervention's completion where the gate opens, the baseline's elsewhere. Returns
    them and how many prompts the gate opened for."""
    gated = job.intervention.intervention
    open_rows = decide(lm, gated.gate, job.instructions, batch_size)
    answers = {}
    for name in ("baseline", gated.inner.label):
        data, _ = _paths(run, job.dataset, name, folder)
        rows = read_completion_rows(run, str(data.relative_to(run.path)))
        if [r["instruction"] for r in rows] != list(job.instructions):
            raise run.corrupted(str(data.relative_to(run.path)), "its prompts differ from the dataset's")
        answers[name] = [r["response"] for r in rows]
    return ([answers[gated.inner.label][k] if bool(o) else answers["baseline"][k]
             for k, o in enumerate(open_rows.tolist())], int(open_rows.sum()))


def _label_columns(judge: Judge, prompts: list[str], responses: list[str]) -> dict[str, list]:
    """The completion-file columns of one judge: `refused` for the substring judge, `refused_<name>`,
    `label_<name>` and `score_<name>` (where it has scores) for the others."""
    verdicts = judge.verdicts(prompts, responses)
    if judge.name == PAPER_JUDGE:
        return {"refused": [v.refusal for v in verdicts]}
    columns = {f"refused_{judge.name}": [v.refusal for v in verdicts],
               f"label_{judge.name}": [v.label for v in verdicts]}
    if any(v.score is not None for v in verdicts):
        columns[f"score_{judge.name}"] = [v.score for v in verdicts]
    return columns


def _write_pair(run: RunDir, job: GenerationJob, prompts: list, responses: list[str], config: EvalConfig,
                judges: list[Judge], backend: str, folder: str = COMPLETIONS, routed_from: list[str] | None = None,
                gate_opened: int | None = None) -> None:
    """Judge one (dataset, intervention) pair's completions and write them with their settings sidecar."""
    if len(responses) != len(prompts):
        raise WorkbenchError(f"{backend} returned {len(responses)} completions for the {len(prompts)} prompts of "
                             f"{job.dataset} under {job.intervention.name}")
    instructions = list(job.instructions)
    columns: dict[str, list] = {}
    for judge in judges:
        columns.update(_label_columns(judge, instructions, responses))
    rows = [{"instruction": p.instruction, "category": p.category, "response": response,
             **{key: values[k] for key, values in columns.items()}}
            for k, (p, response) in enumerate(zip(prompts, responses, strict=True))]
    data, meta = _paths(run, job.dataset, job.intervention.name, folder)
    write_jsonl(data, rows)
    write_json(meta, {**_settings(job.intervention, config, len(prompts)), "backend": backend,
                      **({"routed_from": routed_from, "gate_opened": gate_opened} if routed_from else {}),
                      "judges": {j.name: judge_identity(j) for j in judges}})


def judge_identity(judge: Judge) -> str:
    """What a judge's labels depend on beyond its name (the model judge: its model and read-out), recorded per pair
    so that labels of another judge under the same name are replaced."""
    return str(getattr(judge, "identity", judge.name))


def _recorded_judges(meta: dict) -> dict[str, str]:
    judges = meta.get("judges", {})
    return judges if isinstance(judges, dict) else {name: name for name in judges}  # a list: names only


def judge_pair(run: RunDir, dataset: str, intervention: str, judges: list[Judge], folder: str = COMPLETIONS) -> bool:
    """Label a finished pair's completions with every judge in `judges` that has not labelled them yet, or whose
    labels came from another judge of the same name (rewritten atomically); True when it judged anything."""
    data, meta = _paths(run, dataset, intervention, folder)
    rows = read_completion_rows(run, str(data.relative_to(run.path)))
    recorded = run.read_json(str(meta.relative_to(run.path)))
    made_by = _recorded_judges(recorded)
    missing = [j for j in judges if j.name != PAPER_JUDGE and (f"label_{j.name}" not in (rows[0] if rows else {})
                                                               or made_by.get(j.name, j.name) != judge_identity(j))]
    if not rows or not missing:
        return False
    prompts, responses = [r["instruction"] for r in rows], [r["response"] for r in rows]
    for judge in missing:
        for key, values in _label_columns(judge, prompts, responses).items():
            for row, value in zip(rows, values, strict=True):
                row[key] = value
    write_jsonl(data, rows)
    write_json(meta, {**recorded, "judges": {**made_by, **{j.name: judge_identity(j) for j in missing}}})
    return True


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


def read_completions(run: RunDir, folder: str = COMPLETIONS) -> pd.DataFrame:
    """Every finished completion file of a run: one row per completion with `dataset` and `intervention`."""
    frames = []
    for meta_path in sorted(run.path.glob(f"{folder}/*/*.meta.json")):
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


EVALUATION_COLUMNS: tuple[str, ...] = ("dataset", "group", "intervention", "vector", "lam", "alpha", "ablation",
                                       "judge", "n", "k", "rate", "ci_low", "ci_high")
"""`evaluation.csv`: one row per dataset × intervention × judge. `vector` is what the intervention changes (none, w',
w, r, w'+r, gated w': `workbench.method.vectors`), `lam`/`alpha` its λ and α (empty where none), `ablation` zero or
harmless_mean (empty for no ablation); `k` of `n` completions complied (the judge found no full or partial refusal),
`rate` = k/n, and the Wilson interval of `rate`."""
NUMERIC_EVALUATION_COLUMNS = ("lam", "alpha", "n", "k", "rate", "ci_low", "ci_high")


def read_evaluation(run: RunDir) -> pd.DataFrame:
    """`evaluation.csv`, checked: its columns, numbers where numbers belong, and vector labels of
    `workbench.method.vectors`."""
    frame = run.read_csv("evaluation.csv", columns=EVALUATION_COLUMNS, numeric_columns=NUMERIC_EVALUATION_COLUMNS)
    unknown = sorted({v for v in frame.vector if not is_label(v)}, key=str)
    if unknown:
        raise run.corrupted("evaluation.csv", f"vector {unknown[0]!r} is not a vector label (none, r, w, w', w'+r, "
                            "gated w')")
    return frame


def judge_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Judge name -> its refusal column in a completions frame (`refused` is the substring judge's)."""
    out = {PAPER_JUDGE: "refused"} if "refused" in frame else {}
    out.update({c.removeprefix("refused_"): c for c in frame.columns if c.startswith("refused_")})
    return out


def summarize(run: RunDir, config: EvalConfig = EvalConfig()) -> pd.DataFrame:
    """`evaluation.csv` (+ per-category rates and judge agreement) from the run's completion files: a row for every
    (dataset, intervention) pair and every judge that labelled all of its completions."""
    frame = read_completions(run)
    columns = judge_columns(frame)
    rows, categories = [], []
    for (dataset, name), group in frame.groupby(["dataset", "intervention"], sort=True):
        described = describe_name(name)
        for judge, column in columns.items():
            if group[column].isna().any():
                continue
            complied = (~group[column].astype(bool)).to_numpy()
            low, high = wilson_interval(int(complied.sum()), len(complied), config.ci_level)
            rows.append({"dataset": dataset, "group": dataset_group(dataset), "intervention": name, **described,
                         "judge": judge, "n": len(group), "k": int(complied.sum()), "rate": float(complied.mean()),
                         "ci_low": low, "ci_high": high})
            for category, sub in group.groupby(group.category.fillna("(none)")):
                categories.append({"dataset": dataset, "intervention": name, "judge": judge, "category": category,
                                   "n": len(sub), "rate": float((~sub[column].astype(bool)).mean())})
    result = pd.DataFrame(rows, columns=list(EVALUATION_COLUMNS))
    atomic_write(run.file("evaluation.csv"), lambda tmp: result.to_csv(tmp, index=False))
    cats = pd.DataFrame(categories)
    atomic_write(run.file("evaluation_categories.csv"), lambda tmp: cats.to_csv(tmp, index=False))
    labelled = frame.dropna(subset=list(columns.values()))
    if len(columns) > 1 and not labelled.empty:
        table = agreement_table({name: labelled[column].astype(bool).tolist() for name, column in columns.items()})
        atomic_write(run.file("judge_agreement.csv"), lambda tmp: table.to_csv(tmp, index=False))
    return result


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    frame = evaluate(lm, run, config.evaluate)
    return f"{len(frame)} (dataset, intervention) rates -> {run.file('evaluation.csv')}"


STAGE = Stage("evaluate", inputs=STAGE_INPUTS["evaluate"], outputs=stage_outputs("evaluate"),
              execute=_run, is_done=never_done, resumes=True)
