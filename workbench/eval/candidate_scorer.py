"""Scoring refusal-direction candidates: the ablation and steering refusal scores and KL of one candidate, or of many
candidates at once (one intervention per group of batch rows), behind one object that holds the model and how hard
to batch.

`CandidateScorer` carries the speed settings (rows per forward pass, template-prefix reuse, last-position
unembedding) and, for the affine ablation, the harmless token means, so callers pass only what differs per call:
prompts, directions, steering vectors. None of the speed settings changes a score beyond float rounding.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.eval.scoring import grouped_last_logits, last_only_kwargs, last_position_logits
from workbench.interventions.hooks import ablation_hooks, addition_hooks
from workbench.method.refusal_math import affine_offsets, kl_divergence, refusal_score
from workbench.models.loader import LoadedModel

GroupHooks = Callable[[slice, int], list]
"""`hooks(groups, k)`: the forward hooks of the groups in the slice `groups`, each group's per-row tensors repeated
k times."""
GroupLogits = Callable[[list[str], slice], Float[Tensor, "n vocab"]]
"""`logits_of(piece, groups)`: last-position logits of the prompts `piece` under each group in the slice `groups`,
group-major."""


@dataclass(frozen=True)
class CandidateScorer:
    """A loaded model and how to batch its scoring passes.

    Scores are means over prompts of the refusal score (log-odds of the refusal tokens at the first response
    position) and of KL(unhooked ‖ intervened) of that position's next-token distribution.
    """

    lm: LoadedModel
    batch_size: int = 32
    """Rows per forward pass."""
    share_prefix: bool = True
    """Run the template prefix (system turn, user header) once per intervention and reuse its KV cache."""
    last_logits_only: bool = True
    """Unembed only the last position (the one every score reads); off, every position's logits are computed."""
    token_means: Float[Tensor, "n_layer d_model"] | None = None
    """The harmless token means M: ablations are then affine (block inputs get the offsets M·ĉ); None: to zero."""

    # ---- logits under many interventions at once -----------------------------------------------------------------

    @torch.inference_mode()
    def grouped_logits(self, prompts: list[str], n_groups: int, group_size: int,
                       hooks: GroupHooks) -> Float[Tensor, "n vocab"]:
        """Last-position logits; consecutive groups of `group_size` prompts each under their own intervention
        (`hooks`), as many groups per forward pass as fit in `batch_size` rows.

        With `share_prefix`, each group runs the template prefix once and reuses its KV cache (see
        `scoring.grouped_last_logits`); otherwise, or if the tokenizer does not split at the prefix, every row runs in
        full under its group's intervention (unembedding every position unless `last_logits_only`).
        """
        lm = self.lm
        groups_per_batch = max(1, self.batch_size // group_size)
        extra = last_only_kwargs(lm, self.last_logits_only)
        out = []
        for g in range(0, n_groups, groups_per_batch):
            part = slice(g, min(g + groups_per_batch, n_groups))
            n = part.stop - part.start
            chunk = prompts[g * group_size : (g + n) * group_size]
            logits = (grouped_last_logits(lm, chunk, lambda k, part=part: hooks(part, k), n, group_size)
                      if self.share_prefix else None)
            if logits is None:
                batch = lm.chat.tokenize(chunk, device=lm.device)
                with lm.model.hooks(fwd_hooks=hooks(part, group_size)):
                    logits = lm.model(batch.input_ids, attention_mask=batch.attention_mask,
                                      **extra)[:, -1, :].float().cpu()
            out.append(logits)
        return torch.cat(out)

    def ablated_logits(self, prompts: list[str], directions: Float[Tensor, "n_groups d_model"],
                       group_size: int) -> Float[Tensor, "n vocab"]:
        """Last-position logits; consecutive groups of `group_size` prompts each ablate one of `directions`
        (affinely, with the offsets M·ĉ, when the scorer holds token means)."""
        lm = self.lm
        directions = directions.to(lm.device)
        offsets = None if self.token_means is None else affine_offsets(self.token_means, directions)

        def hooks(groups: slice, k: int) -> list:
            return ablation_hooks(directions[groups].repeat_interleave(k, dim=0), lm.info.n_layers,
                                  None if offsets is None else offsets[groups].repeat_interleave(k, dim=0))

        return self.grouped_logits(prompts, directions.shape[0], group_size, hooks)

    def steered_logits(self, prompts: list[str], vectors: Float[Tensor, "n_groups d_model"], layers: Sequence[int],
                       coeff: float, group_size: int) -> Float[Tensor, "n vocab"]:
        """Last-position logits; consecutive groups of `group_size` prompts each add coeff·`vectors[g]` at the input
        of block `layers[g]` (one hook per layer in the batch, adding zero to the rows of other layers' groups)."""
        lm = self.lm
        vectors = vectors.to(lm.device)
        layer_of = torch.tensor(list(layers), device=lm.device)

        def hooks(groups: slice, k: int) -> list:
            rows, row_layers = vectors[groups], layer_of[groups]
            out = []
            for layer in sorted(set(row_layers.tolist())):
                masked = torch.where((row_layers == layer)[:, None], rows, torch.zeros_like(rows))
                out += addition_hooks(masked.repeat_interleave(k, dim=0), layer, coeff)
            return out

        return self.grouped_logits(prompts, vectors.shape[0], group_size, hooks)

    # ---- one candidate -------------------------------------------------------------------------------------------

    def ablation_scores(self, direction: Float[Tensor, " d_model"], target: list[str], harmless: list[str],
                        harmless_base: Float[Tensor, "n_harmless vocab"]) -> tuple[float, float]:
        """Mean refusal score on `target` and mean KL from `harmless_base` on `harmless` with one direction ablated
        (NaN for an empty set)."""
        prompts = target + harmless
        chunks = [prompts[start : start + self.batch_size] for start in range(0, len(prompts), self.batch_size)]
        logits = torch.cat([self.ablated_logits(chunk, direction[None], len(chunk)) for chunk in chunks])
        tokens = self.lm.info.refusal_tokens
        rs = refusal_score(logits[: len(target)], tokens).mean().item() if target else math.nan
        kl = kl_divergence(harmless_base, logits[len(target) :]).mean().item() if harmless else math.nan
        return rs, kl

    def steering_scores(self, vector: Float[Tensor, " d_model"], layer: int, coeff: float, harmless: list[str],
                        harmless_base: Float[Tensor, "n_harmless vocab"]) -> tuple[float, float]:
        """Mean refusal score and KL on harmless prompts with coeff·vector added at `layer` (the induce-refusal
        test); every prompt runs in full."""
        logits = last_position_logits(self.lm, harmless, self.batch_size,
                                      addition_hooks(vector.to(self.lm.device), layer, coeff),
                                      last_only=self.last_logits_only)
        return (refusal_score(logits, self.lm.info.refusal_tokens).mean().item(),
                kl_divergence(harmless_base, logits).mean().item())

    # ---- many candidates, every prompt ---------------------------------------------------------------------------

    def ablation_per_prompt(self, prompts: list[str], base: Float[Tensor, "n_prompts vocab"],
                            directions: Float[Tensor, "n_groups d_model"], desc: str = "ablation"
                            ) -> tuple[Float[Tensor, "n_groups n_prompts"], Float[Tensor, "n_groups n_prompts"]]:
        """Refusal score and KL from `base` of every prompt with each of `directions` ablated."""

        def logits_of(piece: list[str], groups: slice) -> Float[Tensor, "n vocab"]:
            return self.ablated_logits(piece * (groups.stop - groups.start), directions[groups], len(piece))

        return self.per_prompt_scores(prompts, base, directions.shape[0], logits_of, desc)

    def steering_per_prompt(self, prompts: list[str], base: Float[Tensor, "n_prompts vocab"],
                            vectors: Float[Tensor, "n_groups d_model"], layers: Sequence[int], coeff: float,
                            desc: str = "steering"
                            ) -> tuple[Float[Tensor, "n_groups n_prompts"], Float[Tensor, "n_groups n_prompts"]]:
        """Refusal score and KL from `base` of every prompt with coeff·`vectors[g]` added at block `layers[g]`."""
        layers = list(layers)

        def logits_of(piece: list[str], groups: slice) -> Float[Tensor, "n vocab"]:
            return self.steered_logits(piece * (groups.stop - groups.start), vectors[groups], layers[groups], coeff,
                                       len(piece))

        return self.per_prompt_scores(prompts, base, vectors.shape[0], logits_of, desc)

    def per_prompt_scores(self, prompts: list[str], base: Float[Tensor, "n_prompts vocab"], n_groups: int,
                          logits_of: GroupLogits, desc: str
                          ) -> tuple[Float[Tensor, "n_groups n_prompts"], Float[Tensor, "n_groups n_prompts"]]:
        """Refusal score and KL from `base` of every prompt under each of `n_groups` interventions.

        The prompts go in pieces of similar token length (`pieces`), and each forward pass takes as many groups as
        fit in `batch_size` rows; logits are reduced to scores at once (they would not fit in memory). Scores come
        back in the order of `prompts`.
        """
        rs = torch.empty(n_groups, len(prompts), dtype=torch.float64)  # float64, as `refusal_score` and the KL
        kl = torch.empty(n_groups, len(prompts), dtype=torch.float64)
        steps = [(piece, slice(g, min(g + max(1, self.batch_size // len(piece)), n_groups)))
                 for piece in self.pieces(prompts) for g in range(0, n_groups, max(1, self.batch_size // len(piece)))]
        for piece, groups in tqdm(steps, desc=desc, unit="batch"):
            logits = logits_of([prompts[i] for i in piece], groups)
            n = groups.stop - groups.start
            columns = torch.tensor(piece)
            rs[groups, columns] = refusal_score(logits, self.lm.info.refusal_tokens).view(n, len(piece))
            kl[groups, columns] = kl_divergence(base[columns].repeat(n, 1), logits).view(n, len(piece))
        return rs, kl

    def pieces(self, prompts: Sequence[str]) -> list[list[int]]:
        """The prompts' indices from the fewest tokens to the most, cut into pieces of at most `batch_size` so that
        the tokens one intervention runs over them (each piece padded to its longest prompt, plus the template prefix
        once per piece when it is shared) are fewest."""
        tokenizer, chat = self.lm.tokenizer, self.lm.chat
        lengths = [len(tokenizer.encode(chat.format(p), add_special_tokens=False)) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        n_prefix = len(chat.prefix_token_ids) if self.share_prefix else 0
        least, cut = [0] + [math.inf] * len(order), [0] * (len(order) + 1)  # over the first i prompts of `order`
        for i in range(1, len(order) + 1):
            longest = lengths[order[i - 1]] - n_prefix
            for j in range(max(0, i - self.batch_size), i):
                cost = least[j] + (i - j) * longest + n_prefix
                if cost < least[i]:
                    least[i], cut[i] = cost, j
        bounds, i = [], len(order)
        while i > 0:
            bounds.append((cut[i], i))
            i = cut[i]
        return [order[start:stop] for start, stop in reversed(bounds)]
