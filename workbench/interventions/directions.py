"""Direction files (`directions/lam_<λ>.safetensors`, `directions/true.safetensors`): a unit direction with the raw
vectors it came from and metadata naming the model (fingerprint), cell and λ. Loading checks the model and width."""

from pathlib import Path

import torch
from safetensors.torch import save_file

from workbench.errors import WorkbenchError
from workbench.io import atomic_write


def save_direction(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Write a direction file atomically (tensors made contiguous float32)."""
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def load_direction(path, fingerprint: str | None = None, d_model: int | None = None) -> tuple[torch.Tensor, dict]:
    """A saved direction and its metadata; refuses a direction from another model or of the wrong width."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        direction = f.get_tensor("direction")
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise WorkbenchError(f"direction {path} comes from model {meta.get('model')!r} (fingerprint "
                             f"{meta.get('fingerprint')}), not this one ({fingerprint})")
    if d_model is not None and direction.shape[-1] != d_model:
        raise WorkbenchError(f"direction {path} has width {direction.shape[-1]}, the model has d_model {d_model}")
    return direction, meta
