"""A cheap, stable fingerprint of a model's config and weights, recorded in every artifact.

It names the weights, not how they were loaded: the same checkpoint in float32, bfloat16 or float16, on any device or
under any device map, has one fingerprint, so a direction selected in float32 on a CPU serves the bfloat16 model on a
GPU. Each sampled value is rounded to bfloat16 (exact for bfloat16 weights, and the rounding a bfloat16 load applies
to float32 or float16 ones), and magnitudes below float16's normal range (2⁻¹⁴) count as 0 (float16 keeps fewer
bits there). An edit below bfloat16's precision (a relative change under about 0.4 %) therefore leaves it unchanged;
every edit the workbench makes (an orthogonalized direction, a merged adapter) moves far more than that.
"""

import hashlib

import torch

from workbench.errors import WorkbenchError

_SAMPLES_PER_TENSOR = 4096
_FLUSH_BELOW = 2.0**-14
"""float16's smallest normal magnitude: sampled values below it are hashed as 0."""


def model_fingerprint(hf_model: torch.nn.Module) -> str:
    """sha256 over the architecture config and, for every parameter, its name, shape and a strided value sample.

    Sampling keeps this fast for 70B models while any edit of a matrix (an orthogonalized direction, a merged
    adapter) changes many sampled elements (at bfloat16 precision: see the module docstring).
    """
    digest = hashlib.sha256()
    config = getattr(hf_model, "config", None)
    if config is not None:
        keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")
        digest.update(repr([(k, getattr(config, k, None)) for k in keys]).encode())
    state = hf_model.state_dict()
    samples = {name: _sample(tensor) for name, tensor in state.items() if not tensor.is_meta}
    samples |= _offloaded_samples(hf_model, {name for name, tensor in state.items() if tensor.is_meta})
    for name, tensor in sorted(state.items()):
        if name not in samples:
            raise WorkbenchError(f"cannot fingerprint the model: {name} is on the meta device and accelerate holds no "
                                 "offloaded copy of it (a device map must put weights on a GPU, 'cpu' or 'disk')")
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(samples[name])
    return digest.hexdigest()[:16]


def _sample(tensor: torch.Tensor) -> bytes:
    """A strided sample of the tensor's values at bfloat16 precision, the same bytes for any dtype it was loaded in."""
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
    values = flat[::step][:_SAMPLES_PER_TENSOR].to("cpu")
    if values.is_floating_point():
        values = values.to(torch.bfloat16).to(torch.float32)
        values = torch.where(values.abs() < _FLUSH_BELOW, torch.zeros_like(values), values)
    return values.to(torch.float32).numpy().tobytes()


def _offloaded_samples(hf_model: torch.nn.Module, names: set[str]) -> dict[str, bytes]:
    """Samples of the tensors accelerate offloaded (meta in the module, the data on the CPU or disk), read one module
    at a time through its offload hook, so the fingerprint equals that of the same weights loaded in full."""
    if not names:
        return {}
    from accelerate.utils import align_module_device, has_offloaded_params

    out = {}
    for prefix, module in hf_model.named_modules(remove_duplicate=False):  # aliases (the bridge's) too
        if not has_offloaded_params(module):
            continue
        with align_module_device(module, torch.device("cpu")):
            tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for local, tensor in tensors:
                name = f"{prefix}.{local}" if prefix else local
                if name in names and not tensor.is_meta:
                    out[name] = _sample(tensor)
    return out


def check_made_for(what: str, recorded: dict, fingerprint: str, name: str | None, remedy: str,
                   verb: str = "comes from") -> None:
    """The one "made for another model" check: refuse an artifact (`what`: a direction, a gate, an adapter, a run
    directory) whose record (`recorded`: its `fingerprint` and model `name` or `model`) names other weights than the
    model with `fingerprint` (called `name`, or "this one"), with a one-line error ending in `remedy`."""
    if recorded.get("fingerprint") == fingerprint:
        return
    other = recorded.get("model", recorded.get("name"))
    this = repr(name) if name is not None else "this one"
    raise WorkbenchError(f"{what} {verb} model {other!r} (fingerprint {recorded.get('fingerprint')}), not {this} "
                         f"({fingerprint}): {remedy}")
