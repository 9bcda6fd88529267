"""The sweep stage: score every (vector, λ, position, layer) candidate of a run and record the scores.

`SweepConfig` says what is scored and how (`mode`: "fast" screens then fully scores the finalists the rule can
pick; "exact" fully scores every candidate); the algorithms are in `workbench.stages.sweep_algorithms` and the
forward passes behind them in `workbench.eval.candidate_scorer.CandidateScorer`. This module loads the validation
sets, runs the sweep the config asks for, and records it: rows already in `sweep.csv` that were scored with the
same settings and rule are reused (a λ already swept is not scored again, nor the true-refusal rows, which do not
depend on λ).

`sweep.csv` belongs to this stage: one row per candidate with its scores, `stage` (skipped, screened, full) and
`sweep_note` (why a row was not fully scored). Which rows the rule keeps is the select stage's `selection.csv`.
`sweep.json` records the settings (`SweepConfig` and the rule it was screened for), the validation counts and the
unablated baselines.
"""

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, get_args

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from workbench.data import check_prompt_source, load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.candidate_scorer import CandidateScorer
from workbench.eval.scoring import last_position_logits
from workbench.interventions.hooks import ABLATION_TARGETS
from workbench.io import atomic_write, write_json
from workbench.method.grids import CandidateGrids
from workbench.method.prompt_filter import keep_for, kept
from workbench.method.refusal_math import refusal_score
from workbench.method.rule import SelectionRule
from workbench.method.vectors import Vector
from workbench.models.loader import LoadedModel
from workbench.stages import sweep_algorithms
from workbench.stages.base import Stage
from workbench.stages.config_file import read_recorded
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs
from workbench.stages.sweep_algorithms import (
    COLUMNS,
    NUMERIC_COLUMNS,
    TEXT_COLUMNS,
    CandidateRow,
    ValidationSets,
    to_frame,
)

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

MODES = ("fast", "exact")
"""`SweepConfig.mode`: screen then finalists, or every candidate fully scored."""


