"""A harmfulness gate and the gated intervention: apply an intervention only to prompts the gate reads as not harmful.

`Gate`: a unit probe d̂ read from `resid_pre` of block `layer` at prompt position `pos` (negative: counted from the end
of the left-padded prompt; −1 is the last EOI token, −(n_eoi + 1) the last instruction token) and a threshold: the gate
*opens* (lets the intervention act) where x·d̂ < threshold. It is fitted and chosen by `workbench gate`
(`workbench.stages.gate`) and saved as `gate.safetensors` (the probe, its cell, threshold, the let-through bound it was
chosen for, the model's fingerprint).

`Gated(inner, gate)`: the decision is taken once per prompt at prefill, on the unmodified model (a forward pass up to
the gate's layer: the probe was fitted on unmodified activations), and held for the whole generation; in a batch each
row decides for itself. On the hooked model every hook of `inner` is wrapped so that closed rows keep their input
unchanged (`gated_hooks`): a gate that always opens is exactly `inner`, one that never opens exactly the baseline.
A gated intervention has no weight form (the weights cannot depend on the prompt): it is served by *routing*, each
prompt sent to the base model or to the edited one (`route`; `workbench.eval.backends`).
"""

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities import get_act_name

from workbench.errors import WorkbenchError
from workbench.interventions.hooks import Ablation, Addition, Combined, Hook
from workbench.io import atomic_write
from workbench.method.gate_probe import opens
from workbench.models.fingerprint import check_made_for

GATE_FILE = "directions/gate.safetensors"
"""Where `workbench gate` writes the gate of a run (beside the direction it gates)."""
GATE_META_KEYS = ("model", "fingerprint", "layer", "pos", "threshold", "bound")


@dataclass(frozen=True, eq=False)
class Gate:
    """A linear harmfulness probe at one cell with the threshold below which it opens."""

    probe: Float[Tensor, " d_model"]
    layer: int
    pos: int
    threshold: float
    bound: float
    """The share of harmful contrast prompts the threshold was chosen to let through at most."""
    meta: dict

    def __post_init__(self):
        if self.probe.dim() != 1 or not bool(torch.isfinite(self.probe).all()) or float(self.probe.norm()) == 0:
            raise WorkbenchError(f"gate probe must be one finite non-zero vector, got shape {tuple(self.probe.shape)}")
        if self.pos >= 0:
            raise WorkbenchError(f"gate position must be negative (counted from the prompt's end), got {self.pos}")
        if math.isnan(self.threshold):
            raise WorkbenchError("gate has no threshold (NaN)")

    def check_model(self, fingerprint: str, d_model: int, n_layers: int | None = None, where: str = "the gate"
                    ) -> None:
        """Refuse a gate made for another model (fingerprint, width or depth)."""
        check_made_for(where, self.meta, fingerprint, None, "fit a gate for this model with `workbench gate --run DIR`")
        if self.probe.shape[0] != d_model:
            raise WorkbenchError(f"{where} has width {self.probe.shape[0]}, the model has d_model {d_model}: it was "
                                 "fitted on another model")
        if n_layers is not None and not 0 <= self.layer < n_layers:
            raise WorkbenchError(f"{where} reads layer {self.layer}, outside the model's 0..{n_layers - 1}")


