"""Interventions baked into a plain Hugging Face model: weight orthogonalization (exact) and block pre-hooks.

Directional ablation everywhere equals removing ĉ from every matrix that writes into the residual stream:
W ← W − ĉĉᵀW for the token embedding, every attention output and every MLP output (biases too where present).
Which modules those are is an architecture's business, so it lives in a registry keyed by `config.model_type`,
not in name substrings. Architectures that normalize a block's output before adding it to the residual stream
(Gemma-2/3, OLMo-2 "post-norms") cannot be orthogonalized exactly and are not registered: use hooks there.

A tied unembedding is untied first (the unembedding must keep reading ĉ; only writers are edited).
Activation addition has no exact weight form in bias-free models; on the plain model it is a forward pre-hook on
the block, which keeps the model's own (fast) generation.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from workbench.errors import WorkbenchError
from workbench.interventions.hooks import Ablation, Addition, Intervention
from workbench.method.refusal_math import orthogonalize_embedding, orthogonalize_output_matrix, unit


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


LLAMA_LIKE = ResidualWriters(("model.embed_tokens",), "model.layers", "self_attn.o_proj", "mlp.down_proj")
WEIGHT_LAYOUTS: dict[str, ResidualWriters] = {
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": LLAMA_LIKE,
    "gemma": LLAMA_LIKE,
    "phi3": LLAMA_LIKE,
    "granite": LLAMA_LIKE,
    "gpt2": ResidualWriters(("transformer.wte", "transformer.wpe"), "transformer.h", "attn.c_proj", "mlp.c_proj",
                            conv1d=True),
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


def _orthogonalized(param: Float[Tensor, "*shape"], kind: str, c: Float[Tensor, " d_model"]
                    ) -> Float[Tensor, "*shape"]:
    """A residual writer's parameter (matrix `d_model d_in`, rows `n d_model`, or bias `d_model`) without ĉ."""
    if kind == "matrix":
        return orthogonalize_output_matrix(param, c)
    if kind in ("embedding", "conv1d"):  # rows are residual vectors
        return orthogonalize_embedding(param, c)
    c64 = c.to(torch.float64)
    b64 = param.to(torch.float64)
    return (b64 - (b64 @ c64) * c64).to(param.dtype)


@torch.no_grad()
def orthogonalize_weights_(model: torch.nn.Module, direction: Float[Tensor, " d_model"]) -> None:
    """Bake x ← x − (x·ĉ)ĉ into every residual writer of `model`, in place (unties a tied unembedding)."""
    d_model = model.get_input_embeddings().weight.shape[-1]
    if direction.shape != (d_model,):
        raise WorkbenchError(f"direction has shape {tuple(direction.shape)}, the model's d_model is {d_model}")
    untie_embeddings_(model)
    c = unit(direction.to(torch.float64))
    for _, param, kind in writer_parameters(model):
        param.copy_(_orthogonalized(param, kind, c.to(param.device)))


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
def edited(model: torch.nn.Module, intervention: Intervention) -> Iterator[torch.nn.Module]:
    """`model` with the intervention baked in (ablations into weights, additions as pre-hooks), restored on exit.

    Same function as `interventions.applied` on the hooked model, where at a block input the ablations act before
    the addition: block l sees x + α·v, and the next block input has v's ablated components removed again. So when
    both are present, α·(v − Pv) (P: the ablations' projections) is subtracted from block l's output (unless l is
    the last block). Exact for one ablated direction (or several orthogonal ones).
    Only the residual writers are saved and put back, so a large model is not copied per intervention.
    """
    parts = intervention.parts
    ablations = [p for p in parts if isinstance(p, Ablation)]
    additions = [p for p in parts if isinstance(p, Addition)]
    saved = {}
    handles = []
    if ablations:
        untie_embeddings_(model)
        saved = {name: param.detach().clone() for name, param, _ in writer_parameters(model)}
    try:
        for part in ablations:
            orthogonalize_weights_(model, part.direction)
        n_blocks = len(blocks_of(model))
        for part in additions:
            handles.append(add_to_block_input(model, part.vector, part.layer, part.coeff))
            if ablations and part.layer < n_blocks - 1:
                v = part.vector.to(torch.float64)
                projected = v
                for ablation in ablations:
                    c = unit(ablation.direction.to(torch.float64))
                    projected = projected - (projected @ c) * c
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
