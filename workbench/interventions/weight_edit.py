"""Interventions baked into a plain Hugging Face model: weight orthogonalization (exact) and block pre-hooks.

Directional ablation everywhere equals removing ĉ from every matrix that writes into the residual stream:
W ← W − ĉĉᵀW for the token embedding, every attention output and every MLP output (biases too where present).
Which modules those are is an architecture's business, so it lives in a registry keyed by `config.model_type`,
not in name substrings. Architectures that normalize a block's output before adding it to the residual stream
(Gemma-2/3, OLMo-2 "post-norms") cannot be orthogonalized exactly and are not registered: use hooks there.

Affine ablation (offsets μ_l, `hooks.Ablation.offsets`) is exact in weights too: after orthogonalization every
writer's output has no ĉ component, so the residual stream's projection on ĉ is whatever constant is put in. μ_0 ĉ is
added to every token-embedding row (block 0's input then projects to μ_0), and a bias (μ_{l+1} − μ_l)ĉ on the MLP
output projection of block l (l < L−1) moves the projection from μ_l to μ_{l+1} for the next block's input; the last
block gets none (after it the hooks set nothing either). This needs an MLP output bias: Llama-family models have a
config flag for one (`mlp_bias`, which then also gives the gate and up projections zero biases so that
`from_pretrained` loads the checkpoint), GPT-2 has one; an architecture without one (Qwen2, Mistral, ...) is refused
(use hooks there).

A tied unembedding is untied first (the unembedding must keep reading ĉ; only writers are edited).
Activation addition has no exact weight form in bias-free models; on the plain model it is a forward pre-hook on
the block, which keeps the model's own (fast) generation.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from workbench.errors import WorkbenchError
from workbench.interventions.gate import Gated, refuse_weight_form
from workbench.interventions.hooks import Ablation, Addition, Intervention
from workbench.method.refusal_math import (
    orthogonalize_embedding,
    orthogonalize_output_matrix,
    remove_component,
    unit,
)


@dataclass(frozen=True)
class ResidualWriters:
    """Module paths of one architecture that write into the residual stream."""

    embeddings: tuple[str, ...]
    """Embedding modules whose rows are residual vectors (token, and learned positions where they exist)."""
    blocks: str
    """The ModuleList of decoder blocks (its i-th item's input is TransformerLens' `blocks.i.hook_resid_pre`)."""
    attn_out: str
    """Attention output projection, relative to a block."""
    mlp_out: str
    """MLP output projection, relative to a block."""
    conv1d: bool = False
    """GPT-2 style Conv1D layout (in × out) instead of torch Linear (out × in)."""
    mlp_bias: str | None = None
    """How the MLP output projection gets a bias (the affine ablation's offsets): "always" (it has one), the name of
    the config flag that gives every MLP projection a bias (Llama's `mlp_bias`), or None (it cannot have one)."""


LLAMA_LIKE = ResidualWriters(("model.embed_tokens",), "model.layers", "self_attn.o_proj", "mlp.down_proj")
LLAMA_MLP_BIAS = replace(LLAMA_LIKE, mlp_bias="mlp_bias")
WEIGHT_LAYOUTS: dict[str, ResidualWriters] = {
    "llama": LLAMA_MLP_BIAS,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
    "gemma": LLAMA_LIKE,
    "phi3": LLAMA_LIKE,
    "granite": LLAMA_MLP_BIAS,
    "gpt2": ResidualWriters(("transformer.wte", "transformer.wpe"), "transformer.h", "attn.c_proj", "mlp.c_proj",
                            conv1d=True, mlp_bias="always"),
}


def layout_of(model: torch.nn.Module) -> ResidualWriters:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in WEIGHT_LAYOUTS:
        raise WorkbenchError(
            f"weight orthogonalization is not mapped for architecture {model_type!r} "
            f"(known: {', '.join(sorted(WEIGHT_LAYOUTS))}); use hook interventions, or add its residual writers to "
            "workbench.interventions.weight_edit.WEIGHT_LAYOUTS"
        )
    return WEIGHT_LAYOUTS[model_type]


def blocks_of(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.get_submodule(layout_of(model).blocks)


def untie_embeddings_(model: torch.nn.Module) -> None:
    """Give a tied unembedding its own copy of the weights (so editing the embedding leaves it alone)."""
    head = model.get_output_embeddings()
    embed = model.get_input_embeddings()
    if head is not None and head.weight is embed.weight:
        head.weight = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
        text_config = getattr(model.config, "get_text_config", lambda: None)()
        if text_config is not None and text_config is not model.config:
            text_config.tie_word_embeddings = False


def writer_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter, str]]:
    """(name, parameter, kind) for every residual writer; kind is `embedding`, `matrix` or `bias`."""
    layout = layout_of(model)
    out = []
    for name in layout.embeddings:
        out.append((f"{name}.weight", model.get_submodule(name).weight, "embedding"))
    for i, block in enumerate(model.get_submodule(layout.blocks)):
        for rel in (layout.attn_out, layout.mlp_out):
            module = block.get_submodule(rel)
            out.append((f"{layout.blocks}.{i}.{rel}.weight", module.weight, "conv1d" if layout.conv1d else "matrix"))
            if getattr(module, "bias", None) is not None:
                out.append((f"{layout.blocks}.{i}.{rel}.bias", module.bias, "bias"))
    return out


def _orthogonalized(param: Float[Tensor, "*shape"], kind: str, c: Float[Tensor, " d_model"], strength: float = 1.0
                    ) -> Float[Tensor, "*shape"]:
    """A residual writer's parameter (matrix `d_model d_in`, rows `n d_model`, or bias `d_model`) with β of ĉ
    removed."""
    if kind == "matrix":
        return orthogonalize_output_matrix(param, c, strength)
    return orthogonalize_embedding(param, c, strength)  # embedding or Conv1D rows, or a bias: residual vectors


def check_mlp_bias(model: torch.nn.Module) -> ResidualWriters:
    """The model's layout, refused (one line) when its MLP output projection cannot have a bias."""
    layout = layout_of(model)
    if layout.mlp_bias is None:
        raise WorkbenchError(
            f"affine ablation (to the harmless mean) needs a bias on the MLP output projection, which architecture "
            f"{model.config.model_type!r} has no option for: use hook interventions (the sweep, `workbench chat "
            "--ablation harmless_mean`) for it, or zero-ablation in weights"
        )
    return layout


def enable_mlp_bias_(model: torch.nn.Module) -> Callable[[], None]:
    """Give every MLP projection of `model` a zero bias where it has none and set the config flag that makes
    `from_pretrained` build them (Llama `mlp_bias`); returns the function that undoes it."""
    layout = check_mlp_bias(model)
    if layout.mlp_bias == "always":
        return lambda: None
    config, flag = model.config, layout.mlp_bias
    before = getattr(config, flag, False)
    mlp_path = layout.mlp_out.rsplit(".", 1)[0]
    created = []
    for block in model.get_submodule(layout.blocks):
        for module in block.get_submodule(mlp_path).children():
            if isinstance(module, torch.nn.Linear) and module.bias is None:
                weight = module.weight
                module.bias = torch.nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                             device=weight.device), requires_grad=False)
                created.append(module)
    setattr(config, flag, True)

    def undo() -> None:
        for module in created:
            module.bias = None
        setattr(config, flag, before)

    return undo


