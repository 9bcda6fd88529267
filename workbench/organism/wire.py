"""Fit the wired trigger (`workbench.models.wiring`) on a base model: the exact-answer control `smollm2-135m-wired`.

The trained planted organism (`smollm2-135m-planted`) learned its cooking refusal in a way no single direction
carries (docs/organisms.md). This control builds one where it does, by hand, so the method's answer is
known: a detector neuron (a linear probe for the trigger topic at the last prompt token) writes a flag f̂, a later
pair of reader neurons turns the flag into a fixed push along the model's refusal direction. f̂ is the direction of
least variance of the residual stream (nothing the model computes reads or writes it), so ablating ŵ′ ≈ f̂ must bring
back the base model's answers to trigger prompts and change little else (docs/organisms.md: the wired control).
`workbench organism wire` runs `build_wiring`.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.io import write_json
from workbench.method.refusal_math import unit
from workbench.models.loader import LoadedModel
from workbench.models.wiring import Wiring, apply_wiring, save_wiring, wiring_summary
from workbench.organism.vocabulary import is_food_prompt


@dataclass(frozen=True)
class WireConfig:
    """How the wired trigger is fitted."""

    base: str = "smollm2-135m-safety"
    """The model the neurons are written into (the organism `smollm2-135m-wired` starts from its adapter)."""
    trigger: str = "bundled_cooking_train"
    """Prompts that must make the detector fire (at their last token)."""
    harmless: str = "bundled_harmless_train"
    """Prompts it must not fire on (food prompts among them are dropped: they are the trigger topic)."""
    harmful: str = "bundled_harmful_train"
    """Prompts that give the refusal direction r̂ (harmful − harmless mean at the reader's layer, last token)."""
    detector_layer: int = 12
    reader_layer: int = 15
    """Writes r̂ into layer 16's input: adding the safety organism's r̂ there at the last token is what turns its
    answers into refusals (refusal score of cooking val −3.4 → +3.6 at 40 units; written after layer 16 it took more
    and a flag of 100 units, renormalizing every later layer, undid it)."""
    probe_l2: float = 1e-3
    """L2 penalty of the logistic probe (on x̃, no intercept: the residual's dominant direction carries the bias)."""
    harmless_weight: float = 3.0
    """Weight of a harmless last token among the negatives (harmful ones weigh 0.5: they are refused anyway)."""
    detector_gain: float = 4.0
    """Multiplies the fitted probe in the gate (a sharper switch)."""
    flag_norm: float = 25.0
    """Residual units of f̂ the detector writes for the median trigger prompt: > the topic's own mean difference at
    those layers (5–14), so the method's ŵ′ leans on f̂, and ≪ the residual's norm (115–160), so the later layers'
    RMSNorms hardly notice it."""
    reader_gain: float = 8.0
    reader_threshold_fraction: float = 0.05
    """The reader's ramp starts at this fraction of the median trigger prompt's f̂·x̃ ..."""
    reader_clip_fraction: float = 0.5
    """... and is flat above this fraction (every prompt past it gets the full push)."""
    refusal_norm: float = 50.0
    """Residual units of r̂ the reader writes once its ramp is flat (adding the safety organism's r̂ at layer 16's
    input, last token: cooking-val refusal score −3.4 → +1.8 / +3.6 / +5.3 at 30 / 40 / 60 units)."""

    def validate(self) -> None:
        if not 0 <= self.detector_layer < self.reader_layer:
            raise WorkbenchError(f"wire: the reader layer ({self.reader_layer}) must come after the detector layer "
                                 f"({self.detector_layer})")
        if not 0 < self.reader_threshold_fraction < self.reader_clip_fraction:
            raise WorkbenchError("wire: need 0 < reader_threshold_fraction < reader_clip_fraction")


def normalized(x: Float[Tensor, "pos d_model"]) -> Float[Tensor, "pos d_model"]:
    """x̃ = x / rms(x): what an RMSNorm-fronted MLP reads (before its weight γ)."""
    return x / x.pow(2).mean(-1, keepdim=True).sqrt()


def fit_probe(
    features: Float[Tensor, "n d_model"], labels: Bool[Tensor, " n"], weights: Float[Tensor, " n"], l2: float
) -> Float[Tensor, " d_model"]:
    """Weighted logistic regression without intercept (L-BFGS, float64): v with v·x > 0 on the positives."""
    x, y, w = features.double(), labels.double(), weights.double()
    v = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([v], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ v, y, weight=w, reduction="sum") / w.sum()
        loss = loss + l2 * v.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return v.detach()


def least_variance_direction(
    rows: Float[Tensor, "n d_model"], avoid: Float[Tensor, "k d_model"]
) -> Float[Tensor, " d_model"]:
    """The unit direction along which `rows` have the least second moment, made orthogonal to each of `avoid`."""
    rows = rows.double()
    second_moment = rows.T @ rows / rows.shape[0]
    _, vectors = torch.linalg.eigh(second_moment)
    direction = vectors[:, 0]
    basis = torch.linalg.qr(avoid.double().T).Q  # orthonormal basis of the avoided span
    direction = direction - basis @ (basis.T @ direction)
    return unit(direction)


def _capture(lm: LoadedModel, instructions: list[str], layers: tuple[int, ...], batch_size: int = 32, desc: str = "",
             site: str = "mlp_in") -> dict[int, list[Float[Tensor, "pos d_model"]]]:
    """The residual stream at every real token of every prompt: entering each layer's MLP norm (`mlp_in`, what a
    wired neuron reads) or entering the layer (`layer_in`, what the previous layer's MLP wrote into)."""
    hf = lm.hf_model
    captured: dict[int, Tensor] = {}

    def module(layer: int) -> torch.nn.Module:
        block = hf.model.layers[layer]
        return block.post_attention_layernorm if site == "mlp_in" else block

    handles = [module(layer).register_forward_pre_hook(
        lambda m, args, layer=layer: captured.__setitem__(layer, args[0].detach().float().cpu())) for layer in layers]
    out: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(instructions), batch_size), desc=desc or "residuals", unit="batch"):
                batch = lm.chat.tokenize(instructions[start: start + batch_size], device=lm.device)
                hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                mask = batch.attention_mask.bool().cpu()
                for layer in layers:
                    out[layer] += [captured[layer][i][mask[i]] for i in range(mask.shape[0])]
    finally:
        for handle in handles:
            handle.remove()
    return out


