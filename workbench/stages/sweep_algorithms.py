"""Step 4–5 of the method: score every (vector, λ, position, layer) candidate. Three ways, each returning every row of
the grid (`CandidateRow`, one per candidate; `to_frame` makes the `sweep.csv` table):

- `fast_sweep` screens, then fully scores the finalists the rule can pick;
- `exact_sweep` gives every candidate every score on the whole validation sets, many candidates per forward pass;
- `reference_sweep` is the paper-style loop: one candidate at a time, every score (what the other two are checked
  against, in the tests and in `benchmarks/sweep.py`).

Scores: ablation refusal score on pseudo-harmful val (what selection minimizes), on harmful val (must stay high),
ablation KL on harmless val, and steering refusal score / KL from adding the vector at its layer.

Where the fast sweep saves time (a naive loop scores every candidate on every full validation set):
- baselines (unhooked logits of every validation set) are computed once and shared;
- candidates in the layers the selection rule prunes (its last fraction) and zero candidates (NaN) are not scored;
- a **screen** scores every remaining candidate on `n_screen` prompts of its target set and of harmless val,
  many candidates per forward pass (one direction per batch row);
- candidates get the full scores on the whole validation sets in order of screened refusal score (among those
  whose screened KL is within `screen_kl_margin` × the KL bound), stopping once the next one's screened score is
  `stop_margin` logits worse than the best full score so far (between `min_finalists` and `n_finalists`);
- the scorer reuses the template prefix's KV cache and unembeds only the last position (`CandidateScorer`);
- the true-refusal rows do not depend on λ, and a λ already in `sweep.csv` is not recomputed (the stage's job);
- steering scores (an extra pass) only where the rule uses them: true-refusal candidates (Arditi's filter), and
  false ones only with `steer_w` (the paper turns the induce-refusal filter off); likewise a finalist's
  harmful-val score only if its KL lets it be selected, and no pseudo-harmful score for true candidates
  (`score_all` computes everything).

The exact sweep skips the screen and scores as the reference loop does, batched: one ablated direction (or one added
steering vector) per group of batch rows, the prompts of the three sets together in pieces of similar token length,
the template prefix reused: exact heatmaps, and a sweep that any rule with the same pruning can select from.

The algorithms read the sweep stage's `SweepConfig` (λ values, grid restriction, screen settings); its speed
settings are the scorer's. They live beside the stage rather than in `eval/` because they read that config and the
selection rule, and in their own module so that the stage keeps only its records.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.eval.candidate_scorer import CandidateScorer
from workbench.method.grids import CandidateGrids
from workbench.method.refusal_math import kl_divergence, refusal_score
from workbench.method.rule import SelectionRule
from workbench.method.vectors import Vector, printed_candidate

if TYPE_CHECKING:
    from workbench.stages.sweep import SweepConfig

VAL_SETS = ("pseudo_harmful", "harmful", "harmless")


@dataclass
class CandidateRow:
    """One candidate of the grid and what the sweep found: a row of `sweep.csv` (the fields are its columns, in
    order). Scores not computed are NaN."""

    vector: Vector
    lam: float
    """λ of w′(λ); NaN for a true-refusal candidate (r̂ does not depend on λ)."""
    pos: int
    """EOI position as a negative offset (an entry of `CandidateGrids.positions`)."""
    layer: int
    ablation_refusal_score_pseudo_harmful: float = math.nan
    """Mean refusal score on pseudo-harmful val with the direction ablated."""
    ablation_refusal_score_harmful: float = math.nan
    """Mean refusal score on harmful val with the direction ablated."""
    ablation_kl: float = math.nan
    """Mean KL(unhooked ‖ ablated) on harmless val."""
    steering_refusal_score: float = math.nan
    """Mean refusal score on harmless val with the steering vector added at the candidate's layer."""
    steering_kl: float = math.nan
    screen_refusal_score: float = math.nan
    """The fast sweep's screen estimates (on `n_screen` prompts per set)."""
    screen_kl: float = math.nan
    stage: str = "screened"
    """"skipped" (not scored), "screened" (screen estimates only), "full" (scored on the whole sets)."""
    sweep_note: str = ""
    """Why a row was not fully scored ("" when it was)."""

    @property
    def is_r(self) -> bool:
        return self.vector == "r"

    @property
    def group(self) -> tuple[str, float]:
        """(vector, λ): the candidates that share one grid of directions."""
        return self.vector, self.lam

    @property
    def direction_lam(self) -> float | None:
        """λ as `CandidateGrids.directions` takes it: None for r̂."""
        return None if self.is_r else self.lam

    def cell(self, grids: CandidateGrids) -> tuple[int, int]:
        """(position index, layer): where the candidate sits in the grids' tensors."""
        return grids.positions.index(self.pos), self.layer

    def record(self) -> dict:
        """The row as `SelectionRule` reads it (column name → value)."""
        return asdict(self)


