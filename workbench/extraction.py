"""Step 1–3 of the method: mean residual activations at every layer and EOI position, the paper's refusal-score
filter of training prompts, and the true/false refusal candidate grids."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.io import atomic_write, write_json
from workbench.models.loader import LoadedModel
from workbench.refusal_math import add_to_sum, mean_difference, refusal_score
from workbench.run_dir import RunDir, provenance


@dataclass(frozen=True)
class ExtractConfig:
    """What `workbench extract` uses."""

    harmful: str = "bundled_harmful_train"
    """Harmful training prompts (registered dataset name or JSONL file)."""
    harmless: str = "bundled_harmless_train"
    """Harmless training prompts."""
    pseudo_harmful: str = "bundled_pseudo_harmful_train"
    """Pseudo-harmful training prompts (safe but sound harmful)."""
    n_train: int | None = None
    """Cap on prompts per set (None: the whole set)."""
    filter_train: bool = True
    """The paper's filter: keep harmful/pseudo-harmful prompts with refusal score > 0, harmless ones with < 0."""
    batch_size: int = 32
    """Prompts per forward pass."""


@dataclass(frozen=True)
class MeanResult:
    mean: Float[Tensor, "n_pos n_layer d_model"]
    n_total: int
    n_kept: int


@torch.inference_mode()
def mean_activations(
    lm: LoadedModel,
    instructions: list[str],
    keep: str | None,
    batch_size: int = 32,
    desc: str = "means",
) -> MeanResult:
    """Mean `resid_pre` at every layer and EOI position, streaming in float64 (memory independent of prompt count).

    `keep`: None keeps every prompt; "refuses" keeps prompts whose refusal score is > 0; "complies" those < 0.
    """
    n_layers, n_eoi = lm.info.n_layers, lm.chat.n_eoi
    running = torch.zeros(n_eoi, n_layers, lm.info.d_model, dtype=torch.float64)
    captured: dict[int, Tensor] = {}

    def capture(layer: int):
        def hook(x, hook):
            captured[layer] = x[:, -n_eoi:, :].detach()
            return x

        return hook

    hooks = [(get_act_name("resid_pre", layer), capture(layer)) for layer in range(n_layers)]
    kept = 0
    for start in tqdm(range(0, len(instructions), batch_size), desc=desc, unit="batch"):
        batch = lm.chat.tokenize(instructions[start : start + batch_size], device=lm.device)
        with lm.model.hooks(fwd_hooks=hooks):
            logits = lm.model(batch.input_ids, attention_mask=batch.attention_mask)
        acts = torch.stack([captured[layer] for layer in range(n_layers)], dim=2).cpu()  # batch n_pos n_layer d
        if keep is not None:
            scores = refusal_score(logits[:, -1, :].float().cpu(), lm.info.refusal_tokens)
            mask = scores > 0 if keep == "refuses" else scores < 0
            acts = acts[mask]
        kept += acts.shape[0]
        running = add_to_sum(running, acts)
    if kept == 0:
        return MeanResult(torch.full_like(running, float("nan")), len(instructions), 0)
    return MeanResult(running / kept, len(instructions), kept)


def extract(lm: LoadedModel, config: ExtractConfig, run: RunDir) -> dict:
    """Write `candidates.safetensors` (raw true/false refusal grids, means) and `candidates.json`."""
    sets = {"harmful": config.harmful, "harmless": config.harmless, "pseudo_harmful": config.pseudo_harmful}
    rules = {"harmful": "refuses", "harmless": "complies", "pseudo_harmful": "refuses"}
    means: dict[str, MeanResult] = {}
    for key, name in sets.items():
        prompts = [p.instruction for p in load_prompts(name, limit=config.n_train)]
        means[key] = mean_activations(lm, prompts, rules[key] if config.filter_train else None, config.batch_size,
                                      desc=f"means {key}")
        if means[key].n_kept == 0:
            raise WorkbenchError(
                f"the refusal-score filter removed every {key} prompt of {name!r} ({means[key].n_total} prompts): "
                "this model does not refuse them as expected; pass --no-filter to keep all prompts"
            )
    true_grid = mean_difference(means["harmful"].mean, means["harmless"].mean)
    false_grid = mean_difference(means["pseudo_harmful"].mean, means["harmless"].mean)
    tensors = {
        "true_refusal": true_grid.float().contiguous(),
        "false_refusal": false_grid.float().contiguous(),
        **{f"mean_{k}": m.mean.float().contiguous() for k, m in means.items()},
    }
    atomic_write(run.file("candidates.safetensors"), lambda tmp: save_file(tensors, str(tmp)))
    record = {
        "model": lm.info.to_dict(),
        "config": asdict(config),
        "positions": lm.chat.eoi_positions,
        "position_tokens": lm.chat.eoi_token_strings,
        "n_layers": lm.info.n_layers,
        "d_model": lm.info.d_model,
        "prompt_counts": {k: {"dataset": sets[k], "total": m.n_total, "kept": m.n_kept} for k, m in means.items()},
        **provenance(),
    }
    write_json(run.file("candidates.json"), record)
    return record


def load_candidates(run: RunDir) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    run.require("candidates.json")
    return load_file(str(run.require("candidates.safetensors")))

