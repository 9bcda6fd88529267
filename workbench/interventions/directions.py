"""Direction files (`directions/lam_<λ>.safetensors`, `directions/r.safetensors`): a unit direction with the raw
vectors it came from and metadata naming the model (fingerprint), cell and λ; in a run with token means also the
affine ablation's offsets (`offsets_harmless_mean`: M_l·ĉ per layer). Loading checks the model and width."""

from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.io import atomic_write
from workbench.models.fingerprint import check_made_for

OFFSETS_KEY = "offsets_harmless_mean"
"""The tensor of a direction file holding its affine-ablation offsets μ_l = M_l·ĉ [n_layer]."""


def save_direction(path: Path, tensors: dict[str, Float[Tensor, " _"]], meta: dict[str, str]) -> Path:
    """Write a direction file atomically: the unit `direction`, the raw vectors it came from and, where given, the
    offsets (float32)."""
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def _select_command(path: Path) -> str:
    """The command that (re)writes a direction file: `workbench select` on the run it lies in."""
    run = path.parent.parent if path.parent.name == "directions" else "DIR"
    return f"`workbench select --run {run}`"


def read_direction_file(path: str | Path, keys: tuple[str, ...] = ("direction",)
                        ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors named in `keys` and the metadata of a direction file, checked: a missing, truncated or
    corrupted file, or one without those tensors, is a one-line error naming the file and `workbench select`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"direction file {path} is missing: run {_select_command(path)} to write it")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            present = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys if k in present}
    except Exception as exc:  # safetensors raises its own error types for a bad header or a short file
        raise WorkbenchError(f"direction file {path} is corrupted or truncated (not a readable safetensors file: "
                             f"{type(exc).__name__}: {exc}): re-run {_select_command(path)} to rewrite it") from None
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise WorkbenchError(f"direction file {path} has no tensor {', '.join(map(repr, missing))} (not a file "
                             f"written by `workbench select`): re-run {_select_command(path)} to rewrite it")
    return tensors, meta


def load_direction(path: str | Path, fingerprint: str | None = None, d_model: int | None = None
                   ) -> tuple[Float[Tensor, " d_model"], dict]:
    """A saved direction and its metadata, checked (`read_direction_file`); refuses a direction from another model
    (by fingerprint) or of the wrong width."""
    tensors, meta = read_direction_file(path, ("direction",))
    direction = tensors["direction"]
    if direction.ndim != 1:
        raise WorkbenchError(f"direction {path} holds a tensor of shape {tuple(direction.shape)}, not one vector: "
                             f"re-run {_select_command(Path(path))} to rewrite it")
    if fingerprint is not None:
        check_made_for(f"direction {path}", meta, fingerprint, None, "use a direction selected for this model (run "
                       "`workbench select` on a run extracted from it)")
    if d_model is not None and direction.shape[-1] != d_model:
        raise WorkbenchError(f"direction {path} has width {direction.shape[-1]}, the model has d_model {d_model}: "
                             "it was selected for another model; use a direction selected for this one")
    return direction, meta


def load_offsets(path: str | Path, n_layers: int | None = None) -> Float[Tensor, " n_layer"]:
    """The affine-ablation offsets of a direction file; a file without them is refused with what to do."""
    read_direction_file(path, ())  # missing or damaged: the checked error
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if OFFSETS_KEY not in set(f.keys()):
            raise WorkbenchError(
                f"direction file {path} has no affine-ablation offsets ({OFFSETS_KEY!r}): re-run "
                f"{_select_command(Path(path))} on a run with token means (`workbench sweep --ablation harmless_mean` "
                "or `workbench evaluate --ablation harmless_mean` computes them)")
        offsets = f.get_tensor(OFFSETS_KEY)
    if offsets.ndim != 1 or (n_layers is not None and offsets.shape[0] != n_layers):
        raise WorkbenchError(f"direction file {path} has offsets of shape {tuple(offsets.shape)}, the model has "
                             f"{n_layers} layers: use a direction selected for this model")
    return offsets.float()
