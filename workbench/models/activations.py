"""The residual stream of a loaded model, read with TransformerLens hooks: `resid_pre` at every layer, one batch of
prompts at a time, optionally filtered by the paper's refusal-score filter; and its streaming mean. Read by the
extract, diagnose, gate and token-means stages. The math on what is read lives in `workbench.method`."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from workbench.method.prompt_filter import Keep, kept
from workbench.method.refusal_math import add_to_sum, refusal_score
from workbench.models.loader import LoadedModel


@dataclass(frozen=True)
class MeanResult:
    """A streaming mean of `resid_pre` and how many prompts it was taken over (of how many given)."""

    mean: Float[Tensor, "n_pos n_layer d_model"]
    n_total: int
    n_kept: int


@torch.inference_mode()
def activation_batches(
    lm: LoadedModel, instructions: list[str], keep: Keep | None, batch_size: int = 32, desc: str = "activations",
    every_position: bool = False, n_last: int | None = None,
) -> Iterator[tuple[Float[Tensor, "batch pos n_layer d_model"], Int[Tensor, "batch pos"]]]:
    """`resid_pre` at every layer, one batch of prompts at a time (on the CPU, the model's dtype), with the batch's
    attention mask at the same positions: the EOI positions (the last `n_eoi`), the last `n_last` positions, or with
    `every_position` all of them.

    `keep`: the refusal-score filter (`method.prompt_filter.kept`); None keeps every prompt.
    """
    n_layers = lm.info.n_layers
    first = 0 if every_position else -(n_last or lm.chat.n_eoi)
    captured: dict[int, Float[Tensor, "batch pos d_model"]] = {}

    def capture(layer: int) -> Callable:
        def hook(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
            captured[layer] = x[:, first:, :].detach().cpu()  # under a device map, each layer on its own device
            return x

        return hook

    hooks = [(get_act_name("resid_pre", layer), capture(layer)) for layer in range(n_layers)]
    for start in tqdm(range(0, len(instructions), batch_size), desc=desc, unit="batch"):
        batch = lm.chat.tokenize(instructions[start : start + batch_size], device=lm.device)
        with lm.model.hooks(fwd_hooks=hooks):
            logits = lm.model(batch.input_ids, attention_mask=batch.attention_mask)
        acts = torch.stack([captured[layer] for layer in range(n_layers)], dim=2)  # batch pos n_layer d
        mask = batch.attention_mask[:, first:].cpu()
        if keep is not None:
            scores = refusal_score(logits[:, -1, :].float().cpu(), lm.info.refusal_tokens)
            rows = kept(scores, keep)
            acts, mask = acts[rows], mask[rows]
        yield acts, mask


def mean_activations(
    lm: LoadedModel,
    instructions: list[str],
    keep: Keep | None,
    batch_size: int = 32,
    desc: str = "means",
) -> MeanResult:
    """Mean `resid_pre` at every layer and EOI position, streaming in float64 (memory independent of prompt count).

    `keep`: the refusal-score filter (`method.prompt_filter.kept`); None keeps every prompt.
    """
    running = torch.zeros(lm.chat.n_eoi, lm.info.n_layers, lm.info.d_model, dtype=torch.float64)
    kept = 0
    for acts, _ in activation_batches(lm, instructions, keep, batch_size, desc):
        kept += acts.shape[0]
        running = add_to_sum(running, acts)
    if kept == 0:
        return MeanResult(torch.full_like(running, float("nan")), len(instructions), 0)
    return MeanResult(running / kept, len(instructions), kept)