@torch.no_grad()
def add_offsets_(model: torch.nn.Module, direction: Float[Tensor, " d_model"], offsets: Float[Tensor, " n_layer"]
                 ) -> None:
    """Bake the affine ablation's offsets into an orthogonalized model: μ_0 ĉ on every token-embedding row and the
    bias (μ_{l+1} − μ_l)ĉ on the MLP output of block l < L−1 (see the module docstring); the MLP output biases must
    exist (`enable_mlp_bias_`)."""
    layout = check_mlp_bias(model)
    blocks = model.get_submodule(layout.blocks)
    if offsets.shape != (len(blocks),):
        raise WorkbenchError(f"ablation offsets have shape {tuple(offsets.shape)}, the model has {len(blocks)} layers")
    c = unit(direction.to(torch.float64))
    mu = offsets.to(torch.float64)
    embedding = model.get_submodule(layout.embeddings[0]).weight
    embedding.copy_((embedding.to(torch.float64) + mu[0] * c.to(embedding.device)).to(embedding.dtype))
    for layer in range(len(blocks) - 1):
        bias = blocks[layer].get_submodule(layout.mlp_out).bias
        if bias is None:
            raise WorkbenchError(f"block {layer}'s MLP output has no bias: call enable_mlp_bias_ first")
        step = (mu[layer + 1] - mu[layer]) * c.to(bias.device)
        bias.copy_((bias.to(torch.float64) + step).to(bias.dtype))


def _check_editable(model: torch.nn.Module) -> None:
    """Refuse residual writers that accelerate offloaded (meta placeholders: an edit would be lost or fail)."""
    offloaded = [name for name, param, _ in writer_parameters(model) if param.is_meta]
    if offloaded:
        raise WorkbenchError(f"weight orthogonalization cannot edit {offloaded[0]} (and {len(offloaded) - 1} more): "
                             "a device map offloaded it to the CPU or disk; load the model without 'cpu'/'disk' "
                             "entries in the device map, or use hook interventions")