COLUMNS = [f.name for f in fields(CandidateRow)]
"""`sweep.csv`'s columns, in order."""
TEXT_COLUMNS = ("vector", "stage", "sweep_note")
NUMERIC_COLUMNS = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)


def to_frame(rows: list[CandidateRow]) -> pd.DataFrame:
    """The rows as the `sweep.csv` table."""
    return pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)


@dataclass
class ValidationSets:
    """The filtered validation prompts and their unhooked last-position logits (keys as the attribute names)."""

    pseudo_harmful: list[str]
    harmful: list[str]
    harmless: list[str]
    base_logits: dict[str, Float[Tensor, "_n vocab"]]
    """Per set: unhooked last-position logits, one row per kept prompt (sets differ in length)."""
    counts: dict[str, dict[str, int | str]]


def candidate_rows(grids: CandidateGrids, config: "SweepConfig", rule: SelectionRule,
                   include_r: bool = True) -> list[CandidateRow]:
    """Every candidate of the grid for r̂ (unless not `include_r`) and each λ of `config.lams`: "screened" (to
    score) or "skipped" with the reason (zero vector, pruned layer, outside the config's layers or positions)."""
    groups = ([("r", math.nan)] if include_r else []) + [("w'", lam) for lam in config.lams]
    rows = []
    for vector, lam in groups:
        for p, pos in enumerate(grids.positions):
            for layer in range(grids.n_layers):
                reason = ""
                if grids.is_zero(vector, p, layer):
                    reason = "zero vector (NaN)"
                elif pruned := rule.prune_reason(layer, grids.n_layers):
                    reason = pruned
                elif (config.layers is not None and layer not in config.layers) or (
                    config.positions is not None and pos not in config.positions
                ):
                    reason = "not in sweep grid"
                rows.append(CandidateRow(vector, lam, pos, layer, stage="skipped" if reason else "screened",
                                         sweep_note=reason))
    return rows


def _by_group(rows: list[CandidateRow]) -> dict[tuple[str, float], list[CandidateRow]]:
    """The rows per (vector, λ), the groups in a fixed order (as their keys sort as strings)."""
    return {k: [r for r in rows if r.group == k] for k in sorted({r.group for r in rows}, key=str)}


# ---- the full scores of one candidate -----------------------------------------------------------------------------