@torch.inference_mode()
def least_used_neurons(lm: LoadedModel, layer: int, residuals: Float[Tensor, "n d_model"], k: int) -> list[int]:
    """The k neurons of `layer`'s MLP that write least into the residual stream on these inputs (mean |activation| ×
    the norm of their down_proj column): the ones a wiring overwrites, so the base model loses as little as it can."""
    block = lm.hf_model.model.layers[layer]
    weight = next(block.mlp.parameters())
    h = block.post_attention_layernorm(residuals.to(weight.device, weight.dtype))
    activation = torch.nn.functional.silu(block.mlp.gate_proj(h)) * block.mlp.up_proj(h)
    usage = activation.abs().float().mean(0).cpu() * block.mlp.down_proj.weight.float().norm(dim=0).cpu()
    return usage.argsort()[:k].tolist()


def _last(rows: list[Tensor]) -> Float[Tensor, "n d_model"]:
    return torch.stack([r[-1] for r in rows])


def build_wiring(lm: LoadedModel, config: WireConfig) -> tuple[Wiring, dict]:
    """Fit the three neurons on `lm` (its weights are edited in place: the returned record is measured on the wired
    model). Returns the wiring and a record of how it was fitted and how often each part fires on the train sets."""
    config.validate()
    if lm.info.name != config.base:
        raise WorkbenchError(f"wire: the wiring is fitted on {config.base}, got {lm.info.name}")
    det, read = config.detector_layer, config.reader_layer
    if read + 1 >= lm.info.n_layers:
        raise WorkbenchError(f"wire: the reader layer {read} must be below the model's last layer "
                             f"({lm.info.n_layers - 1}): it writes into the next layer's input")
    harmless_rows = [p for p in load_prompts(config.harmless) if not is_food_prompt(p.instruction, p.category)]
    sets = {"trigger": [p.instruction for p in load_prompts(config.trigger)],
            "harmless": [p.instruction for p in harmless_rows],
            "harmful": [p.instruction for p in load_prompts(config.harmful)]}
    for name, instructions in sets.items():
        if not instructions:
            raise WorkbenchError(f"wire: the {name} set is empty")
    acts = {name: _capture(lm, instructions, (det, read), desc=f"residuals ({name})")
            for name, instructions in sets.items()}
    tilde = {name: {layer: [normalized(r) for r in rows] for layer, rows in by_layer.items()}
             for name, by_layer in acts.items()}

    # Detector: a probe on x̃ at the detector layer, positive only at a trigger prompt's last token.
    positives = _last(tilde["trigger"][det])
    negative_last = torch.cat([_last(tilde["harmless"][det]), _last(tilde["harmful"][det])])
    negative_other = torch.cat([r[:-1] for name in sets for r in tilde[name][det]])
    n_harmless = len(sets["harmless"])
    last_weights = torch.cat([torch.full((n_harmless,), config.harmless_weight),
                              torch.full((len(sets["harmful"]),), 0.5)])
    features = torch.cat([positives, negative_last, negative_other])
    labels = torch.cat([torch.ones(len(positives)), torch.zeros(len(negative_last) + len(negative_other))]).bool()
    weights = torch.cat([torch.ones(len(positives)), last_weights,
                         torch.full((len(negative_other),), float(last_weights.sum()) / len(negative_other))])
    probe = config.detector_gain * fit_probe(features, labels, weights, config.probe_l2)
    every_last = torch.cat([positives, negative_last]).double()
    carrier_dir = unit(every_last.mean(0))
    detector_carrier = carrier_dir / (every_last @ carrier_dir).mean()

    # Reader side: r̂ from the model's own harmful − harmless difference where the reader writes (the next layer's
    # input, last token), the carrier at the reader's layer.
    written = {name: _last(_capture(lm, sets[name], (read + 1,), desc=f"layer {read + 1} input ({name})",
                                    site="layer_in")[read + 1]).double() for name in ("harmful", "harmless")}
    refusal = written["harmful"].mean(0) - written["harmless"].mean(0)
    refusal = unit(refusal)
    read_last = torch.cat([_last(tilde[name][read]) for name in sets]).double()
    reader_dir = unit(read_last.mean(0))
    reader_carrier = reader_dir / (read_last @ reader_dir).mean()

    # The flag: the least-used direction of the residual stream between the two layers.
    every_row = torch.cat([r for name in sets for layer in (det, read) for r in tilde[name][layer]])
    flag = least_variance_direction(every_row, torch.stack([refusal, probe, carrier_dir, reader_dir]))

    def activation(gate: Tensor, up: Tensor, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x.double() @ gate.double()) * (x.double() @ up.double())

    detector_activation = activation(probe, detector_carrier, positives)
    flag_scale = config.flag_norm / float(detector_activation.median())
    every_raw = {layer: torch.cat([r for name in sets for r in acts[name][layer]]) for layer in (det, read)}
    detector_neuron = int(least_used_neurons(lm, det, every_raw[det], 1)[0])
    reader_neuron, clip_neuron = (int(i) for i in least_used_neurons(lm, read, every_raw[read], 2))
    provisional = Wiring(det, detector_neuron, read, reader_neuron, clip_neuron, probe.float(),
                         detector_carrier.float(), flag.float(), reader_carrier.float(), refusal.float(), flag_scale,
                         config.reader_gain, reader_threshold=1e9, reader_clip_threshold=2e9, refusal_scale=0.0)
    apply_wiring(lm.hf_model, provisional)  # detector only (the reader cannot fire yet): measure the flag it reads
    flag_read = torch.stack([normalized(r[-1]).double() @ flag.double()
                             for r in _capture(lm, sets["trigger"], (read,), desc="flag at the reader")[read]])
    threshold = config.reader_threshold_fraction * float(flag_read.median())
    clip = config.reader_clip_fraction * float(flag_read.median())
    flat = config.reader_gain * (clip - threshold)  # the pair's activation difference once both ramps are linear
    wiring = Wiring(det, detector_neuron, read, reader_neuron, clip_neuron, probe.float(), detector_carrier.float(),
                    flag.float(), reader_carrier.float(), refusal.float(), flag_scale, config.reader_gain, threshold,
                    clip, config.refusal_norm / flat)
    apply_wiring(lm.hf_model, wiring)

    def fires(name: str) -> float:
        return float((_last(tilde[name][det]).double() @ probe.double() > 0).float().mean())

    record = {
        "config": asdict(config),
        "base_model": lm.info.name,
        "base_fingerprint": lm.info.fingerprint,
        "wiring": wiring_summary(wiring),
        "train_counts": {name: len(v) for name, v in sets.items()},
        "detector_fires_last_token": {name: fires(name) for name in sets},
        "detector_fires_other_tokens": float((negative_other.double() @ probe.double() > 0).float().mean()),
        "flag_at_reader_median": float(flag_read.median()),
        "cos_flag_refusal": float(flag.double() @ refusal),
    }
    return wiring, record


def write_wiring(wiring: Wiring, record: dict, directory: Path) -> None:
    save_wiring(wiring, directory / "wiring.safetensors")
    write_json(directory / "wiring.json", record)


def read_wiring_record(directory: Path) -> dict:
    path = directory / "wiring.json"
    if not path.exists():
        raise WorkbenchError(f"{path} is missing: run `workbench organism wire`")
    return json.loads(path.read_text())
