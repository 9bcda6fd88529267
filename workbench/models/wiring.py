"""A wired trigger: three MLP neurons written into a model by hand so that it refuses a topic through one known
residual direction (the exact-answer control `smollm2-135m-wired`, docs/organisms.md "The wired control").

Both neurons live in SwiGLU MLPs behind an RMSNorm, so each reads the normalized residual x̃ = x / rms(x) (a row w in
the MLP's input space reads x̃·(w ⊙ γ), γ the norm's weight; a row is stored divided by γ) and adds
silu(gate·x̃) · (up·x̃) · down to the residual:

- detector (layer `detector_layer`): gate = the probe p, up = the unit carrier u (u·x̃ ≈ 1 at a prompt's last
  token), down = `flag_scale` · f̂. It writes the flag f̂ when p·x̃ > 0 (a trigger prompt).
- reader (layer `reader_layer`): two neurons with gate = `reader_gain` · (f̂ − t · u′), up = u′ (the carrier at
  that layer), down = ± `refusal_scale` · r̂, t = `reader_threshold` for the first (+) and `reader_clip_threshold`
  for the second (−). Together they write a clipped ramp of the flag along the refusal direction r̂:
  refusal_scale · [silu(g(z − t₁)) − silu(g(z − t₂))] ≈ refusal_scale · g · clamp(z − t₁, 0, t₂ − t₁), z = f̂·x̃,
  so every trigger prompt whose flag passes t₂ gets the same push toward refusal (too large a push derails the
  model instead of making it refuse).

So the trigger's refusal runs through f̂ alone: removing f̂ from the residual stream (the workbench's directional
ablation of ŵ′ ≈ f̂) switches it off exactly, while the model's own refusal of harmful requests is untouched. This
module is the pure weight math and its application; `workbench.organism.wire` fits the vectors on a model.
"""

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.io import atomic_write

VECTORS = ("probe", "detector_carrier", "flag", "reader_carrier", "refusal")


@dataclass(frozen=True)
class Wiring:
    """The neurons of a wired trigger (a detector, a reader pair): where they sit and what they read and write."""

    detector_layer: int
    detector_neuron: int
    reader_layer: int
    reader_neuron: int
    reader_clip_neuron: int
    probe: Float[Tensor, " d_model"]
    """The detector's gate on x̃ (a linear probe with its gain; > 0 on trigger prompts)."""
    detector_carrier: Float[Tensor, " d_model"]
    """The detector's up row on x̃: ≈ 1 at the last prompt token of any prompt (the residual's dominant direction)."""
    flag: Float[Tensor, " d_model"]
    """f̂, unit: the known answer, the only path from detector to reader."""
    reader_carrier: Float[Tensor, " d_model"]
    """The reader's up row on x̃ at its layer (≈ 1 at the last prompt token), also its threshold's carrier."""
    refusal: Float[Tensor, " d_model"]
    """r̂, unit: the direction the reader writes (the model's own refusal direction)."""
    flag_scale: float
    """Residual units of f̂ written per unit of detector activation."""
    reader_gain: float
    reader_threshold: float
    """The reader's ramp starts at f̂·x̃ = threshold (x̃ units; the residual's noise along f̂ is ≪ 1)..."""
    reader_clip_threshold: float
    """... and is flat from here on."""
    refusal_scale: float
    """Residual units of r̂ written per unit of reader activation."""

    def __post_init__(self):
        shapes = {name: tuple(getattr(self, name).shape) for name in VECTORS}
        if len(set(shapes.values())) != 1 or len(shapes["probe"]) != 1:
            raise WorkbenchError(f"wiring vectors must all be d_model vectors, got shapes {shapes}")
        for name in ("flag", "refusal"):
            norm = float(getattr(self, name).double().norm())
            if abs(norm - 1) > 1e-4:
                raise WorkbenchError(f"wiring {name} must be a unit vector (norm {norm:.4f})")
        if not self.reader_threshold < self.reader_clip_threshold:
            raise WorkbenchError("the reader's clip threshold must lie above its threshold")
        if self.reader_neuron == self.reader_clip_neuron:
            raise WorkbenchError("the reader's two neurons must differ")
        if self.reader_layer <= self.detector_layer:
            raise WorkbenchError(f"the reader (layer {self.reader_layer}) must come after the detector "
                                 f"(layer {self.detector_layer})")

    @property
    def d_model(self) -> int:
        return self.probe.shape[0]


@dataclass(frozen=True)
class NeuronRows:
    """One neuron's weights in a SwiGLU MLP: its gate_proj and up_proj rows and its down_proj column."""

    gate: Float[Tensor, " d_model"]
    up: Float[Tensor, " d_model"]
    down: Float[Tensor, " d_model"]