def score_full(scorer: CandidateScorer, row: CandidateRow, directions: Float[Tensor, "n_pos n_layer d_model"],
               grids: CandidateGrids, val: ValidationSets, config: "SweepConfig", rule: SelectionRule,
               steer: bool | None = None, score_all: bool | None = None) -> None:
    """The full scores of one candidate on the whole validation sets, into `row` (the code the reference loop runs).

    Unless `score_all`, only what `rule` can use: see `SweepConfig.score_all`.
    """
    p, layer = row.cell(grids)
    direction = directions[p, layer]
    harmless_base = val.base_logits["harmless"]
    score_all = config.score_all if score_all is None else score_all
    first_target = val.harmful if row.is_r else val.pseudo_harmful
    rs_first, row.ablation_kl = scorer.ablation_scores(direction, first_target, val.harmless, harmless_base)
    row.stage = "full"
    if row.is_r:
        row.ablation_refusal_score_harmful = rs_first
        if score_all:
            row.ablation_refusal_score_pseudo_harmful, _ = scorer.ablation_scores(direction, val.pseudo_harmful, [],
                                                                   harmless_base[:0])
    else:
        row.ablation_refusal_score_pseudo_harmful = rs_first
        if score_all or row.ablation_kl <= rule.kl_bound("w'"):
            row.ablation_refusal_score_harmful, _ = scorer.ablation_scores(direction, val.harmful, [],
                                                                           harmless_base[:0])
    if steer is None:
        steer = rule.needs_steering(row.vector) or config.steer_w
    if steer:
        vector = grids.steering_vectors(row.vector, row.direction_lam)[p, layer]
        row.steering_refusal_score, row.steering_kl = scorer.steering_scores(
            vector, layer, config.steering_coeff, val.harmless, harmless_base)


# ---- the three sweeps ---------------------------------------------------------------------------------------------


