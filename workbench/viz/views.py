"""Per-token views (circuitsvis): how strongly each token's residual stream projects on r and on w′ at a layer,
for prompts a user picks (harmful, pseudo-harmful, harmless side by side)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities import get_act_name

from workbench.errors import WorkbenchError
from workbench.method.refusal_math import unit
from workbench.models.loader import LoadedModel


def projections(
    resid: Float[Tensor, "seq d_model"], directions: Float[Tensor, "n_dir d_model"]
) -> Float[Tensor, "seq n_dir"]:
    """Scalar projection of every position's residual vector on every (normalized) direction."""
    return resid.to(torch.float64) @ unit(directions.to(torch.float64)).T


@dataclass(frozen=True)
class TokenProjections:
    label: str
    prompt: str
    tokens: list[str]
    values: Float[Tensor, "seq n_dir"]
    directions: list[str]


@torch.inference_mode()
def token_projections(lm: LoadedModel, prompts: Sequence[tuple[str, str]],
                      directions: dict[str, Float[Tensor, " d_model"]], layer: int) -> list[TokenProjections]:
    """For (label, instruction) pairs: the chat-formatted tokens and their `resid_pre` projections at `layer`."""
    if not 0 <= layer < lm.info.n_layers:
        raise WorkbenchError(f"layer {layer} is outside the model's 0..{lm.info.n_layers - 1}")
    if not prompts:
        raise WorkbenchError("no prompts to show")
    stacked = torch.stack([d.float() for d in directions.values()])
    if stacked.shape[-1] != lm.info.d_model:
        raise WorkbenchError(f"directions have width {stacked.shape[-1]}, the model has d_model {lm.info.d_model}")
    out = []
    name = get_act_name("resid_pre", layer)
    for label, instruction in prompts:
        batch = lm.chat.tokenize([instruction], device=lm.device)
        _, cache = lm.model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                           names_filter=lambda n: n == name)
        ids = batch.input_ids[0].tolist()
        tokens = [lm.tokenizer.decode([t]) for t in ids]
        out.append(TokenProjections(label, instruction, tokens, projections(cache[name][0].cpu(), stacked).float(),
                                    list(directions)))
    return out


def projection_view(items: list[TokenProjections]) -> str:
    """HTML: one circuitsvis colored-token block per prompt (pick the direction in the view's selector)."""
    import html

    import circuitsvis.tokens as cv_tokens

    blocks = []
    for item in items:
        rendered = cv_tokens.colored_tokens_multi(item.tokens, item.values, item.directions)
        blocks.append(f"<h4>{html.escape(item.label)}: {html.escape(item.prompt)}</h4>\n{rendered}")
    return "<div>\n" + "\n".join(blocks) + "\n</div>"