@dataclass(frozen=True)
class SweepConfig:
    """What `workbench sweep` scores, and how hard it prunes."""

    mode: str = "fast"
    """"fast": screen every candidate on `n_screen` prompts, then fully score the finalists the rule can pick;
    "exact": every candidate of the grid gets every score on the whole validation sets (the screen and finalist
    settings are then unused)."""
    lams: tuple[float, ...] = (1.0,)
    """λ values of the partial orthogonalization w' = w − λ·proj_r(w) (1: keep true refusal intact)."""
    ablation: str = "zero"
    """How the ablation scores ablate each candidate ĉ: "zero" (x ← x − (x·ĉ)ĉ) or "harmless_mean" (the affine
    ablation: block inputs get the harmless mean projection M_l·ĉ instead, from the run's `token_means.safetensors`,
    computed when missing). Steering scores do not depend on it."""
    pseudo_harmful_val: str = "bundled_pseudo_harmful_val"
    """Pseudo-harmful validation prompts (ablation refusal score is minimized here)."""
    harmful_val: str = "bundled_harmful_val"
    """Harmful validation prompts (ablation refusal score should stay high)."""
    harmless_val: str = "bundled_harmless_val"
    """Harmless validation prompts (KL and steering)."""
    n_val: int | None = 32
    """Prompts per validation set (before filtering)."""
    filter_val: bool = True
    """The paper's filter on validation prompts: harmful/pseudo-harmful refused (score > 0), harmless not (< 0)."""
    layers: tuple[int, ...] | None = None
    """Only these layers (None: all); other cells are listed as skipped."""
    positions: tuple[int, ...] | None = None
    """Only these EOI positions as negative offsets, e.g. (-1, -6) (None: all)."""
    n_screen: int = 6
    """Prompts per set in the screen."""
    n_finalists: int = 8
    """At most this many candidates per (vector, λ) get full scores."""
    min_finalists: int = 3
    """At least this many (when the screen leaves that many)."""
    stop_margin: float = 1.0
    """Stop full-scoring once the next candidate's screened refusal score exceeds the best full score (of a
    candidate within the KL bound) by this many logits."""
    screen_kl_margin: float = 2.0
    """A finalist's screened KL must be ≤ margin × the rule's KL bound (screens on few prompts are noisy)."""
    steer_w: bool = False
    """Also compute steering scores for false-refusal candidates (the rule's induce-refusal filter turns this on)."""
    steering_coeff: float = 1.0
    """α for the steering score: x ← x + α·v at the candidate's layer (v raw; w' rescaled to ‖w‖)."""
    batch_size: int = 32
    """Rows per forward pass."""
    share_prefix: bool = True
    """Run the template prefix (system turn, user header) once per intervention and reuse its KV cache."""
    last_logits_only: bool = True
    """Unembed only the last position (the one every score reads); off, every position's logits are computed,
    as the paper's code does."""
    score_all: bool = False
    """Give finalists every score. Off: a false candidate's harmful-val refusal score only when its KL is within
    the rule's bound (only those can be selected), and a true candidate's pseudo-harmful score not at all (its rule
    does not use it). The reference loop always scores everything."""

    def validate(self) -> None:
        if self.mode not in MODES:
            raise WorkbenchError(f"unknown sweep mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.ablation not in ABLATION_TARGETS:
            raise WorkbenchError(f"unknown sweep ablation {self.ablation!r}: use one of {', '.join(ABLATION_TARGETS)}")
        for lam in self.lams:
            if not (isinstance(lam, int | float) and 0.0 <= lam <= 1.0):
                raise WorkbenchError(f"λ must be in [0, 1], got {lam}")
        if not self.lams:
            raise WorkbenchError("give at least one λ")
        for name in ("n_screen", "n_finalists", "min_finalists", "batch_size"):
            if getattr(self, name) < 1:
                raise WorkbenchError(f"sweep {name} must be at least 1, got {getattr(self, name)}")
        if self.n_val is not None and self.n_val < 1:
            raise WorkbenchError(f"sweep n_val must be at least 1 (or None for all), got {self.n_val}")
        for name in ("stop_margin", "screen_kl_margin"):
            if not getattr(self, name) >= 0:
                raise WorkbenchError(f"sweep {name} must be ≥ 0, got {getattr(self, name)}")
        if not math.isfinite(self.steering_coeff):
            raise WorkbenchError(f"sweep steering_coeff must be finite, got {self.steering_coeff}")
        for name in (self.pseudo_harmful_val, self.harmful_val, self.harmless_val):
            check_prompt_source(name)


def load_validation(lm: LoadedModel, config: SweepConfig) -> ValidationSets:
    """The three validation sets, filtered as the paper does, with their unhooked last-position logits."""
    sets, logits, counts = {}, {}, {}
    names = {"pseudo_harmful": config.pseudo_harmful_val, "harmful": config.harmful_val,
             "harmless": config.harmless_val}
    for key, name in names.items():
        prompts = [p.instruction for p in load_prompts(name, limit=config.n_val)]
        base = last_position_logits(lm, prompts, config.batch_size, last_only=config.last_logits_only)
        if config.filter_val:
            scores = refusal_score(base, lm.info.refusal_tokens)
            keep = kept(scores, keep_for(key))
            if not bool(keep.any()):
                raise WorkbenchError(
                    f"the refusal-score filter removed every {key} validation prompt of {name!r}: "
                    "pass --no-filter-val to keep them all"
                )
            prompts = [p for p, k in zip(prompts, keep.tolist(), strict=True) if k]
            base = base[keep]
        sets[key], logits[key] = prompts, base
        counts[key] = {"dataset": name, "kept": len(prompts)}
    return ValidationSets(sets["pseudo_harmful"], sets["harmful"], sets["harmless"], logits, counts)


def candidate_scorer(lm: LoadedModel, config: SweepConfig,
                     token_means: Float[Tensor, "n_layer d_model"] | None = None) -> CandidateScorer:
    """The scorer with the config's speed settings (and, for the affine ablation, the run's token means)."""
    return CandidateScorer(lm, batch_size=config.batch_size, share_prefix=config.share_prefix,
                           last_logits_only=config.last_logits_only, token_means=token_means)


def sweep_candidates(scorer: CandidateScorer, grids: CandidateGrids, val: ValidationSets, config: SweepConfig,
                     rule: SelectionRule, include_r: bool = True) -> list[CandidateRow]:
    """The sweep `config.mode` asks for: `fast_sweep` or `exact_sweep`."""
    sweeps = {"fast": sweep_algorithms.fast_sweep, "exact": sweep_algorithms.exact_sweep}
    if config.mode not in sweeps:
        raise WorkbenchError(f"unknown sweep mode {config.mode!r}: use one of {', '.join(MODES)}")
    return sweeps[config.mode](scorer, grids, val, config, rule, include_r)


# ---- the stage ------------------------------------------------------------------------------------------------


SPEED_ONLY = ("lams", "batch_size", "share_prefix", "last_logits_only")
"""SweepConfig fields that do not change which candidates get which scores (λ values are reused per λ)."""


def settings_record(config: SweepConfig, rule: SelectionRule) -> dict:
    """What `sweep.json` records of how candidates were scored: the sweep config and the rule it was screened for."""
    return json.loads(json.dumps({**asdict(config), "rule": asdict(rule)}))  # tuples become lists, as in JSON


FAST_ONLY = ("n_screen", "n_finalists", "min_finalists", "stop_margin", "screen_kl_margin", "steer_w", "score_all")
"""SweepConfig fields the exact mode does not read (it gives every candidate every score)."""


def _scoring_settings(record: dict) -> dict:
    """What decides a sweep's rows: the record less speed-only settings; for an exact sweep also less the fast
    mode's settings and of the rule only its pruning (which candidates are scored), since every one gets every
    score."""
    settings = {k: v for k, v in record.items() if k not in SPEED_ONLY}
    settings["rule"] = SelectionRule.screening_record(settings["rule"])
    if settings["mode"] == "exact":
        settings = {k: v for k, v in settings.items() if k not in FAST_ONLY}
        settings["rule"] = {"prune_layer_fraction": settings["rule"]["prune_layer_fraction"]}
    return settings


def same_settings(recorded: "RecordedSweep", config: SweepConfig, rule: SelectionRule) -> bool:
    """Whether a recorded sweep scored candidates as `config` and `rule` would: λ values and speed-only settings
    (batch size, prefix reuse, last-position unembedding) aside. The mode counts (a fast sweep is not reused for an
    exact request); an exact sweep serves any rule with the same pruning."""
    return (_scoring_settings(settings_record(recorded.config, recorded.rule))
            == _scoring_settings(settings_record(config, rule)))


def run_sweep(lm: LoadedModel, run: RunDir, config: SweepConfig, rule: SelectionRule | None = None) -> pd.DataFrame:
    """Score the run's candidates at every λ in `config.lams` for `rule` (default: the paper's), reusing rows
    already in `sweep.csv` that were scored with the same settings and rule."""
    from workbench.stages.extract import load_candidates

    rule = rule or SelectionRule()
    config.validate()
    rule.validate()
    run.check_model(lm.info.fingerprint, lm.info.name)
    grids = load_candidates(run)
    if grids.d_model != lm.info.d_model:
        raise WorkbenchError(f"candidates in {run.path} have width {grids.d_model}, "
                             f"the model has d_model {lm.info.d_model}")
    previous, done_lams, include_r = None, set(), True
    recorded = _previous_sweep(run)
    if recorded is not None and same_settings(recorded.settings, config, rule):
        previous = recorded.frame
        done_lams = {float(x) for x in previous.loc[previous.vector == "w'", "lam"].unique()}
        include_r = not (previous.vector == "r").any()
    new_lams = tuple(lam for lam in config.lams if float(lam) not in done_lams)
    val = load_validation(lm, config)
    token_means = None
    if config.ablation == "harmless_mean":
        from workbench.stages.token_means import ensure_token_means

        token_means = ensure_token_means(lm, run)
    parts = [] if previous is None else [previous]
    if new_lams or include_r:
        rows = sweep_candidates(candidate_scorer(lm, config, token_means), grids, val, replace(config, lams=new_lams),
                                rule, include_r)
        parts.append(to_frame(rows))
    frame = pd.concat(parts, ignore_index=True)
    atomic_write(run.file("sweep.csv"), lambda tmp: frame.to_csv(tmp, index=False))
    baseline = {k: refusal_score(v, lm.info.refusal_tokens).mean().item() for k, v in val.base_logits.items()}
    all_lams = sorted({float(x) for x in frame.loc[frame.vector == "w'", "lam"]}, reverse=True)
    write_json(run.file("sweep.json"), {"config": {**settings_record(config, rule), "lams": all_lams},
                                        "n_layers": grids.n_layers, "validation": val.counts,
                                        "baseline_refusal_score": baseline, "model": lm.info.to_dict(),
                                        **provenance()})
    return frame


def read_sweep(run: RunDir) -> pd.DataFrame:
    """The run's `sweep.csv`, checked: its columns, numbers where numbers belong, and `vector` "r" or "w'"."""
    frame = run.read_csv("sweep.csv", columns=COLUMNS, text_columns=TEXT_COLUMNS, numeric_columns=NUMERIC_COLUMNS)
    unknown = sorted(set(frame.vector) - set(get_args(Vector)))
    if unknown:
        raise run.corrupted("sweep.csv", f"vector {unknown[0]!r} is neither 'r' nor \"w'\"")
    return frame


@dataclass(frozen=True)
class RecordedSweep:
    """How a run's sweep scored its candidates (`sweep.json`): its config (`lams`: every λ scored) and the rule it
    was screened for."""
    config: SweepConfig
    rule: SelectionRule


def recorded_sweep(run: RunDir) -> RecordedSweep:
    """The run's `sweep.json` settings rebuilt through SweepConfig and SelectionRule (a missing or unknown field is
    a one-line error naming the file)."""
    artifact = run.read_json("sweep.json", keys=("config",))
    config = read_recorded(run, "sweep.json", SweepConfig, besides=("rule",), artifact=artifact)
    record = artifact["config"]
    if not isinstance(record.get("rule"), dict):
        raise run.corrupted("sweep.json", "no selection rule recorded")
    try:
        return RecordedSweep(config, SelectionRule.from_record(record["rule"]))
    except (TypeError, WorkbenchError) as exc:
        raise run.corrupted("sweep.json", str(exc)) from None


@dataclass(frozen=True)
class PreviousSweep:
    """A run's finished sweep: how it scored (`sweep.json`) and its rows (`sweep.csv`), each read once."""

    settings: RecordedSweep
    frame: pd.DataFrame


def _previous_sweep(run: RunDir) -> PreviousSweep | None:
    """The run's recorded sweep if `sweep.json` and `sweep.csv` both exist and read back, else None (a damaged
    sweep, or one recorded by another workbench version, is scored again)."""
    if not (run.file("sweep.csv").exists() and run.file("sweep.json").exists()):
        return None
    try:
        return PreviousSweep(recorded_sweep(run), read_sweep(run))
    except WorkbenchError:
        return None


def _is_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    previous = _previous_sweep(run)
    if previous is None:
        return False
    return (same_settings(previous.settings, config.sweep, config.select)
            and set(map(float, config.sweep.lams)) <= set(map(float, previous.settings.config.lams)))


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    frame = run_sweep(lm, run, config.sweep, config.select)
    return (f"{int((frame.stage == 'full').sum())} candidates fully scored, "
            f"{int((frame.stage == 'screened').sum())} screened out, {int((frame.stage == 'skipped').sum())} skipped")


STAGE = Stage("sweep", inputs=STAGE_INPUTS["sweep"], outputs=stage_outputs("sweep"),
              execute=_run, is_done=_is_done)