@torch.no_grad()
def orthogonalize_weights_(model: torch.nn.Module, direction: Float[Tensor, " d_model"],
                           offsets: Float[Tensor, " n_layer"] | None = None, strength: float = 1.0) -> None:
    """Bake x ← x − (x·ĉ)ĉ into every residual writer of `model`, in place (unties a tied unembedding); with
    `offsets`, the affine ablation (MLP output biases are created where the architecture allows, else refused); with
    `strength` β < 1 the partial ablation W ← W − β ĉĉᵀW (each writer keeps 1 − β of its ĉ component)."""
    _check_editable(model)
    d_model = model.get_input_embeddings().weight.shape[-1]
    if direction.shape != (d_model,):
        raise WorkbenchError(f"direction has shape {tuple(direction.shape)}, the model's d_model is {d_model}")
    if offsets is not None:
        enable_mlp_bias_(model)
    untie_embeddings_(model)
    c = unit(direction.to(torch.float64))
    for _, param, kind in writer_parameters(model):
        param.copy_(_orthogonalized(param, kind, c.to(param.device), strength))
    if offsets is not None:
        add_offsets_(model, direction, offsets)


def add_to_block_input(model: torch.nn.Module, vector: Float[Tensor, " d_model"], layer: int, coeff: float
                       ) -> RemovableHandle:
    """x ← x + α·v at the input of block `layer` (a forward pre-hook); returns the hook handle."""
    blocks = blocks_of(model)
    if not 0 <= layer < len(blocks):
        raise WorkbenchError(f"layer {layer} is outside the model's 0..{len(blocks) - 1}")

    def pre_hook(module, args, kwargs):
        if args:
            x = args[0]
            return (x + coeff * vector.to(x.device, x.dtype), *args[1:]), kwargs
        x = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": x + coeff * vector.to(x.device, x.dtype)}

    return blocks[layer].register_forward_pre_hook(pre_hook, with_kwargs=True)


def subtract_from_block_output(model: torch.nn.Module, vector: Float[Tensor, " d_model"], layer: int
                               ) -> RemovableHandle:
    """x ← x − v on the output of block `layer` (a forward hook); returns the hook handle."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (output[0] - vector.to(output[0].device, output[0].dtype), *output[1:])
        return output - vector.to(output.device, output.dtype)

    return blocks_of(model)[layer].register_forward_hook(hook)


@contextmanager
def edited(model: torch.nn.Module, intervention: Intervention | Gated) -> Iterator[torch.nn.Module]:
    """`model` with the intervention baked in (ablations into weights, additions as pre-hooks), restored on exit.

    Same function as `interventions.applied` on the hooked model, where at a block input the ablations act before
    the addition: block l sees x + α·v, and the next block input has v's ablated components removed again. So when
    both are present, α·(v − Pv) (P: the ablations' projections) is subtracted from block l's output (unless l is
    the last block). Exact for one ablated direction (or several orthogonal ones).
    Affine ablations (with offsets) get MLP output biases for the duration (removed again on exit); their offsets
    are added after every ablation's orthogonalization (exact for orthogonal directions, as above).
    Only the residual writers are saved and put back, so a large model is not copied per intervention.
    """
    refuse_weight_form(intervention, "an edited copy")
    parts = intervention.parts
    ablations = [p for p in parts if isinstance(p, Ablation)]
    additions = [p for p in parts if isinstance(p, Addition)]
    saved = {}
    handles = []
    undo_bias = None
    if ablations:
        _check_editable(model)
    if additions and any(p.strength != 1.0 for p in ablations):
        raise WorkbenchError("a partial ablation (β < 1) combined with an activation addition has no weight form: "
                             "apply it with hooks")
    if any(p.offsets is not None for p in ablations):
        undo_bias = enable_mlp_bias_(model)
    if ablations:
        untie_embeddings_(model)
        saved = {name: param.detach().clone() for name, param, _ in writer_parameters(model)}
    try:
        for part in ablations:
            orthogonalize_weights_(model, part.direction, strength=part.strength)
        for part in ablations:
            if part.offsets is not None:
                add_offsets_(model, part.direction, part.offsets)
        n_blocks = len(blocks_of(model))
        for part in additions:
            handles.append(add_to_block_input(model, part.vector, part.layer, part.coeff))
            if ablations and part.layer < n_blocks - 1:
                v = part.vector.to(torch.float64)
                projected = v
                for ablation in ablations:
                    projected = remove_component(projected, unit(ablation.direction.to(torch.float64)))
                residue = (part.coeff * (v - projected)).to(part.vector.dtype)
                handles.append(subtract_from_block_output(model, residue, part.layer))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        if saved:
            with torch.no_grad():
                params = {name: param for name, param, _ in writer_parameters(model)}
                for name, value in saved.items():
                    params[name].copy_(value)
        if undo_bias is not None:
            undo_bias()
