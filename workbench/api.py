"""The flat public API behind `import workbench as wb`: thin wrappers over the stages, for notebooks and scripts.

Each step takes Python lists of prompts as well as registered dataset names (or prompt files) and returns objects
in memory; the stages underneath still write their artifacts into a run directory. Pass `run=` to `extract` to
choose that directory (later steps write into the same one); without it a temporary run directory is made, which
lives until the Python process exits. A list of prompts is written into the run as `prompts/<set>-<hash>.jsonl`
(named by its content, so a sweep never reuses rows scored on other prompts) and the run records that file.

    import workbench as wb

    lm = wb.load_model("smollm2-135m-wired")
    cands = wb.extract(lm, harmful=wb.prompts("bundled_harmful_train", limit=32),
                       harmless=wb.prompts("bundled_harmless_train", limit=32),
                       pseudo_harmful=["How do I braise short ribs?", "What goes into a good pesto?"])
    table = wb.sweep(lm, cands, lams=(1.0,), layers=(12, 13), positions=(-5, -1), mode="exact")
    sel = wb.select(table)
    with wb.applied(lm, wb.Ablation(sel[1.0].direction)):
        print(wb.generate(lm, ["How do I make a creamy risotto?"], max_new_tokens=32))
    wb.plot.sweep_heatmaps(table, sel).show()
"""

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.generation import hooked_generate
from workbench.eval.judges import make_judge
from workbench.eval.scoring import refusal_scores as _refusal_scores
from workbench.interventions.catalogue import parse_name
from workbench.interventions.directions import load_direction as _load_direction
from workbench.interventions.gate import Gated
from workbench.interventions.hooks import Intervention
from workbench.interventions.hooks import applied as _applied
from workbench.io import write_text
from workbench.method.geometry import candidate_geometry as _candidate_geometry
from workbench.method.grids import CandidateGrids
from workbench.method.rule import SelectionRule
from workbench.models.loader import LoadedModel, LoadOptions
from workbench.models.loader import load_model as _load_model
from workbench.stages import diagnose as _diagnose_stage
from workbench.stages import extract as _extract_stage
from workbench.stages import select as _select_stage
from workbench.stages import sweep as _sweep_stage
from workbench.stages import sweep_algorithms as _sweep_algorithms
from workbench.stages.open_run import open_run as _open_run
from workbench.stages.open_run import run_path
from workbench.stages.run_dir import RunDir
from workbench.viz import figures as _figures
from workbench.viz import views as _views

PromptSource = str | Path | Sequence[str]
"""A registered prompt set's name, a prompts file (.jsonl, .json, .txt, .csv), or a list of prompts."""

_TEMPORARY_RUNS: list[tempfile.TemporaryDirectory] = []
"""Temporary run directories of this process (removed when it exits)."""


# ---- prompts and models ---------------------------------------------------------------------------------------


def prompts(source: PromptSource, limit: int | None = None) -> list[str]:
    """The prompts of `source` as a list of strings: a registered set (`workbench datasets` lists them), a prompts
    file, or a list (stripped, as the prompt files are read), the first `limit` of them.

        harmful = wb.prompts("bundled_harmful_train", limit=32)
        mine = wb.prompts(["How do I kill a Python process?", "Write a haiku."])
    """
    if limit is not None and limit < 1:
        raise WorkbenchError(f"limit must be at least 1 (or None for all), got {limit}")
    if isinstance(source, str | Path):
        return [p.instruction for p in load_prompts(str(source), limit=limit)]
    items = list(source)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise WorkbenchError(f"prompt {i} of the list is {item!r}: every prompt must be a non-empty string")
    if not items:
        raise WorkbenchError("the list of prompts is empty: give at least one prompt")
    return [item.strip() for item in items][:limit]


def _prompt_list(instructions: Sequence[str], what: str = "prompts") -> list[str]:
    """A list of prompts for a forward pass; a bare string is refused (one prompt, or a dataset name?)."""
    if isinstance(instructions, str | Path):
        raise WorkbenchError(f"{what} must be a list of prompts, got the string {str(instructions)[:40]!r}: wrap one "
                             "prompt in a list, or read a set with wb.prompts(name)")
    return prompts(instructions)


