"""Step 4–5 of the method: score every (vector, λ, position, layer) candidate, fast.

Scores: ablation refusal score on pseudo-harmful val (what selection minimizes), on harmful val (must
stay high), ablation KL on harmless val, and steering refusal score / KL from adding the vector at its layer.

Where the time goes and what we skip (a naive loop scores every candidate on every full validation set):
- baselines (unhooked logits of every validation set) are computed once and shared;
- candidates in the layers the selection rule prunes (its last fraction) and zero candidates (NaN) are not scored;
- a **screen** scores every remaining candidate on `n_screen` prompts of its target set and of harmless val,
  many candidates per forward pass (one direction per batch row);
- candidates get the full scores on the whole validation sets in order of screened refusal score (among those
  whose screened KL is within `screen_kl_margin` × the KL bound), stopping once the next one's screened score is
  `stop_margin` logits worse than the best full score so far (between `min_finalists` and `n_finalists`);
- the template prefix shared by every prompt (SmolLM2: a 30-token system turn) is computed once per intervention
  and its KV cache reused (`share_prefix`);
- only the last position is unembedded (`last_logits_only`: SmolLM2's unembedding is ≈ 19% of its per-token
  compute, and every score reads the last position only);
- the true-refusal rows do not depend on λ, and a λ already in `sweep.csv` is not recomputed.
- steering scores (an extra pass) only where the rule uses them: true-refusal candidates (Arditi's filter), and
  false ones only with `steer_false` (the paper turns the induce-refusal filter off); likewise a finalist's
  harmful-val score only if its KL lets it be selected, and no pseudo-harmful score for true candidates
  (`score_all` computes everything).
`reference_sweep` is the naive loop; `benchmarks/sweep.py` compares both and checks they select the same winner.

`SweepConfig.mode = "exact"` (`exact_sweep`) skips the screen: every candidate of the grid (not pruned, not zero)
gets every score on the whole validation sets, as in the reference loop, still many candidates per forward pass
(one ablated direction, or one added steering vector, per batch row) with the template prefix reused: exact
heatmaps, and a sweep that any rule with the same pruning can select from.

`sweep.csv` belongs to this stage: one row per candidate with its scores, `stage` (skipped, screened, full) and
`sweep_note` (why a row was not fully scored). Which rows the rule keeps is the select stage's `selection.csv`.
"""

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.data import check_prompt_source, load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.scoring import grouped_last_logits, last_only_kwargs, last_position_logits
from workbench.interventions.hooks import ABLATION_TARGETS, ablation_hooks, addition_hooks
from workbench.io import atomic_write, write_json
from workbench.method.grids import CandidateGrids
from workbench.method.refusal_math import affine_offsets, kl_divergence, refusal_score
from workbench.method.rule import SelectionRule
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage
from workbench.stages.config_file import read_recorded
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

COLUMNS = [
    "vector", "lam", "pos", "layer", "ablation_refusal_score", "ablation_refusal_score_harmful", "ablation_kl",
    "steering_refusal_score", "steering_kl", "screen_refusal_score", "screen_kl", "stage", "sweep_note",
]  # fmt: skip
TEXT_COLUMNS = ("vector", "stage", "sweep_note")
MODES = ("fast", "exact")
"""`SweepConfig.mode`: screen then finalists, or every candidate fully scored."""
NUMERIC_COLUMNS = tuple(c for c in COLUMNS if c not in TEXT_COLUMNS)


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
    steer_false: bool = False
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


@dataclass
class ValidationSets:
    """The filtered validation prompts and their unhooked last-position logits (keys as the attribute names)."""

    pseudo_harmful: list[str]
    harmful: list[str]
    harmless: list[str]
    base_logits: dict[str, Float[Tensor, "_n vocab"]]
    """Per set: unhooked last-position logits, one row per kept prompt (sets differ in length)."""
    counts: dict[str, dict[str, int | str]]
    token_means: Float[Tensor, "n_layer d_model"] | None = None
    """The run's harmless token means M when the ablation scores are affine (`SweepConfig.ablation`), else None."""


