"""Export a model as a plain Hugging Face checkpoint (safetensors, config, tokenizer with chat template, card)."""

import copy
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.io import atomic_dir, refuse_nonempty_dir
from workbench.models.loader import LoadedModel


def plain_hf_model(lm: LoadedModel):
    """A plain transformers model with the bridge's current weights.

    The TransformerLens bridge wraps the HF modules in place (`..._original_component...` in the state dict, plus
    alias names), so the weights are copied into a freshly built model of the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.models.loader import offloaded_parameters

    source = lm.hf_model
    if offloaded := offloaded_parameters(source):
        raise WorkbenchError(f"this step edits a plain in-memory copy of the model, but --device-map offloaded "
                             f"{len(offloaded)} weights (e.g. {offloaded[0]}) to the CPU or disk: load it without "
                             "'cpu'/'disk' entries in the device map (or without --device-map)")
    dtype = next(source.parameters()).dtype
    devices = {p.device for p in source.parameters()}
    # Built where the source lives (one GPU: on it; a multi-GPU device map: on the CPU, then dispatched with the
    # source's map), so that evaluation on a GPU model generates on the GPU. Its own copy of the config: edits that
    # change it (an affine ablation turns on `mlp_bias`) stay with the copy.
    with torch.device(next(iter(devices)) if len(devices) == 1 else "cpu"):
        clean = AutoModelForCausalLM.from_config(copy.deepcopy(source.config), dtype=dtype)
    state = {k.replace("._original_component", ""): v for k, v in source.state_dict().items()}
    wanted = clean.state_dict()
    tied_head = getattr(source.config, "tie_word_embeddings", False)
    missing = [k for k in wanted if k not in state and not (tied_head and k == "lm_head.weight")]
    if missing:
        raise WorkbenchError(f"cannot export: weights missing for {missing[:3]} (architecture not mapped)")
    with torch.no_grad():
        clean.load_state_dict({k: state[k] for k in wanted if k in state}, strict=False)
    if tied_head:
        clean.tie_weights()
    if len(devices) > 1 and getattr(source, "hf_device_map", None):
        from accelerate import dispatch_model

        clean = dispatch_model(clean, device_map=source.hf_device_map)
    return clean.eval()


def export_checkpoint(lm: LoadedModel, out_dir: str | Path, card: str, force: bool = False, hf_model=None) -> Path:
    """Write `lm`'s weights (raw, unfolded; or `hf_model`, an edited plain copy) so that
    `AutoModelForCausalLM.from_pretrained(out_dir)` loads them.

    Written to a temporary sibling directory and renamed, so an interrupted export leaves nothing half-written.
    """
    out_dir = Path(out_dir)
    refuse_nonempty_dir(out_dir, force)
    with atomic_dir(out_dir) as tmp:
        hf = hf_model if hf_model is not None else plain_hf_model(lm)
        hf.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out_dir


def model_card(lm: LoadedModel, extra: str = "") -> str:
    info = lm.info
    return f"""---
library_name: transformers
tags: [refusal-workbench]
---
# {info.name}

Exported by the refusal workbench from `{info.source}` ({info.architecture}, {info.n_layers} layers,
d_model {info.d_model}); workbench fingerprint `{info.fingerprint}`.
{extra}
"""


def export_edited(lm: LoadedModel, direction_file: str | Path, out_dir: str | Path, force: bool = False,
                  ablate_to: str = "zero") -> Path:
    """Export `lm` with a selected direction (`directions/lam_<λ>.safetensors`) orthogonalized out of its weights
    (token embedding, attention and MLP outputs), with a model card naming the direction, position, layer, λ and
    source run. `ablate_to="harmless_mean"`: the affine ablation (the file's offsets as an embedding shift and MLP
    output biases; `weight_edit`), refused for architectures without an MLP bias option."""
    from workbench.interventions.directions import load_direction, load_offsets
    from workbench.interventions.hooks import ABLATION_TARGETS
    from workbench.interventions.weight_edit import check_mlp_bias, orthogonalize_weights_

    if ablate_to not in ABLATION_TARGETS:
        raise WorkbenchError(f"unknown ablation {ablate_to!r}: use one of {', '.join(ABLATION_TARGETS)}")
    path = Path(direction_file)
    direction, meta = load_direction(path, lm.info.fingerprint, lm.info.d_model)
    offsets = load_offsets(path, lm.info.n_layers) if ablate_to == "harmless_mean" else None
    hf = plain_hf_model(lm)
    if offsets is not None:
        check_mlp_bias(hf)
    orthogonalize_weights_(hf, direction, offsets)
    extra = f"""
## Edit: false-refusal direction ablated by weight orthogonalization
The unit direction ŵ' (partial orthogonalization of the false-refusal vector w against the true-refusal vector r,
λ = {meta.get('lam')}) taken at EOI position {meta.get('pos')}, layer {meta.get('layer')} of run
`{meta.get('run')}` (`{path.name}`) has been projected out of every matrix that writes into the
residual stream: W ← W − ŵ'ŵ'ᵀW for the token embedding, every attention output and every MLP output (the
unembedding was untied first where tied). The checkpoint is equivalent to ablating the direction with hooks at
every layer and position (Wang et al., ICLR 2025; Arditi et al., 2024) and runs in plain transformers, vLLM and
lm-eval without the workbench.
"""
    if offsets is not None:
        extra += """
The ablation is affine (Marshall et al. 2024): the projection on ŵ' is set to the harmless mean projection μ_l of
each layer instead of 0 (μ_0 ŵ' added to every token-embedding row, a bias (μ_{l+1} − μ_l) ŵ' on each MLP output
projection but the last; the config's `mlp_bias` is on, with zero gate and up biases).
"""
    return export_checkpoint(lm, out_dir, model_card(lm, extra), force=force, hf_model=hf)