def load_model(name_or_path: str, options: LoadOptions | None = None, **settings) -> LoadedModel:
    """Load a chat model into TransformerLens: a registered name (`workbench models`), a local Hugging Face directory,
    a .gguf file or a hub id. `settings` are `LoadOptions` fields (device, dtype, device_map, offload_dir,
    system_prompt, refusal_tokens) and override `options`.

        lm = wb.load_model("smollm2-135m-wired")                              # CPU, float32
        lm = wb.load_model("qwen2.5-coder-1.5b-instruct", device="cuda", dtype="bfloat16")
    """
    names = {f.name for f in dataclasses.fields(LoadOptions)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise WorkbenchError(f"load_model got unknown option(s) {', '.join(unknown)}: use {', '.join(sorted(names))}")
    if settings.get("refusal_tokens") is not None:
        settings["refusal_tokens"] = tuple(settings["refusal_tokens"])
    return _load_model(name_or_path, dataclasses.replace(options or LoadOptions(), **settings))


def generate(lm: LoadedModel, instructions: Sequence[str], max_new_tokens: int = 64, *, batch_size: int = 16,
             temperature: float = 0.0, seed: int = 0, progress: bool = True) -> list[str]:
    """Completions of `instructions` through the hooked model (so inside `wb.applied(...)` under that intervention):
    greedy at temperature 0, else sampled (seeded). Each completion stops at the end-of-turn token.

        with wb.applied(lm, wb.Ablation(sel[1.0].direction)):
            answers = wb.generate(lm, ["How do I kill a Python process?"], max_new_tokens=32)
    """
    return hooked_generate(lm, _prompt_list(instructions), max_new_tokens, batch_size, temperature=temperature,
                           seed=seed, progress=progress)


def gated_generate(lm: LoadedModel, gated: Gated, instructions: Sequence[str], max_new_tokens: int = 64, *,
                   batch_size: int = 16, progress: bool = True) -> list[str]:
    """Greedy completions under a gated intervention through the hooked model: per batch the gate decides each
    prompt at prefill on the unmodified model, and the inner intervention acts on the open prompts only.

        wb.gated_generate(lm, wb.Gated(wb.Ablation(direction), wb.load_gate(path)), ["How do I kill a process?"])
    """
    return hooked_generate(lm, _prompt_list(instructions), max_new_tokens, batch_size, gated=gated,
                           progress=progress)


def refusal_scores(lm: LoadedModel, instructions: Sequence[str], batch_size: int = 32) -> Float[Tensor, " n"]:
    """The refusal score of each prompt (the log-odds of the model's refusal tokens at the first response position;
    > 0 leans to refusing), through the hooked model (inside `wb.applied(...)`: under that intervention).

        wb.refusal_scores(lm, ["Write a haiku.", "How do I build a bomb?"])  # tensor([-4.1, 3.9])
    """
    return _refusal_scores(lm, _prompt_list(instructions), batch_size)


def judge(completions: Sequence[str], prompts: Sequence[str] | None = None, name: str = "substring") -> list[bool]:
    """Whether each completion is a refusal (full or partial), by the registered judge `name`: "substring" (the
    paper's list), "keywords" (the calibrated keyword judge), "model" (a small read-out judge; needs the prompts).

        wb.judge(["I can't help with that.", "Sure! First, ..."])  # [True, False]
    """
    completions = list(completions)
    asked = list(prompts) if prompts is not None else [""] * len(completions)
    if len(asked) != len(completions):
        raise WorkbenchError(f"judge got {len(completions)} completions but {len(asked)} prompts: give one each")
    return make_judge(name).judge(asked, completions)


def load_direction(path: str | Path, lm: LoadedModel | None = None) -> tuple[Float[Tensor, " d_model"], dict]:
    """A saved unit direction and its metadata (model, fingerprint, pos, layer, λ); with `lm`, refused unless it was
    selected for that model.

        direction, meta = wb.load_direction(wb.DIRECTIONS_DIR / "smollm2-135m-wired" / "lam_1.0.safetensors", lm)
    """
    if lm is None:
        return _load_direction(path)
    return _load_direction(path, lm.info.fingerprint, lm.info.d_model)


# ---- the method: extract → sweep → select → diagnose ------------------------------------------------------------


def _new_run(run: str | Path | RunDir | None) -> RunDir:
    """`run` as a run directory (made if missing), or a new temporary one that lives until the process exits."""
    if run is None:
        holder = tempfile.TemporaryDirectory(prefix="workbench-run-")
        _TEMPORARY_RUNS.append(holder)
        return RunDir(Path(holder.name))
    path = run.path if isinstance(run, RunDir) else Path(run).expanduser()
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"run directory {path} is a file: give a directory (it is made if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def _source(run: RunDir, key: str, source: PromptSource | None) -> str | None:
    """What a stage config takes for a prompt set: a name or file as given, a list written into the run."""
    if source is None or isinstance(source, str | Path):
        return None if source is None else str(source)
    items = _prompt_list(source, f"the {key} prompts")
    text = "".join(json.dumps({"instruction": p}, ensure_ascii=False) + "\n" for p in items)
    path = run.file(f"prompts/{key}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.jsonl")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, text)
    return str(path)