def fast_sweep(scorer: CandidateScorer, grids: CandidateGrids, val: ValidationSets, config: "SweepConfig",
               rule: SelectionRule, include_r: bool = True) -> list[CandidateRow]:
    """Screen every candidate, then fully score the finalists the rule can pick (see the module docstring)."""
    rows = candidate_rows(grids, config, rule, include_r)
    n = config.n_screen
    screen_harmless, screen_base = val.harmless[:n], val.base_logits["harmless"][:n]
    tokens = scorer.lm.info.refusal_tokens
    groups = _by_group([r for r in rows if r.stage == "screened"])
    directions = {key: grids.directions(key[0], None if key[0] == "r" else key[1]) for key in groups}

    # Screen: every scorable candidate on n prompts of its target set + n harmless prompts, many per forward.
    for key, group in groups.items():
        target = (val.pseudo_harmful if key[0] == "w'" else val.harmful)[:n]
        per_candidate = target + screen_harmless
        chunk = max(1, (scorer.batch_size * 2) // len(per_candidate))
        for start in tqdm(range(0, len(group), chunk), desc=f"screen {printed_candidate(*key)}", unit="batch"):
            part = group[start : start + chunk]
            dirs = torch.stack([directions[key][r.cell(grids)] for r in part])
            logits = scorer.ablated_logits(per_candidate * len(part), dirs, len(per_candidate))
            logits = logits.view(len(part), len(per_candidate), -1)
            for row, row_logits in zip(part, logits, strict=True):
                row.screen_refusal_score = refusal_score(row_logits[: len(target)], tokens).mean().item()
                row.screen_kl = kl_divergence(screen_base, row_logits[len(target) :]).mean().item()

    # Finalists, in order of screened refusal score among those whose screened KL is plausible under the rule's
    # bound: full scores until the next candidate's screened score is worse than the best full score of a candidate
    # the rule keeps by more than the screen's noise margin (or n_finalists are scored).
    harmful_baseline = refusal_score(val.base_logits["harmful"], tokens).mean().item()
    for key, group in groups.items():
        bound = rule.kl_bound(key[0])
        plausible = [r for r in group if r.screen_kl <= config.screen_kl_margin * bound]
        if len(plausible) < config.min_finalists:  # top up with the lowest screened KL, so min_finalists get scored
            rest = sorted((r for r in group if r not in plausible), key=lambda r: r.screen_kl)
            plausible += rest[: config.min_finalists - len(plausible)]
        objective = rule.objective(key[0])
        best, scored = math.inf, 0
        ordered = sorted(plausible, key=lambda r: r.screen_refusal_score)
        for row in tqdm(ordered[: config.n_finalists], desc=f"full scores {printed_candidate(*key)}", unit="candidate"):
            if scored >= config.min_finalists and row.screen_refusal_score > best + config.stop_margin:
                break
            score_full(scorer, row, directions[key], grids, val, config, rule)
            scored += 1
            if rule.eligible(row.record(), grids.n_layers, harmful_baseline):
                best = min(best, getattr(row, objective))
        for row in group:
            if row.stage != "full":
                row.sweep_note = "screened out"
    return rows


def exact_sweep(scorer: CandidateScorer, grids: CandidateGrids, val: ValidationSets, config: "SweepConfig",
                rule: SelectionRule, include_r: bool = True) -> list[CandidateRow]:
    """Every candidate of the grid (not pruned, not zero) with every score on the whole validation sets, as the
    reference loop gives, many candidates per forward pass: one ablated direction per group of batch rows over the
    three sets at once, then one added steering vector per group over harmless val."""
    rows = candidate_rows(grids, config, rule, include_r)
    prompts = [p for name in VAL_SETS for p in getattr(val, name)]
    base = torch.cat([val.base_logits[name] for name in VAL_SETS])
    ends = [len(val.pseudo_harmful), len(val.pseudo_harmful) + len(val.harmful), len(prompts)]
    for key, group in _by_group([r for r in rows if r.stage == "screened"]).items():
        lam = None if key[0] == "r" else key[1]
        directions, steering = grids.directions(key[0], lam), grids.steering_vectors(key[0], lam)
        cells = [r.cell(grids) for r in group]
        dirs = torch.stack([directions[cell] for cell in cells])
        vecs = torch.stack([steering[cell] for cell in cells])
        # KL is computed on every row (cheap next to the forward pass) and read on the harmless ones only.
        rs, kl = scorer.ablation_per_prompt(prompts, base, dirs, f"exact ablation {printed_candidate(*key)}")
        steer_rs, steer_kl = scorer.steering_per_prompt(val.harmless, val.base_logits["harmless"], vecs,
                                                        [layer for _, layer in cells], config.steering_coeff,
                                                        f"exact steering {printed_candidate(*key)}")
        for i, row in enumerate(group):
            row.ablation_refusal_score_pseudo_harmful = rs[i, : ends[0]].mean().item()
            row.ablation_refusal_score_harmful = rs[i, ends[0] : ends[1]].mean().item()
            row.ablation_kl = kl[i, ends[1] :].mean().item()
            row.steering_refusal_score, row.steering_kl = steer_rs[i].mean().item(), steer_kl[i].mean().item()
            row.stage, row.sweep_note = "full", ""
    return rows


def reference_sweep(scorer: CandidateScorer, grids: CandidateGrids, val: ValidationSets, config: "SweepConfig",
                    rule: SelectionRule, cells: list[tuple[int, int]] | None = None,
                    include_r: bool = True) -> list[CandidateRow]:
    """The paper-style loop: every candidate, one at a time, every score on the full validation sets (run it with
    a scorer that neither shares the prefix nor unembeds only the last position to time it as the paper's code).

    Returns every row of the grid, like `fast_sweep` (cells it does not score keep stage "skipped" and a reason;
    `cells`: only these (position index, layer)). `rule` only says which layers are pruned (not scored); every other
    candidate gets every score.
    """
    rows = candidate_rows(grids, config, rule, include_r)
    for r in rows:
        if r.stage == "screened" and cells is not None and r.cell(grids) not in cells:
            r.stage, r.sweep_note = "skipped", "not in sweep grid"
    directions = {}
    for row in tqdm([r for r in rows if r.stage == "screened"], desc="reference", unit="candidate"):
        if row.group not in directions:
            directions[row.group] = grids.directions(row.vector, row.direction_lam)
        score_full(scorer, row, directions[row.group], grids, val, config, rule, steer=True, score_all=True)
    return rows