def load_validation(lm: LoadedModel, config: SweepConfig) -> ValidationSets:
    """The three validation sets, filtered as the paper does, with their unhooked last-position logits."""
    sets, logits, counts = {}, {}, {}
    rules = {"pseudo_harmful": "refuses", "harmful": "refuses", "harmless": "complies"}
    names = {"pseudo_harmful": config.pseudo_harmful_val, "harmful": config.harmful_val,
             "harmless": config.harmless_val}
    for key, name in names.items():
        prompts = [p.instruction for p in load_prompts(name, limit=config.n_val)]
        base = last_position_logits(lm, prompts, config.batch_size, last_only=config.last_logits_only)
        if config.filter_val:
            scores = refusal_score(base, lm.info.refusal_tokens)
            keep = scores > 0 if rules[key] == "refuses" else scores < 0
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


# ---- scoring primitives (one per-row-direction forward serves many candidates) ------------------------------


@torch.inference_mode()
def _grouped_logits(lm: LoadedModel, prompts: list[str], n_groups: int, group_size: int,
                    hooks: Callable[[slice, int], list], batch_size: int, share_prefix: bool = True,
                    last_only: bool = True) -> Float[Tensor, "n vocab"]:
    """Last-position logits; consecutive groups of `group_size` prompts each under their own intervention:
    `hooks(groups, k)` gives the hooks of the groups in the slice `groups` with each group's row repeated k times.

    With `share_prefix`, each group runs the template prefix once and reuses its KV cache (see
    `scoring.grouped_last_logits`); otherwise, or if the tokenizer does not split at the prefix, every row runs in
    full under its group's intervention (unembedding every position unless `last_only`).
    """
    groups_per_batch = max(1, batch_size // group_size)
    extra = last_only_kwargs(lm, last_only)
    out = []
    for g in range(0, n_groups, groups_per_batch):
        part = slice(g, min(g + groups_per_batch, n_groups))
        n = part.stop - part.start
        chunk = prompts[g * group_size : (g + n) * group_size]
        logits = (grouped_last_logits(lm, chunk, lambda k, part=part: hooks(part, k), n, group_size)
                  if share_prefix else None)
        if logits is None:
            batch = lm.chat.tokenize(chunk, device=lm.device)
            with lm.model.hooks(fwd_hooks=hooks(part, group_size)):
                logits = lm.model(batch.input_ids, attention_mask=batch.attention_mask,
                                  **extra)[:, -1, :].float().cpu()
        out.append(logits)
    return torch.cat(out)


def _ablated_logits(lm: LoadedModel, prompts: list[str], directions: Float[Tensor, "n_groups d_model"],
                    group_size: int, batch_size: int, share_prefix: bool = True,
                    last_only: bool = True, token_means: Float[Tensor, "n_layer d_model"] | None = None
                    ) -> Float[Tensor, "n vocab"]:
    """Last-position logits; consecutive groups of `group_size` prompts each ablate one of `directions` [n_groups, d]
    (`_grouped_logits`); with `token_means` M, affinely: each direction's block inputs get the offsets M·ĉ."""

    directions = directions.to(lm.device)
    offsets = None if token_means is None else affine_offsets(token_means, directions)

    def hooks(groups: slice, k: int) -> list:
        return ablation_hooks(directions[groups].repeat_interleave(k, dim=0), lm.info.n_layers,
                              None if offsets is None else offsets[groups].repeat_interleave(k, dim=0))

    return _grouped_logits(lm, prompts, directions.shape[0], group_size, hooks, batch_size, share_prefix, last_only)


def _steered_logits(lm: LoadedModel, prompts: list[str], vectors: Float[Tensor, "n_groups d_model"],
                    layers: list[int], coeff: float, group_size: int, batch_size: int, share_prefix: bool = True,
                    last_only: bool = True) -> Float[Tensor, "n vocab"]:
    """Last-position logits; consecutive groups of `group_size` prompts each add coeff·`vectors[g]` at the input of
    block `layers[g]` (one hook per layer in the batch, adding zero to the rows of other layers' groups)."""
    vectors = vectors.to(lm.device)
    layer_of = torch.tensor(layers, device=lm.device)

    def hooks(groups: slice, k: int) -> list:
        rows, row_layers = vectors[groups], layer_of[groups]
        out = []
        for layer in sorted(set(row_layers.tolist())):
            masked = torch.where((row_layers == layer)[:, None], rows, torch.zeros_like(rows))
            out += addition_hooks(masked.repeat_interleave(k, dim=0), layer, coeff)
        return out

    return _grouped_logits(lm, prompts, vectors.shape[0], group_size, hooks, batch_size, share_prefix, last_only)


def ablation_scores(
    lm: LoadedModel, direction: Float[Tensor, " d_model"], target: list[str], harmless: list[str],
    harmless_base: Float[Tensor, "n_harmless vocab"], config: SweepConfig,
    token_means: Float[Tensor, "n_layer d_model"] | None = None,
) -> tuple[float, float]:
    """Mean refusal score on `target` and mean KL on `harmless` with one direction ablated (affinely with the
    offsets M·ĉ when `token_means` M is given)."""
    prompts = target + harmless
    logits = []
    for start in range(0, len(prompts), config.batch_size):
        chunk = prompts[start : start + config.batch_size]
        logits.append(_ablated_logits(lm, chunk, direction[None], len(chunk), config.batch_size, config.share_prefix,
                                      config.last_logits_only, token_means))
    logits = torch.cat(logits)
    rs = refusal_score(logits[: len(target)], lm.info.refusal_tokens).mean().item() if target else math.nan
    kl = kl_divergence(harmless_base, logits[len(target) :]).mean().item() if harmless else math.nan
    return rs, kl


def steering_scores(
    lm: LoadedModel, vector: Float[Tensor, " d_model"], layer: int, coeff: float, harmless: list[str],
    harmless_base: Float[Tensor, "n_harmless vocab"], batch_size: int, last_only: bool = True,
) -> tuple[float, float]:
    """Mean refusal score and KL on harmless prompts with α·vector added at `layer` (the induce-refusal test)."""
    logits = last_position_logits(lm, harmless, batch_size, addition_hooks(vector.to(lm.device), layer, coeff),
                                  last_only=last_only)
    return (refusal_score(logits, lm.info.refusal_tokens).mean().item(),
            kl_divergence(harmless_base, logits).mean().item())


# ---- the fast sweep -------------------------------------------------------------------------------------------


def _candidate_rows(grids: CandidateGrids, lams: tuple[float, ...], config: SweepConfig, rule: SelectionRule,
                    include_true: bool) -> list[dict]:
    groups = ([("true", math.nan)] if include_true else []) + [("false", lam) for lam in lams]
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
                rows.append({"vector": vector, "lam": lam, "pos": pos, "pos_index": p, "layer": layer,
                             "stage": "skipped" if reason else "screened", "sweep_note": reason})
    return rows


def fast_sweep(lm: LoadedModel, grids: CandidateGrids, val: ValidationSets, config: SweepConfig,
               rule: SelectionRule, include_true: bool = True) -> pd.DataFrame:
    """Screen every candidate, then fully score the finalists the rule can pick (see the module docstring)."""
    rows = _candidate_rows(grids, config.lams, config, rule, include_true)
    n = config.n_screen
    screen_harmless, screen_base = val.harmless[:n], val.base_logits["harmless"][:n]
    directions = {}
    for vector, lam in {(r["vector"], r["lam"]) for r in rows}:
        directions[(vector, lam)] = grids.directions(vector, None if vector == "true" else lam)

    def key(row):
        return (row["vector"], row["lam"])

    # Screen: every scorable candidate on n prompts of its target set + n harmless prompts, many per forward.
    todo = [r for r in rows if r["stage"] == "screened"]
    for group_key in sorted({key(r) for r in todo}, key=str):
        group = [r for r in todo if key(r) == group_key]
        target = (val.pseudo_harmful if group_key[0] == "false" else val.harmful)[:n]
        per_candidate = target + screen_harmless
        chunk = max(1, (config.batch_size * 2) // len(per_candidate))
        desc = f"screen {group_key[0]}" + ("" if group_key[0] == "true" else f" λ={group_key[1]}")
        for start in tqdm(range(0, len(group), chunk), desc=desc, unit="batch"):
            part = group[start : start + chunk]
            dirs = torch.stack([directions[group_key][r["pos_index"], r["layer"]] for r in part])
            logits = _ablated_logits(lm, per_candidate * len(part), dirs, len(per_candidate),
                                     len(per_candidate) * len(part), config.share_prefix, config.last_logits_only,
                                     val.token_means)
            logits = logits.view(len(part), len(per_candidate), -1)
            for row, row_logits in zip(part, logits, strict=True):
                row["screen_refusal_score"] = refusal_score(row_logits[: len(target)],
                                                            lm.info.refusal_tokens).mean().item()
                row["screen_kl"] = kl_divergence(screen_base, row_logits[len(target) :]).mean().item()

    # Finalists, in order of screened refusal score among those whose screened KL is plausible under the rule's
    # bound: full scores until the next candidate's screened score is worse than the best full score of a candidate
    # the rule keeps by more than the screen's noise margin (or n_finalists are scored).
    harmful_baseline = refusal_score(val.base_logits["harmful"], lm.info.refusal_tokens).mean().item()
    for group_key in sorted({key(r) for r in todo}, key=str):
        group = [r for r in todo if key(r) == group_key]
        bound = rule.kl_bound(group_key[0])
        plausible = [r for r in group if r["screen_kl"] <= config.screen_kl_margin * bound]
        if len(plausible) < config.min_finalists:  # top up with the lowest screened KL, so min_finalists get scored
            rest = sorted((r for r in group if r not in plausible), key=lambda r: r["screen_kl"])
            plausible += rest[: config.min_finalists - len(plausible)]
        objective = rule.objective(group_key[0])
        best, scored = math.inf, 0
        ordered = sorted(plausible, key=lambda r: r["screen_refusal_score"])
        desc = f"full scores {group_key[0]}" + ("" if group_key[0] == "true" else f" λ={group_key[1]}")
        for row in tqdm(ordered[: config.n_finalists], desc=desc, unit="candidate"):
            if scored >= config.min_finalists and row["screen_refusal_score"] > best + config.stop_margin:
                break
            score_full(lm, row, directions[key(row)], grids, val, config, rule)
            scored += 1
            if rule.eligible(row, grids.n_layers, harmful_baseline):
                best = min(best, row[objective])
    for row in todo:
        if row["stage"] != "full":
            row["sweep_note"] = "screened out"
    return to_frame(rows)


def _per_prompt_scores(lm: LoadedModel, prompts: list[str], base: Float[Tensor, "n_prompts vocab"], n_groups: int,
                       logits_of: Callable[[list[str], slice], Float[Tensor, "n vocab"]],
                       config: SweepConfig, desc: str) -> tuple[Float[Tensor, "n_groups n_prompts"],
                                                              Float[Tensor, "n_groups n_prompts"]]:
    """Refusal score and KL from `base` of every prompt under each of `n_groups` interventions.

    `logits_of(piece, groups)` gives the logits of `piece` (consecutive prompts) under each group in the slice
    `groups`, group-major. The prompts go in pieces of at most `batch_size`, and each forward pass takes as many
    groups as fit in `batch_size` rows; logits are reduced to scores at once (they would not fit in memory).
    """
    rs = torch.empty(n_groups, len(prompts), dtype=torch.float64)  # float64, as `refusal_score` and `kl_divergence`
    kl = torch.empty(n_groups, len(prompts), dtype=torch.float64)
    pieces = [(start, prompts[start : start + config.batch_size]) for start in range(0, len(prompts),
                                                                                        config.batch_size)]
    steps = [(start, piece, slice(g, min(g + max(1, config.batch_size // len(piece)), n_groups)))
             for start, piece in pieces for g in range(0, n_groups, max(1, config.batch_size // len(piece)))]
    for start, piece, groups in tqdm(steps, desc=desc, unit="batch"):
        logits = logits_of(piece, groups)
        n = groups.stop - groups.start
        columns = slice(start, start + len(piece))
        rs[groups, columns] = refusal_score(logits, lm.info.refusal_tokens).view(n, len(piece))
        kl[groups, columns] = kl_divergence(base[columns].repeat(n, 1), logits).view(n, len(piece))
    return rs, kl


def exact_sweep(lm: LoadedModel, grids: CandidateGrids, val: ValidationSets, config: SweepConfig,
                rule: SelectionRule, include_true: bool = True) -> pd.DataFrame:
    """Every candidate of the grid (not pruned, not zero) with every score on the whole validation sets, as the
    reference loop gives, many candidates per forward pass: one ablated direction per batch row over the three sets
    at once, then one added steering vector per row over harmless val."""
    rows = _candidate_rows(grids, config.lams, config, rule, include_true)
    todo = [r for r in rows if r["stage"] == "screened"]
    sets = (val.pseudo_harmful, val.harmful, val.harmless)
    prompts = [p for prompts in sets for p in prompts]
    base = torch.cat([val.base_logits[k] for k in ("pseudo_harmful", "harmful", "harmless")])
    ends = [len(sets[0]), len(sets[0]) + len(sets[1]), len(prompts)]
    for vector, lam in sorted({(r["vector"], r["lam"]) for r in todo}, key=str):
        group = [r for r in todo if (r["vector"], r["lam"]) == (vector, lam)]
        lam_arg = None if vector == "true" else lam
        directions = grids.directions(vector, lam_arg)
        steering = grids.steering_vectors(vector, lam_arg)
        cells = [(r["pos_index"], r["layer"]) for r in group]
        dirs = torch.stack([directions[p, layer] for p, layer in cells])
        vecs = torch.stack([steering[p, layer] for p, layer in cells])
        layers = [layer for _, layer in cells]
        label = "true" if vector == "true" else f"false λ={lam}"

        def ablated(piece: list[str], groups: slice, dirs=dirs) -> Float[Tensor, "n vocab"]:
            n = groups.stop - groups.start
            return _ablated_logits(lm, piece * n, dirs[groups], len(piece), len(piece) * n, config.share_prefix,
                                   config.last_logits_only, val.token_means)

        def steered(piece: list[str], groups: slice, vecs=vecs, layers=layers) -> Float[Tensor, "n vocab"]:
            n = groups.stop - groups.start
            return _steered_logits(lm, piece * n, vecs[groups], layers[groups], config.steering_coeff, len(piece),
                                   len(piece) * n, config.share_prefix, config.last_logits_only)

        # KL is computed on every row (cheap next to the forward pass) and read on the harmless ones only.
        rs, kl = _per_prompt_scores(lm, prompts, base, len(group), ablated, config, f"exact ablation {label}")
        steer_rs, steer_kl = _per_prompt_scores(lm, val.harmless, val.base_logits["harmless"], len(group), steered,
                                                config, f"exact steering {label}")
        for i, row in enumerate(group):
            row.update(ablation_refusal_score=rs[i, : ends[0]].mean().item(),
                       ablation_refusal_score_harmful=rs[i, ends[0] : ends[1]].mean().item(),
                       ablation_kl=kl[i, ends[1] :].mean().item(),
                       steering_refusal_score=steer_rs[i].mean().item(), steering_kl=steer_kl[i].mean().item(),
                       stage="full", sweep_note="")
    return to_frame(rows)


def sweep_candidates(lm: LoadedModel, grids: CandidateGrids, val: ValidationSets, config: SweepConfig,
                     rule: SelectionRule, include_true: bool = True) -> pd.DataFrame:
    """The sweep `config.mode` asks for: `fast_sweep` or `exact_sweep`."""
    sweeps = {"fast": fast_sweep, "exact": exact_sweep}
    if config.mode not in sweeps:
        raise WorkbenchError(f"unknown sweep mode {config.mode!r}: use one of {', '.join(MODES)}")
    return sweeps[config.mode](lm, grids, val, config, rule, include_true)


def score_full(lm: LoadedModel, row: dict, directions: Float[Tensor, "n_pos n_layer d_model"], grids: CandidateGrids,
               val: ValidationSets, config: SweepConfig, rule: SelectionRule, steer: bool | None = None,
               score_all: bool | None = None) -> None:
    """The full scores of one candidate on the whole validation sets (the same code the reference loop uses).

    Unless `score_all`, only what `rule` can use: see `SweepConfig.score_all`.
    """
    direction = directions[row["pos_index"], row["layer"]]
    harmless_base = val.base_logits["harmless"]
    score_all = config.score_all if score_all is None else score_all
    is_true = row["vector"] == "true"
    first_target = val.harmful if is_true else val.pseudo_harmful
    means = val.token_means
    rs_first, kl = ablation_scores(lm, direction, first_target, val.harmless, harmless_base, config, means)
    if is_true:
        row.update(ablation_refusal_score_harmful=rs_first, ablation_kl=kl, stage="full")
        if score_all:
            row["ablation_refusal_score"], _ = ablation_scores(lm, direction, val.pseudo_harmful, [],
                                                               harmless_base[:0], config, means)
    else:
        row.update(ablation_refusal_score=rs_first, ablation_kl=kl, stage="full")
        if score_all or kl <= rule.kl_bound("false"):
            row["ablation_refusal_score_harmful"], _ = ablation_scores(lm, direction, val.harmful, [],
                                                                       harmless_base[:0], config, means)
    if steer is None:
        steer = rule.needs_steering(row["vector"]) or config.steer_false
    if steer:
        lam = None if is_true else row["lam"]
        vector = grids.steering_vectors(row["vector"], lam)[row["pos_index"], row["layer"]]
        row["steering_refusal_score"], row["steering_kl"] = steering_scores(
            lm, vector, row["layer"], config.steering_coeff, val.harmless, harmless_base, config.batch_size,
            config.last_logits_only)


def to_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in frame:
            frame[column] = "" if column in TEXT_COLUMNS else math.nan
    return frame[COLUMNS]


def reference_sweep(lm: LoadedModel, grids: CandidateGrids, val: ValidationSets, config: SweepConfig,
                    rule: SelectionRule, cells: list[tuple[int, int]] | None = None,
                    include_true: bool = True) -> pd.DataFrame:
    """The paper-style loop: every candidate, one at a time, every score on the full validation sets.

    Returns every row of the grid, like `fast_sweep` (cells it does not score keep stage "skipped" and a reason).
    `rule` only says which layers are pruned (not scored); every other candidate gets every score.
    """
    rows = _candidate_rows(grids, config.lams, config, rule, include_true)
    for r in rows:
        if r["stage"] == "screened" and cells is not None and (r["pos_index"], r["layer"]) not in cells:
            r.update(stage="skipped", sweep_note="not in sweep grid")
    todo = [r for r in rows if r["stage"] == "screened"]
    directions = {}
    for row in tqdm(todo, desc="reference", unit="candidate"):
        k = (row["vector"], row["lam"])
        if k not in directions:
            directions[k] = grids.directions(row["vector"], None if row["vector"] == "true" else row["lam"])
        score_full(lm, row, directions[k], grids, val, config, rule, steer=True, score_all=True)  # the paper's loop
    return to_frame(rows)


# ---- the stage ------------------------------------------------------------------------------------------------


SPEED_ONLY = ("lams", "batch_size", "share_prefix", "last_logits_only")
"""SweepConfig fields that do not change which candidates get which scores (λ values are reused per λ)."""


def settings_record(config: SweepConfig, rule: SelectionRule) -> dict:
    """What `sweep.json` records of how candidates were scored: the sweep config and the rule it was screened for."""
    return json.loads(json.dumps({**asdict(config), "rule": asdict(rule)}))  # tuples become lists, as in JSON


FAST_ONLY = ("n_screen", "n_finalists", "min_finalists", "stop_margin", "screen_kl_margin", "steer_false", "score_all")
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
    previous, done_lams, include_true = None, set(), True
    recorded = _previous_sweep(run)
    if recorded is not None and same_settings(recorded, config, rule):
        previous = read_sweep(run)
        done_lams = {float(x) for x in previous.loc[previous.vector == "false", "lam"].unique()}
        include_true = not (previous.vector == "true").any()
    new_lams = tuple(lam for lam in config.lams if float(lam) not in done_lams)
    val = load_validation(lm, config)
    if config.ablation == "harmless_mean":
        from workbench.stages.token_means import ensure_token_means

        val.token_means = ensure_token_means(lm, run)
    parts = [] if previous is None else [previous]
    if new_lams or include_true:
        parts.append(sweep_candidates(lm, grids, val, replace(config, lams=new_lams), rule, include_true))
    frame = pd.concat(parts, ignore_index=True)
    atomic_write(run.file("sweep.csv"), lambda tmp: frame.to_csv(tmp, index=False))
    baseline = {k: refusal_score(v, lm.info.refusal_tokens).mean().item() for k, v in val.base_logits.items()}
    all_lams = sorted({float(x) for x in frame.loc[frame.vector == "false", "lam"]}, reverse=True)
    write_json(run.file("sweep.json"), {"config": {**settings_record(config, rule), "lams": all_lams},
                                        "n_layers": grids.n_layers, "validation": val.counts,
                                        "baseline_refusal_score": baseline, "model": lm.info.to_dict(),
                                        **provenance()})
    return frame


def read_sweep(run: RunDir) -> pd.DataFrame:
    """The run's `sweep.csv`, checked (the `vector` column holds the strings "true"/"false", not booleans)."""
    return run.read_csv("sweep.csv", columns=COLUMNS, text_columns=TEXT_COLUMNS, numeric_columns=NUMERIC_COLUMNS)


@dataclass(frozen=True)
class RecordedSweep:
    """How a run's sweep scored its candidates (`sweep.json`): its config (`lams`: every λ scored) and the rule it
    was screened for."""
    config: SweepConfig
    rule: SelectionRule


def recorded_sweep(run: RunDir) -> RecordedSweep:
    """The run's `sweep.json` settings rebuilt through SweepConfig and SelectionRule (a missing or unknown field is
    a one-line error naming the file)."""
    config = read_recorded(run, "sweep.json", SweepConfig, besides=("rule",))
    record = run.read_json("sweep.json", keys=("config",))["config"]
    if not isinstance(record.get("rule"), dict):
        raise run.corrupted("sweep.json", "no selection rule recorded")
    try:
        return RecordedSweep(config, SelectionRule.from_record(record["rule"]))
    except (TypeError, WorkbenchError) as exc:
        raise run.corrupted("sweep.json", str(exc)) from None


def _previous_sweep(run: RunDir) -> RecordedSweep | None:
    """The run's recorded sweep if `sweep.json` and `sweep.csv` both exist and read back, else None (a damaged
    sweep, or one recorded by another workbench version, is scored again)."""
    if not (run.file("sweep.csv").exists() and run.file("sweep.json").exists()):
        return None
    try:
        read_sweep(run)
        return recorded_sweep(run)
    except WorkbenchError:
        return None


def _is_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    previous = _previous_sweep(run)
    if previous is None:
        return False
    return (same_settings(previous, config.sweep, config.select)
            and set(map(float, config.sweep.lams)) <= set(map(float, previous.config.lams)))


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    frame = run_sweep(lm, run, config.sweep, config.select)
    return (f"{int((frame.stage == 'full').sum())} candidates fully scored, "
            f"{int((frame.stage == 'screened').sum())} screened out, {int((frame.stage == 'skipped').sum())} skipped")


STAGE = Stage("sweep", inputs=STAGE_INPUTS["sweep"], outputs=stage_outputs("sweep"),
              run=_run, is_done=_is_done)