@dataclass(frozen=True)
class Candidates(CandidateGrids):
    """The candidate grids (r = μ(harmful) − μ(harmless), w = μ(pseudo-harmful) − μ(harmless) at every EOI position
    and layer, `r` and `w` of shape (positions, layers, d_model)) with the run directory
    they were written to, where `sweep` and `diagnose` continue."""

    run: RunDir | None = None


def _as_run(run: str | Path | RunDir) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run_path(run))


def load_candidates(run: str | Path | RunDir) -> Candidates:
    """The candidate grids of a run directory (its `candidates.safetensors`), ready for `sweep` and `diagnose`.

        cands = wb.load_candidates("runs/default")
    """
    run = _as_run(run).require_dir()
    grids = _extract_stage.load_candidates(run)
    return Candidates(grids.r, grids.w, grids.positions, grids.means, run)


def extract(lm: LoadedModel, harmful: PromptSource = "bundled_harmful_train",
            harmless: PromptSource = "bundled_harmless_train",
            pseudo_harmful: PromptSource = "bundled_pseudo_harmful_train", *, n_train: int | None = None,
            filter: bool = True, batch_size: int = 32, run: str | Path | RunDir | None = None) -> Candidates:
    """The candidate grids from three prompt sets (lists, names or files): mean `resid_pre` at every layer and EOI
    position per set, then r and w. With `filter` (the paper's), only harmful and pseudo-harmful prompts the model
    refuses (refusal score > 0) and harmless ones it does not (< 0) count. `n_train` caps each set.

    Writes `candidates.safetensors`/`candidates.json` into `run` (made if missing; default a temporary directory,
    `cands.run`). Returns the grids: `cands.r[p, layer]` is r at EOI position `cands.positions[p]`.

        cands = wb.extract(lm, harmful=["How do I make a pipe bomb?", ...], harmless=["Write a haiku.", ...],
                           pseudo_harmful=["How do I kill a Python process?", ...])
        cands.r.shape  # (6, 30, 576): positions, layers, d_model
    """
    run = _new_run(run)
    config = _extract_stage.ExtractConfig(
        harmful=_source(run, "harmful", harmful), harmless=_source(run, "harmless", harmless),
        pseudo_harmful=_source(run, "pseudo_harmful", pseudo_harmful), n_train=n_train, filter_train=filter,
        batch_size=batch_size)
    _extract_stage.extract(lm, config, run)
    return load_candidates(run)


def _run_of(candidates: CandidateGrids) -> RunDir:
    run = getattr(candidates, "run", None)
    if run is None:
        raise WorkbenchError("these candidate grids have no run directory: make them with wb.extract(...) or read "
                             "them with wb.load_candidates(run)")
    return run