def save_gate(path: str | Path, gate: Gate) -> Path:
    """Write a gate file atomically: tensor `probe`, metadata (every value a string) with its cell and threshold."""
    meta = {**{k: str(v) for k, v in gate.meta.items()}, "layer": str(gate.layer), "pos": str(gate.pos),
            "threshold": repr(float(gate.threshold)), "bound": repr(float(gate.bound)), "kind": "gate"}
    tensors = {"probe": gate.probe.float().contiguous()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return Path(path)


def load_gate(path: str | Path) -> Gate:
    """A gate file, checked: missing, damaged, without a probe or without a threshold is a one-line error.

        gate = wb.load_gate("runs/default/directions/gate.safetensors")
    """
    from safetensors import safe_open

    path = Path(path)
    hint = "write it with `workbench gate --run DIR`"
    if not path.is_file():
        raise WorkbenchError(f"gate file {path} is missing: {hint}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            probe = f.get_tensor("probe") if "probe" in set(f.keys()) else None
    except Exception as exc:  # safetensors' own error types for a bad header or a short file
        raise WorkbenchError(f"gate file {path} is corrupted or truncated ({type(exc).__name__}: {exc}): {hint}"
                             ) from None
    if probe is None:
        raise WorkbenchError(f"{path} holds no gate probe (not a gate file; a direction file?): {hint}")
    missing = [k for k in GATE_META_KEYS if k not in meta]
    if missing:
        what = "no threshold" if missing == ["threshold"] else f"no {', '.join(missing)} in its metadata"
        raise WorkbenchError(f"gate file {path} has {what}: {hint}")
    try:
        layer, pos, threshold, bound = int(meta["layer"]), int(meta["pos"]), float(meta["threshold"]), \
            float(meta["bound"])
    except ValueError:
        raise WorkbenchError(f"gate file {path} has a malformed layer, position, threshold or bound: {hint}") from None
    rest = {k: v for k, v in meta.items() if k not in ("layer", "pos", "threshold", "bound", "kind")}
    return Gate(probe.float(), layer, pos, threshold, bound, rest)


def is_gate_file(path: str | Path) -> bool:
    """Whether `path` is a readable safetensors file whose metadata says it is a gate (anything else: False)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("kind") == "gate"
    except Exception:  # noqa: BLE001 — missing or not safetensors: not a gate (the direction check says why)
        return False


# ---- decisions ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def gate_scores(lm, gate: Gate, instructions: Sequence[str], batch_size: int = 32, progress: bool = False
                ) -> Float[Tensor, " n"]:
    """x·d̂ of each instruction (chat-formatted, left-padded) at the gate's cell on the unmodified model: one forward
    pass up to the gate's layer per batch (float64, on the CPU)."""
    probe = gate.probe.double()
    captured: dict[str, Tensor] = {}

    def capture(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
        captured["x"] = x[:, gate.pos, :].detach().double().cpu()
        return x

    out = []
    for start in tqdm(range(0, len(instructions), batch_size), desc="gate", unit="batch", disable=not progress):
        batch = lm.chat.tokenize(list(instructions[start : start + batch_size]), device=lm.device)
        if batch.input_ids.shape[1] < -gate.pos:
            raise WorkbenchError(f"gate position {gate.pos}: prompts of {batch.input_ids.shape[1]} tokens are shorter")
        lm.model.run_with_hooks(batch.input_ids, attention_mask=batch.attention_mask,
                                fwd_hooks=[(get_act_name("resid_pre", gate.layer), capture)],
                                stop_at_layer=gate.layer + 1)
        out.append(captured.pop("x") @ probe)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def decide(lm, gate: Gate, instructions: Sequence[str], batch_size: int = 32) -> Bool[Tensor, " n"]:
    """Where the gate opens for each instruction (True: the gated intervention acts on it)."""
    return opens(gate_scores(lm, gate, instructions, batch_size), gate.threshold)


# ---- the gated intervention ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Gated:
    """`inner` applied only to the prompts `gate` opens for (decided at prefill, held through generation)."""

    inner: "Ablation | Addition | Combined"
    gate: Gate
    label: str = "gated"

    @property
    def parts(self):
        return self.inner.parts

    def hooks(self, n_layers: int) -> list[Hook]:
        raise WorkbenchError(f"{self.label} is gated: its hooks depend on each prompt's gate decision; generate with "
                             "`gated_generate` (or route prompts with `route`)")


def refuse_weight_form(intervention, what: str) -> None:
    """The one-line error for a gated intervention asked for as weights (an export, an edited copy)."""
    if isinstance(intervention, Gated):
        raise WorkbenchError(f"{intervention.label} is gated and cannot be baked into weights ({what}): the weights "
                             "cannot depend on the prompt. Export its inner w′ instead (`workbench export --adapter "
                             "--lam λ`) and route each prompt with the gate: `workbench evaluate --backend openai` "
                             "sends the prompts the gate opens for to that adapter and the rest to the base model")


def gated_hooks(hooks: list[Hook], open_rows: Bool[Tensor, " batch"]) -> list[Hook]:
    """Each hook applied to the rows where `open_rows` is True; the other rows keep their input unchanged."""

    def wrap(fn: Callable) -> Callable:
        def hook(x: Float[Tensor, "batch seq d_model"], hook) -> Float[Tensor, "batch seq d_model"]:
            if x.shape[0] != open_rows.shape[0]:
                raise WorkbenchError(f"gated hook: a batch of {x.shape[0]} rows, {open_rows.shape[0]} gate decisions")
            mask = open_rows.to(x.device)[:, None, None]
            return torch.where(mask, fn(x, hook), x)

        return hook

    return [(name, wrap(fn)) for name, fn in hooks]


@contextmanager
def gated_applied(lm, gated: Gated, open_rows: Bool[Tensor, " batch"]) -> Iterator:
    """The hooked model with `gated.inner` acting on the rows where `open_rows` is True (every forward pass of the
    context must have that batch: the prefill and each generated token)."""
    hooks = gated_hooks(gated.inner.hooks(lm.info.n_layers), open_rows)
    with lm.model.hooks(fwd_hooks=hooks):
        yield lm


def route(open_rows: Bool[Tensor, " n"], items: Sequence) -> tuple[list, list]:
    """(the items the gate opens for, the others), each in order: what goes to the edited model and to the base."""
    opened = [x for x, o in zip(items, open_rows.tolist(), strict=True) if o]
    closed = [x for x, o in zip(items, open_rows.tolist(), strict=True) if not o]
    return opened, closed


def merge(open_rows: Bool[Tensor, " n"], opened: Sequence, closed: Sequence) -> list:
    """The inverse of `route`: one list in the original order."""
    it_open, it_closed = iter(opened), iter(closed)
    return [next(it_open) if o else next(it_closed) for o in open_rows.tolist()]