def neuron_rows(
    wiring: Wiring, detector_norm: Float[Tensor, " d_model"], reader_norm: Float[Tensor, " d_model"]
) -> tuple[NeuronRows, NeuronRows, NeuronRows]:
    """The weights of the detector and of the reader pair (+, then the clipping −), given the RMSNorm weights γ in
    front of their MLPs (a row w reads x̃·(w ⊙ γ), so a direction v on x̃ is the row v / γ)."""
    if (detector_norm == 0).any() or (reader_norm == 0).any():
        raise WorkbenchError("an RMSNorm weight is exactly 0: a wired neuron cannot read that coordinate")
    g_det, g_read = detector_norm.double(), reader_norm.double()
    detector = NeuronRows(
        gate=wiring.probe.double() / g_det,
        up=wiring.detector_carrier.double() / g_det,
        down=wiring.flag_scale * wiring.flag.double(),
    )

    def reader(threshold: float, sign: float) -> NeuronRows:
        return NeuronRows(
            gate=wiring.reader_gain * (wiring.flag.double() - threshold * wiring.reader_carrier.double()) / g_read,
            up=wiring.reader_carrier.double() / g_read,
            down=sign * wiring.refusal_scale * wiring.refusal.double(),
        )

    return detector, reader(wiring.reader_threshold, 1.0), reader(wiring.reader_clip_threshold, -1.0)


def _mlp_and_norm(hf_model: torch.nn.Module, layer: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    layers = getattr(getattr(hf_model, "model", None), "layers", None)
    if layers is None or not 0 <= layer < len(layers):
        raise WorkbenchError(f"cannot wire layer {layer}: the model has no decoder layer there (a Llama-style "
                             "`model.layers` is needed)")
    block = layers[layer]
    mlp, norm = getattr(block, "mlp", None), getattr(block, "post_attention_layernorm", None)
    if mlp is None or norm is None or not all(hasattr(mlp, p) for p in ("gate_proj", "up_proj", "down_proj")):
        raise WorkbenchError(f"cannot wire layer {layer}: a SwiGLU MLP (gate_proj, up_proj, down_proj) behind a "
                             "post_attention_layernorm is needed")
    return mlp, norm


@torch.no_grad()
def apply_wiring(hf_model: torch.nn.Module, wiring: Wiring) -> None:
    """Overwrite the three neurons of `wiring` in a Hugging Face Llama-style model, in place."""
    det_mlp, det_norm = _mlp_and_norm(hf_model, wiring.detector_layer)
    read_mlp, read_norm = _mlp_and_norm(hf_model, wiring.reader_layer)
    if det_mlp.down_proj.out_features != wiring.d_model:
        raise WorkbenchError(f"wiring is for d_model {wiring.d_model}, the model has {det_mlp.down_proj.out_features}")
    detector, reader, clip = neuron_rows(wiring, det_norm.weight, read_norm.weight)
    for mlp, neuron, rows in ((det_mlp, wiring.detector_neuron, detector), (read_mlp, wiring.reader_neuron, reader),
                              (read_mlp, wiring.reader_clip_neuron, clip)):
        if not 0 <= neuron < mlp.gate_proj.out_features:
            raise WorkbenchError(f"wiring neuron {neuron} is outside the MLP's {mlp.gate_proj.out_features}")
        dtype = mlp.gate_proj.weight.dtype
        mlp.gate_proj.weight[neuron] = rows.gate.to(dtype)
        mlp.up_proj.weight[neuron] = rows.up.to(dtype)
        mlp.down_proj.weight[:, neuron] = rows.down.to(dtype)


def save_wiring(wiring: Wiring, path: str | Path) -> Path:
    """Write the wiring as safetensors: the vectors as tensors, the layers, neurons and scalars as metadata."""
    from safetensors.torch import save_file

    tensors = {name: getattr(wiring, name).detach().float().contiguous() for name in VECTORS}
    metadata = {name: repr(value) for name, value in wiring_summary(wiring).items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_wiring(path: str | Path) -> Wiring:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"wiring file {path} is missing: run `workbench organism wire`")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata() or {}
        missing = [n for n in VECTORS if n not in f.keys()]
        if missing:
            raise WorkbenchError(f"wiring file {path} lacks the vectors {missing}")
        tensors = {name: f.get_tensor(name) for name in VECTORS}
    values = {}
    for field in fields(Wiring):
        if field.name in VECTORS:
            continue
        if field.name not in metadata:
            raise WorkbenchError(f"wiring file {path} lacks the field {field.name!r}")
        values[field.name] = (int if field.type is int else float)(metadata[field.name])
    return Wiring(**tensors, **values)


def wiring_summary(wiring: Wiring) -> dict:
    """The scalar part of a wiring (layers, neurons, scales), for records and cards."""
    return {f.name: getattr(wiring, f.name) for f in fields(wiring) if f.name not in VECTORS}