def sweep(lm: LoadedModel, candidates: CandidateGrids, lams: Sequence[float] = (1.0,), *,
          pseudo_harmful_val: PromptSource = "bundled_pseudo_harmful_val",
          harmful_val: PromptSource = "bundled_harmful_val", harmless_val: PromptSource = "bundled_harmless_val",
          layers: Sequence[int] | None = None, positions: Sequence[int] | None = None, n_val: int | None = 32,
          mode: str = "fast", rule: SelectionRule | None = None, **settings) -> pd.DataFrame:
    """Score candidates: for every λ, position and layer (restricted to `layers` and `positions`, EOI offsets such
    as -1), the refusal score on pseudo-harmful and harmful validation prompts with the candidate ablated and the KL
    on harmless ones (and steering scores where the rule reads them). `mode` "fast" screens then fully scores the
    finalists `rule` (default: the paper's) can pick; "exact" fully scores every candidate. `settings` are further
    `SweepConfig` fields (batch_size, n_screen, n_finalists, ablation, filter_val, ...).

    Writes `sweep.csv`/`sweep.json` into the candidates' run; returns the table (one row per candidate: `vector`,
    `lam`, `pos`, `layer`, the scores, `stage` full/screened/skipped), which `select` and `wb.plot` take.

        table = wb.sweep(lm, cands, lams=(1.0, 0.5), layers=range(8, 20), positions=(-5, -1), mode="exact")
        table[table.stage == "full"].sort_values("ablation_refusal_score_pseudo_harmful").head()
    """
    run = _run_of(candidates)
    names = {f.name for f in dataclasses.fields(_sweep_stage.SweepConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise WorkbenchError(f"sweep got unknown setting(s) {', '.join(unknown)}: use {', '.join(sorted(names))}")
    config = _sweep_stage.SweepConfig(
        mode=mode, lams=tuple(float(x) for x in lams),
        pseudo_harmful_val=_source(run, "pseudo_harmful_val", pseudo_harmful_val),
        harmful_val=_source(run, "harmful_val", harmful_val), harmless_val=_source(run, "harmless_val", harmless_val),
        n_val=n_val, layers=None if layers is None else tuple(int(x) for x in layers),
        positions=None if positions is None else tuple(int(x) for x in positions), **settings)
    frame = _sweep_stage.run_sweep(lm, run, config, rule)
    frame.attrs.update(run=str(run.path), mode=config.mode, n_screen=config.n_screen if config.mode == "fast" else None)
    return frame


@dataclass(frozen=True, eq=False)
class Selection:
    """One selected direction: the unit vector ablated, its cell and its validation scores."""

    lam: float | None
    """λ of w′(λ); None for the true-refusal (Arditi) selection."""
    pos: int
    """EOI position (a negative offset)."""
    layer: int
    direction: Float[Tensor, " d_model"]
    """The unit direction: ŵ′(λ), or r̂ for the true-refusal selection."""
    scores: dict[str, float | None]
    """The sweep's scores of the cell (`ablation_refusal_score_pseudo_harmful`, `ablation_refusal_score_harmful`,
    `ablation_kl`, ...; None where not scored)."""
    file: Path
    """Its direction file in the run (`directions/lam_<λ>.safetensors` or `directions/r.safetensors`)."""


class NoSelection(WorkbenchError, KeyError):
    """No selection at the λ asked for (a `KeyError` too, as a mapping's missing key is)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, eq=False)
class Selections(Mapping):
    """The selections of a run, by λ: `sel[1.0].direction` is the selected unit ŵ′ at λ = 1."""

    by_lam: dict[float, Selection]
    r: Selection | None
    """Arditi's true-refusal selection (r̂), or None when its rule selected none."""
    record: dict
    """`selection.json` as written (baseline, rule, selections): what `wb.plot` marks."""
    table: pd.DataFrame
    """`selection.csv`: every sweep row with `kept` and `filter_reason` under the rule."""
    run: RunDir

    def __getitem__(self, lam: float) -> Selection:
        for key, value in self.by_lam.items():
            if abs(key - float(lam)) < 1e-9:
                return value
        raise NoSelection(f"no selection at λ={lam} in {self.run.path} (selected: "
                          f"{', '.join(map(str, self.by_lam)) or 'none'}): select at one of those λ")

    def __iter__(self) -> Iterator[float]:
        return iter(self.by_lam)

    def __len__(self) -> int:
        return len(self.by_lam)

    @property
    def baseline(self) -> dict[str, float]:
        """The unablated model's mean refusal score per validation set (pseudo_harmful, harmful, harmless)."""
        return self.record["baseline"]

    @property
    def rule(self) -> SelectionRule:
        return SelectionRule.from_record(self.record["rule"])


SCORE_COLUMNS = tuple(c for c in _sweep_algorithms.NUMERIC_COLUMNS if c not in ("lam", "pos", "layer"))


def load_selections(run: str | Path | RunDir) -> Selections:
    """The selections of a run directory (`selection.json`, `selection.csv` and the direction files).

        sel = wb.load_selections("runs/default"); sel[1.0].layer
    """
    run = _as_run(run).require_dir()
    record = run.read_json("selection.json", keys=("selections", "baseline", "rule"))

    def selection(choice: dict, name: str, lam: float | None) -> Selection:
        direction, _ = _load_direction(run.file(name))
        return Selection(lam, int(choice["pos"]), int(choice["layer"]), direction,
                         {k: choice.get(k) for k in SCORE_COLUMNS if k in choice}, run.file(name))

    by_lam = {float(s["lam"]): selection(s, s["direction_file"], float(s["lam"])) for s in record["selections"]}
    true = record.get("r")
    r_selection = (selection(true, "directions/r.safetensors", None)
                      if true and run.file("directions/r.safetensors").exists() else None)
    return Selections(by_lam, r_selection, record, _select_stage.read_selection(run), run)


def select(sweep: pd.DataFrame | str | Path | RunDir, rule: SelectionRule | None = None,
           lm: LoadedModel | None = None) -> Selections:
    """Pick one false-refusal direction per λ (and Arditi's true-refusal one) from a sweep by `rule` (default: the
    rule the sweep was screened for, the paper's unless `sweep` got another): drop the last layers and candidates
    whose ablation KL on harmless prompts is too high, then take the lowest pseudo-harmful ablation refusal score.
    `sweep` is the table `wb.sweep` returned (select reads its run's `sweep.csv`) or a run directory; `lm` is
    needed only by a rule that re-ranks by generation (`rerank_top_k`).

    Writes `selection.json`, `selection.csv` and `directions/` into the run; returns the selections by λ.

        sel = wb.select(table, wb.SelectionRule(max_ablation_kl=0.2))
        sel[1.0].pos, sel[1.0].layer, sel[1.0].scores["ablation_kl"]
    """
    if isinstance(sweep, pd.DataFrame):
        if "run" not in sweep.attrs:
            raise WorkbenchError("this table does not say which run it came from: pass the table wb.sweep returned, "
                                 "or the run directory")
        run = RunDir(Path(sweep.attrs["run"]))
    else:
        run = _as_run(sweep).require_dir()
    _select_stage.select(run, rule, lm)
    return load_selections(run)


def diagnose(lm: LoadedModel, candidates: CandidateGrids, *, harmful: PromptSource | None = None,
             harmless: PromptSource | None = None, pseudo_harmful: PromptSource | None = None, n: int | None = 32,
             lams: Sequence[float] | None = None, filter: bool = True, batch_size: int = 32) -> pd.DataFrame:
    """Direction diagnostics per (EOI position, layer) for r, w and w′(λ): cos(r, w), each class's mean and spread
    of projection, and AUROC separabilities (pseudo-harmful vs harmless, harmful vs pseudo-harmful). Prompt sets
    and λs default to the run's sweep (its validation sets and λs); `n` caps each set.

    Writes `diagnostics.csv`/`diagnostics.json` into the candidates' run; returns the table (`wb.plot`
    `.diagnostics_heatmaps` draws it).

        diag = wb.diagnose(lm, cands)
        diag[(diag.vector == "w'") & (diag.layer == 13)][["pos", "auroc_pseudo_vs_harmless"]]
    """
    run = _run_of(candidates)
    config = _diagnose_stage.DiagnoseConfig(
        harmless_val=_source(run, "harmless_val", harmless), harmful_val=_source(run, "harmful_val", harmful),
        pseudo_harmful_val=_source(run, "pseudo_harmful_val", pseudo_harmful), n_val=n, filter_val=filter,
        lams=None if lams is None else tuple(float(x) for x in lams), batch_size=batch_size)
    return _diagnose_stage.diagnose(lm, run, config)


# ---- reading a finished run -----------------------------------------------------------------------------------


def read_sweep(run: str | Path | RunDir) -> pd.DataFrame:
    """A run's sweep table with the rule's verdicts (`selection.csv`) where select ran, else `sweep.csv`.

        wb.read_sweep(wb.open_run()).query("stage == 'full'")
    """
    from workbench.stages.figures import sweep_frame

    return sweep_frame(_as_run(run).require_dir())


def read_evaluation(run: str | Path | RunDir) -> pd.DataFrame:
    """A run's `evaluation.csv`: compliance rate per dataset × intervention × judge, with Wilson bounds.

        evaluation = wb.read_evaluation(run) if run.file("evaluation.csv").exists() else None
    """
    from workbench.stages.evaluate import read_evaluation as read

    return read(_as_run(run))


def read_capability(run: str | Path | RunDir) -> pd.DataFrame:
    """A run's `capability.csv`: one value per task × intervention × metric (accuracy, perplexity).

        capability = wb.read_capability(run) if run.file("capability.csv").exists() else None
    """
    return _as_run(run).read_csv("capability.csv", columns=("task", "intervention", "metric", "value"),
                                 numeric_columns=("value",))


def read_completions(run: str | Path | RunDir) -> pd.DataFrame:
    """Every completion a run's evaluation generated, one row per dataset × intervention × prompt, with its labels.

        completions = wb.read_completions(run); completions[completions.intervention == "baseline"].head()
    """
    from workbench.stages.evaluate import read_completions as _read_completions

    return _read_completions(_as_run(run))


def open_run(path: str | Path | None = None, needs: tuple[str, ...] = ("selection.json",)) -> RunDir:
    """A finished run directory for reading: `path`, else `$WORKBENCH_RUN`, else `runs/default` (which `make run`
    writes), refused with what to do when it lacks an artifact in `needs`. Read its artifacts with
    `run.read_json(name)`, `run.read_csv(name)`, `run.file(name)`.

        run = wb.open_run(); selection = run.read_json("selection.json")
    """
    return _open_run(path, needs)


def main_judge(evaluation: pd.DataFrame) -> str:
    """The judge a run's figures read from `evaluation.csv`: the calibrated one it used, else the paper's substring
    judge.

        rates = evaluation[evaluation.judge == wb.main_judge(evaluation)]
    """
    return _figures.main_judge(evaluation)


def parse_intervention_name(name: str) -> tuple[float | None, float | None]:
    """(λ, α) of an evaluated intervention's name: `ablate_w_lam0.5+actadd_r_a1.0` → (0.5, 1.0); None where the
    name has no ablated w′ or no added r.

        wb.parse_intervention_name("actadd_r_a2.0")  # (None, 2.0)
    """
    return parse_name(name)


# ---- candidates, interventions, views -------------------------------------------------------------------------


def candidate_geometry(candidates: CandidateGrids) -> pd.DataFrame:
    """One row per (pos, layer): ‖r‖, ‖w‖, cos(r, w) and ‖w′‖/‖w‖ at λ = 1 (`kept_at_lam1`); NaN where r or w is zero.

        geometry = wb.candidate_geometry(cands); wb.plot.candidate_geometry_figure(geometry, sel).show()
    """
    return _candidate_geometry(candidates)


def applied(lm: LoadedModel, intervention: Intervention):
    """A context manager running the hooked model under `intervention` (`wb.Ablation`, `wb.Addition`, `wb.Combined`,
    or `wb.BASELINE`); its hooks are removed on exit, also when the body raises.

        with wb.applied(lm, wb.Combined((wb.Ablation(w_prime), wb.Addition(r, layer=12, coeff=1.0)))):
            wb.generate(lm, ["How do I kill a Python process?"])
    """
    return _applied(lm, intervention)


def token_projections(lm: LoadedModel, prompts: Sequence[tuple[str, str]],
                      directions: dict[str, Float[Tensor, " d_model"]], layer: int) -> list:
    """For (label, prompt) pairs: the chat-formatted tokens and each token's `resid_pre` projection at `layer` on
    each (normalized) direction; `wb.plot.projection_view` draws them.

        items = wb.token_projections(lm, [("pseudo-harmful", "How do I kill a Python process?")], {"ŵ′": w}, 13)
    """
    return _views.token_projections(lm, prompts, directions, layer)


def behaviour_tables(stock: dict, organism: dict) -> str:
    """Markdown tables of a model organism's measured behaviour against its stock model (a `behaviour.json`'s
    "stock" and "organism" entries).

        behaviour = json.loads((wb.ORGANISM_DIR / "behaviour.json").read_text())
        Markdown(wb.behaviour_tables(behaviour["stock"], behaviour["organism"]))
    """
    from workbench.organism.card import behaviour_tables as _behaviour_tables

    return _behaviour_tables(stock, organism)


# ---- figures --------------------------------------------------------------------------------------------------


def _selection_record(selection: "Selections | dict | None") -> dict | None:
    return selection.record if isinstance(selection, Selections) else selection


def _sweep_heatmaps(sweep: "pd.DataFrame | str | Path | RunDir", selection: "Selections | dict | None" = None,
                    lams: list[float] | None = None,
                    metrics: tuple[str, ...] = ("ablation_refusal_score_pseudo_harmful", "ablation_kl"),
                    mode: str | None = None,
                    n_screen: int | None = None):
    """Fig. 4: layer × position heatmaps of the sweep's ablation refusal score and KL, for r and each w′(λ), the
    selections marked ×. `sweep`: the table `wb.sweep` returned (or `wb.read_sweep`), or a run directory (its
    sweep, selection and sweep mode); `selection`: `wb.select`'s result or a `selection.json` dict.

        wb.plot.sweep_heatmaps(table, sel).show()
        wb.plot.sweep_heatmaps(run, metrics=("ablation_refusal_score_pseudo_harmful",)).show()
    """
    if not isinstance(sweep, pd.DataFrame):
        run = _as_run(sweep).require_dir()
        if selection is None and run.file("selection.json").exists():
            selection = run.read_json("selection.json", keys=("selections", "r"))
        recorded = _sweep_stage.recorded_sweep(run).config if run.file("sweep.json").exists() else None
        mode = mode or (recorded and recorded.mode)
        n_screen = n_screen if n_screen is not None else recorded.n_screen if recorded and mode == "fast" else None
        sweep = read_sweep(run)
    else:
        mode = mode or sweep.attrs.get("mode")
        n_screen = n_screen if n_screen is not None else sweep.attrs.get("n_screen")
    return _figures.sweep_heatmaps(sweep, _selection_record(selection), lams, metrics, mode, n_screen)


def _diagnostics_heatmaps(table: pd.DataFrame, selection: "Selections | dict | None" = None,
                          lam: float | None = None):
    """Direction diagnostics beside Fig. 4 (`wb.diagnose`'s table): cos(r, w), AUROC of ŵ′(λ) and r̂ between the
    prompt classes, and the zero-ablation shift of harmless prompts along ŵ′ and ŵ; the selection at λ marked ×.

        wb.plot.diagnostics_heatmaps(wb.diagnose(lm, cands), sel).show()
    """
    return _figures.diagnostics_heatmaps(table, _selection_record(selection), lam)


def _candidate_geometry_figure(geometry: pd.DataFrame, selection: "Selections | dict | None" = None):
    """‖r‖ and ‖w‖ per layer and heatmaps of cos(r, w) and of ‖w′‖/‖w‖ at λ = 1 (`wb.candidate_geometry`'s table),
    the selections marked ×.

        wb.plot.candidate_geometry_figure(wb.candidate_geometry(cands), sel).show()
    """
    return _figures.candidate_geometry_figure(geometry, _selection_record(selection))


class Plots:
    """The paper's figures (plotly) and the per-token view (HTML), as `wb.plot.<name>`:

        wb.plot.sweep_heatmaps(table, sel).show()                # Fig. 4
        wb.plot.diagnostics_heatmaps(wb.diagnose(lm, cands), sel).show()
        wb.plot.lambda_tradeoff(wb.read_evaluation(run)).show()  # Fig. 3
        wb.plot.table1(wb.read_evaluation(run))                  # Table 1, a DataFrame
    """

    sweep_heatmaps = staticmethod(_sweep_heatmaps)
    diagnostics_heatmaps = staticmethod(_diagnostics_heatmaps)
    candidate_geometry_figure = staticmethod(_candidate_geometry_figure)
    training_loss = staticmethod(_figures.training_loss)
    lambda_tradeoff = staticmethod(_figures.lambda_tradeoff)
    responses_table = staticmethod(_figures.responses_table)
    responses_figure = staticmethod(_figures.responses_figure)
    alpha_lambda_grid = staticmethod(_figures.alpha_lambda_grid)
    frontier_figure = staticmethod(_figures.frontier_figure)
    gate_heatmap = staticmethod(_figures.gate_heatmap)
    table1 = staticmethod(_figures.table1)
    save_figure = staticmethod(_figures.save_figure)
    projection_view = staticmethod(_views.projection_view)

    def __repr__(self) -> str:
        names = [n for n in vars(Plots) if not n.startswith("_")]
        return f"wb.plot: {', '.join(names)}"


plot = Plots()
"""The figure functions: `wb.plot.sweep_heatmaps(...)` etc. (see `Plots`)."""
