"""The harmless token means behind the affine ablation's offsets (Marshall et al. 2024, `hooks.Ablation.offsets`).

The affine ablation of ĉ sets the projection at the input of block l to μ_l(ĉ) = M_l·ĉ, one offset per layer, where
M_l is the mean `resid_pre` of layer l over the harmless training prompts' tokens. M does not depend on the
direction, so it is computed once per run (by this stage, which the pipeline runs when the sweep or the evaluation
uses the affine ablation; a stage run on its own computes them when first needed) and kept as
`token_means.safetensors` (`harmless`: [n_layer, d_model]) with its record `token_means.json`.

One offset per layer, not one per token class (instruction tokens, each EOI token, generated tokens): a per-class
offset is not a bias (it cannot be exported in weights) and a position-dependent hook does not survive KV-cached
generation. `token_class_projections` measures what the single offset gives up: the harmless mean projection per
token class and layer (`benchmarks/affine_offsets.py` prints it for a run's selected direction).
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor

from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.io import atomic_write, write_json
from workbench.method.prompt_filter import Keep, keep_for
from workbench.method.refusal_math import unit
from workbench.models.activations import activation_batches
from workbench.models.loader import LoadedModel
from workbench.stages.base import Stage
from workbench.stages.config_file import read_recorded
from workbench.stages.extract import ExtractConfig
from workbench.stages.run_dir import STAGE_INPUTS, RunDir, provenance, stage_outputs

if TYPE_CHECKING:
    from workbench.stages.pipeline import PipelineConfig

TOKEN_MEANS = "token_means.safetensors"
TOKEN_MEANS_RECORD = "token_means.json"


def _resid_pre_batches(lm: LoadedModel, prompts: list[str], batch_size: int, keep: Keep | None
                       ) -> Iterator[tuple[Float[Tensor, "batch seq n_layer d_model"], Tensor]]:
    """`resid_pre` of every layer at every position (float64, CPU; `models.activations.activation_batches`) and the
    mask of the tokens that count: not padding, and not the first token of its sequence. `keep` is the refusal-score
    filter (`method.prompt_filter`)."""
    for acts, attention in activation_batches(lm, prompts, keep, batch_size, desc="token means", every_position=True):
        mask = attention.bool().clone()
        first = mask.int().argmax(dim=1)  # left padding: the first non-padding position of each row
        mask[torch.arange(mask.shape[0]), first] = False
        yield acts.to(torch.float64), mask


def harmless_token_means(lm: LoadedModel, prompts: list[str], batch_size: int = 32, keep: Keep | None = None
                         ) -> Float[Tensor, "n_layer d_model"]:
    """M_l: the mean `resid_pre` of each layer over the prompts' tokens, every non-padding position except the first
    token of each sequence (BOS / `<|im_start|>`: an attention sink whose activations are outliers, with norms many
    times the others', that no later position carries). Accumulated in float64; returned float32."""
    total = torch.zeros(lm.info.n_layers, lm.info.d_model, dtype=torch.float64)
    count = 0
    for acts, mask in _resid_pre_batches(lm, prompts, batch_size, keep):
        total += acts[mask].sum(0)
        count += int(mask.sum())
    if count == 0:
        raise WorkbenchError("no harmless tokens to average for the affine ablation's offsets (every prompt was "
                             "filtered out): use another harmless set")
    return (total / count).float()


def token_class_projections(lm: LoadedModel, prompts: list[str], direction: Float[Tensor, " d_model"],
                            batch_size: int = 32, keep: Keep | None = None) -> pd.DataFrame:
    """The mean projection x·ĉ of the prompts' `resid_pre` per layer and token class: `prompt` (every counted token
    before the EOI tokens: template and instruction), each EOI position (`eoi-6` ... `eoi-1`), and `all` (what the
    single offset μ_l = M_l·ĉ uses). Columns: layer, token_class, mean_projection, n_tokens."""
    c = unit(direction.to(torch.float64))
    n_eoi = lm.chat.n_eoi
    classes = ["prompt", *(f"eoi{p}" for p in lm.chat.eoi_positions), "all"]
    sums = {k: torch.zeros(lm.info.n_layers, dtype=torch.float64) for k in classes}
    counts = dict.fromkeys(classes, 0)
    for acts, mask in _resid_pre_batches(lm, prompts, batch_size, keep):
        proj = acts @ c  # batch seq n_layer
        seq = mask.shape[1]
        selections = {"prompt": mask & (torch.arange(seq) < seq - n_eoi), "all": mask}
        for p in lm.chat.eoi_positions:
            selections[f"eoi{p}"] = mask & (torch.arange(seq) == seq + p)
        for k, sel in selections.items():
            sums[k] += proj[sel].sum(0)
            counts[k] += int(sel.sum())
    rows = [{"layer": layer, "token_class": k, "mean_projection": float(sums[k][layer] / max(counts[k], 1)),
             "n_tokens": counts[k]} for k in classes for layer in range(lm.info.n_layers)]
    return pd.DataFrame(rows)


def _wanted_record(lm: LoadedModel, run: RunDir) -> dict:
    """What token means for this run are made of: the model and the extract config's harmless set."""
    config = read_recorded(run, "candidates.json", ExtractConfig)
    return {"fingerprint": lm.info.fingerprint, "harmless": config.harmless, "n_train": config.n_train,
            "filter_train": config.filter_train}


def read_token_means(run: RunDir, n_layers: int | None = None, d_model: int | None = None
                     ) -> Float[Tensor, "n_layer d_model"] | None:
    """The run's token means M (checked), or None when it has none."""
    if not run.file(TOKEN_MEANS).exists():
        return None
    means = run.read_tensors(TOKEN_MEANS, keys=("harmless",))["harmless"]
    expected = (n_layers if n_layers is not None else means.shape[0], d_model if d_model is not None else -1)
    if means.ndim != 2 or (n_layers is not None and means.shape[0] != n_layers) or (
            d_model is not None and means.shape[1] != d_model):
        raise run.corrupted(TOKEN_MEANS, f"'harmless' has shape {tuple(means.shape)}, expected {expected}")
    return means.float()


def ensure_token_means(lm: LoadedModel, run: RunDir) -> Float[Tensor, "n_layer d_model"]:
    """The run's token means, computed from the extract config's harmless training set (with its refusal-score
    filter) and written when missing, damaged or made for another model or set."""
    wanted = _wanted_record(lm, run)
    if run.file(TOKEN_MEANS).exists() and run.file(TOKEN_MEANS_RECORD).exists():
        try:
            record = run.read_json(TOKEN_MEANS_RECORD, keys=("source",))
            means = read_token_means(run, lm.info.n_layers, lm.info.d_model)
            if record["source"] == wanted and means is not None:
                return means
        except WorkbenchError:
            pass  # damaged: compute again
    prompts = [p.instruction for p in load_prompts(wanted["harmless"], limit=wanted["n_train"])]
    batch_size = read_recorded(run, "candidates.json", ExtractConfig).batch_size
    means = harmless_token_means(lm, prompts, batch_size, keep=keep_for("harmless", wanted["filter_train"]))
    atomic_write(run.file(TOKEN_MEANS), lambda tmp: save_file({"harmless": means.contiguous()}, str(tmp)))
    write_json(run.file(TOKEN_MEANS_RECORD), {"source": wanted, "model": lm.info.to_dict(), "n_prompts": len(prompts),
                                              "positions": "every non-padding token but the first of each prompt",
                                              **provenance()})
    return means


def token_means_wanted(config) -> bool:
    """Whether a pipeline config's sweep or evaluation uses the affine ablation, which reads the token means."""
    return config.sweep.ablation == "harmless_mean" or "harmless_mean" in config.evaluate.ablation


def _is_done(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> bool:
    try:
        record = run.read_json(TOKEN_MEANS_RECORD, keys=("source",))
        return record["source"] == _wanted_record(lm, run) and read_token_means(run) is not None
    except WorkbenchError:
        return False


def _run(lm: LoadedModel, run: RunDir, config: "PipelineConfig") -> str:
    means = ensure_token_means(lm, run)
    record = run.read_json(TOKEN_MEANS_RECORD)
    return f"harmless token means of {record['n_prompts']} prompts, {means.shape[0]} layers"


STAGE = Stage("token_means", inputs=STAGE_INPUTS["token_means"], outputs=stage_outputs("token_means"), execute=_run,
              is_done=_is_done, wanted=token_means_wanted)
