"""A cheap, stable fingerprint of a model's config and weights, recorded in every artifact."""

import hashlib

import torch

_SAMPLES_PER_TENSOR = 4096


def model_fingerprint(hf_model: torch.nn.Module) -> str:
    """sha256 over the architecture config and, for every parameter, its name, shape and a strided value sample.

    Sampling keeps this fast for 70B models while any edit of a matrix (an orthogonalized direction, a merged
    adapter) changes almost every sampled element.
    """
    digest = hashlib.sha256()
    config = getattr(hf_model, "config", None)
    if config is not None:
        keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")
        digest.update(repr([(k, getattr(config, k, None)) for k in keys]).encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        sample = flat[::step][:_SAMPLES_PER_TENSOR].to("cpu", torch.float32)
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
