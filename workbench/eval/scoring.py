"""Forward passes that score prompts: last-position logits, refusal scores, perplexity. Hooks on the model apply."""

import inspect
import math
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.method.refusal_math import refusal_score
from workbench.models.loader import LoadedModel

Forward = Callable[[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]], Float[Tensor, "batch seq vocab"]]
"""`forward(input_ids, attention_mask) -> logits` of any causal LM (hooked, plain, edited)."""


def keep_last_logits_kwargs(hf_model) -> dict:
    """Forward kwargs that make a transformers causal LM unembed only the last position (`logits_to_keep=1`), or
    none when its forward does not take them.

    The unembedding is a large share of a small model's forward (SmolLM2-135M: a 49,152 × 576 matrix against
    30 blocks of ≈ 4M weights each), and scoring often needs only the last position's logits.
    """
    try:
        accepts = "logits_to_keep" in inspect.signature(hf_model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        accepts = False
    return {"logits_to_keep": 1} if accepts else {}


def last_only_kwargs(lm: LoadedModel, last_only: bool = True) -> dict:
    """`keep_last_logits_kwargs` of the bridge's underlying model, or none when `last_only` is off."""
    return keep_last_logits_kwargs(getattr(lm.model, "original_model", None)) if last_only else {}


@torch.inference_mode()
def last_position_logits(
    lm: LoadedModel, instructions: Sequence[str], batch_size: int = 32, fwd_hooks: list | None = None,
    last_only: bool = True,
) -> Float[Tensor, "n vocab"]:
    """Next-token logits at the last prompt position (the first response position) for each instruction.

    `last_only` unembeds only that position (same logits; `False` computes every position's, as the paper's code).
    """
    out = []
    extra = last_only_kwargs(lm, last_only)
    for start in range(0, len(instructions), batch_size):
        batch = lm.chat.tokenize(list(instructions[start : start + batch_size]), device=lm.device)
        with lm.model.hooks(fwd_hooks=fwd_hooks or []):
            logits = lm.model(batch.input_ids, attention_mask=batch.attention_mask, **extra)
        out.append(logits[:, -1, :].float().cpu())
    return torch.cat(out)


def refusal_scores(
    lm: LoadedModel, instructions: Sequence[str], batch_size: int = 32, fwd_hooks: list | None = None
) -> Float[Tensor, " n"]:
    return refusal_score(last_position_logits(lm, instructions, batch_size, fwd_hooks), lm.info.refusal_tokens)


@torch.inference_mode()
def perplexity(
    lm: LoadedModel,
    lines: Sequence[str],
    max_tokens: int = 16384,
    window: int = 512,
    batch_size: int = 8,
    fwd_hooks: list | None = None,
    progress: bool = True,
) -> float:
    """exp(mean next-token NLL) over the first `max_tokens` tokens of the joined text, in non-overlapping windows."""

    def forward(ids: Int[Tensor, "batch seq"], mask: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        with lm.model.hooks(fwd_hooks=fwd_hooks or []):
            return lm.model(ids.to(lm.device))

    ids = lm.tokenizer.encode("\n".join(lines), add_special_tokens=False)
    return windowed_perplexity(forward, ids, max_tokens, window, batch_size, progress)[0]


@torch.inference_mode()
def windowed_perplexity(forward: Forward, token_ids: list[int], max_tokens: int, window: int, batch_size: int,
                        progress: bool = True) -> tuple[float, int]:
    """exp(mean next-token NLL) over the first `max_tokens` tokens in non-overlapping windows, with any
    `forward(input_ids, attention_mask) -> logits`; returns (perplexity, tokens scored)."""
    ids = token_ids[:max_tokens]
    n_windows = len(ids) // window
    if n_windows == 0:
        raise WorkbenchError("text too short for one perplexity window")
    tokens = torch.tensor(ids[: n_windows * window]).view(n_windows, window)
    total, count = 0.0, 0
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress):
        chunk = tokens[start : start + batch_size]
        logits = forward(chunk, torch.ones_like(chunk))
        logprobs = torch.log_softmax(logits[:, :-1].double(), dim=-1)
        nll = -logprobs.gather(-1, chunk[:, 1:, None].to(logprobs.device)).squeeze(-1)
        total += float(nll.sum())
        count += nll.numel()
    return math.exp(total / count), count


@torch.inference_mode()
def grouped_last_logits(
    lm: LoadedModel, prompts: Sequence[str], group_hooks: Callable[[int], list], n_groups: int, group_size: int
) -> Float[Tensor, "n vocab"] | None:
    """Last-position logits with `n_groups` consecutive groups of `group_size` prompts, each group under its own
    intervention: `group_hooks(k)` gives the forward hooks with each group's per-row tensors repeated k times (k = 1:
    one row per group, k = `group_size`: one row per prompt).

    The template prefix every prompt starts with (system turn, user header) is run once per group, under that
    group's intervention, and its KV cache is reused by the group's prompts (equal to running every prompt in full).
    Returns None when the tokenizer does not split the prompts exactly at the prefix.
    """
    suffix = lm.chat.tokenize_after_prefix(prompts, device=lm.device)
    if suffix is None or len(prompts) != group_size * n_groups:
        return None
    prefix = torch.tensor([lm.chat.prefix_token_ids], device=lm.device).expand(n_groups, -1)
    extra = last_only_kwargs(lm)
    with lm.model.hooks(fwd_hooks=group_hooks(1)):
        _, cache = lm.model(prefix, attention_mask=torch.ones_like(prefix), return_type="logits_and_cache",
                            use_cache=True, **extra)
    cache.batch_repeat_interleave(group_size)
    n_prefix = prefix.shape[1]
    mask = torch.cat([torch.ones(len(prompts), n_prefix, dtype=suffix.attention_mask.dtype, device=lm.device),
                      suffix.attention_mask], dim=1)
    position_ids = (n_prefix + suffix.attention_mask.cumsum(-1) - 1).clamp_min(n_prefix)
    with lm.model.hooks(fwd_hooks=group_hooks(group_size)):
        logits = lm.model(suffix.input_ids, attention_mask=mask, past_key_values=cache, position_ids=position_ids,
                          **extra)
    return logits[:, -1, :].float().cpu()
