"""An intervention exported as a PEFT LoRA adapter for the plain (unedited) base model.

Weight orthogonalization changes every residual writer by a low-rank delta, so an ablation is a LoRA:
- a writer Linear W (`d_model × d_in`, out = W x): W ← W − ĉ(ĉᵀW) is rank 1, `lora_B = −ĉ`, `lora_A = ĉᵀW`
  (`lora_alpha = r`, so PEFT's scaling is 1). Several ablations are applied in order, as `weight_edit.edited` does:
  W_i = W_{i−1} − ĉ_i(ĉ_iᵀW_{i−1}), one rank per direction, `lora_B = [−ĉ_1 … −ĉ_k]`, `lora_A = [ĉ_iᵀW_{i−1}]`;
- the token embedding E (`vocab × d_model`, rows are residual vectors): E ← E − (Eĉ)ĉᵀ, a PEFT embedding LoRA
  (its delta is `(lora_embedding_B @ lora_embedding_A)ᵀ`: `lora_embedding_A = (Eĉ)ᵀ`, `lora_embedding_B = −ĉ`).
  A tied unembedding keeps reading the original E (PEFT adds the LoRA to the embedding's output only), which is
  what `weight_edit` does by untying; peft's `merge_and_unload` keeps it so too (tested with peft 0.21).

An addition x ← x + α·v at the input of block l is a constant, which a LoRA can only carry as a bias on `lora_B`
(PEFT `lora_bias=True`): it goes on the MLP output projection of block l−1, the last writer before block l; at
block 0 it is a rank-1 embedding LoRA instead (every row + α·v). With ablations as well, block l's output also
gets −α(v − Pv) (P: the ablations' projections), as in `weight_edit.edited`. PEFT cannot put a bias on an
embedding's LoRA, so an adapter that needs both biases and an embedding edit (an ablation with an addition)
carries the edited token embedding whole (`modules_to_save`): exact in PEFT, larger, and not served by vLLM.

Refused with a one-line error: affine ablations (`Ablation.offsets`: no weight edit to follow), writers with
biases (exact only with `lora_bias` on every writer and the embedding stored whole: not exported), GPT-2's Conv1D
layout, additions at block 0 of a model that scales its embeddings (Gemma).
`workbench.json` in the adapter directory records the run, model (name, fingerprint) and intervention;
`load_adapter` refuses an adapter made for another model.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.interventions.catalogue import NamedIntervention, signature
from workbench.interventions.gate import Gated, refuse_weight_form
from workbench.interventions.hooks import Ablation, Addition, Intervention
from workbench.interventions.weight_edit import layout_of, writer_parameters
from workbench.io import atomic_dir, refuse_nonempty_dir, write_json
from workbench.method.refusal_math import remove_component, unit
from workbench.models.fingerprint import check_made_for

RECORD = "workbench.json"
"""The adapter directory's record of where it came from (run, model, fingerprint, intervention)."""
INDEX = "index.json"
"""`export --adapter --all`: the adapters written (and the interventions refused, with the reason)."""
PREFIX = "base_model.model."
"""PEFT's key prefix for a causal-LM adapter's tensors."""
SCALED_EMBEDDINGS = frozenset({"gemma"})
"""Architectures that multiply the token embedding by √d_model before block 0."""


@dataclass
class LoraFactors:
    """One module's low-rank delta: `b_cols[i] ⊗ a_rows[i]` summed (Linear: out × in; embedding: as rows ⊗ d_model,
    stored transposed) and an optional bias on `lora_B`."""

    embedding: bool
    a_rows: list[Tensor] = field(default_factory=list)
    b_cols: list[Tensor] = field(default_factory=list)
    bias: Tensor | None = None


@dataclass(frozen=True)
class AdapterWeights:
    """A whole adapter: its rank, the LoRA factors per module, the embeddings stored whole, and the PEFT config."""

    rank: int
    lora: dict[str, LoraFactors]
    saved_embeddings: dict[str, Tensor]
    lora_bias: bool

    def tensors(self) -> dict[str, Tensor]:
        """PEFT's saved tensor names (`adapter_model.safetensors`), every module padded with zeros to `rank`."""
        out = {}
        for name, f in self.lora.items():
            a = torch.stack(f.a_rows + [torch.zeros_like(f.a_rows[0])] * (self.rank - len(f.a_rows)))
            b = torch.stack(f.b_cols + [torch.zeros_like(f.b_cols[0])] * (self.rank - len(f.b_cols)), dim=1)
            if f.embedding:
                out[f"{PREFIX}{name}.lora_embedding_A"], out[f"{PREFIX}{name}.lora_embedding_B"] = a, b
            else:
                out[f"{PREFIX}{name}.lora_A.weight"], out[f"{PREFIX}{name}.lora_B.weight"] = a, b
                if self.lora_bias:
                    out[f"{PREFIX}{name}.lora_B.bias"] = f.bias if f.bias is not None else torch.zeros_like(b[:, 0])
        for name, weight in self.saved_embeddings.items():
            out[f"{PREFIX}{name}.weight"] = weight  # peft's key for a module saved whole
        return {k: v.to(torch.float32).contiguous() for k, v in out.items()}

    def config(self, base: str) -> dict:
        """`adapter_config.json` (built by peft's LoraConfig, so its fields are the installed peft's)."""
        from peft import LoraConfig

        config = LoraConfig(r=self.rank, lora_alpha=self.rank, target_modules=sorted(self.lora), lora_dropout=0.0,
                            bias="none", lora_bias=self.lora_bias, task_type="CAUSAL_LM", inference_mode=True,
                            modules_to_save=sorted(self.saved_embeddings) or None, base_model_name_or_path=base)
        return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}


def _direction_names(intervention: Intervention) -> str:
    return ", ".join(getattr(p, "label", type(p).__name__) for p in intervention.parts)


@torch.no_grad()
def adapter_weights(model: torch.nn.Module, intervention: Intervention | Gated) -> AdapterWeights:
    """The LoRA that turns the plain `model` into `weight_edit.edited(model, intervention)` (see the module
    docstring); `model` is read, not changed."""
    refuse_weight_form(intervention, "a LoRA adapter")
    parts = intervention.parts
    if not parts:
        raise WorkbenchError("the baseline intervention changes nothing: there is no adapter to export")
    affine = [p.label for p in parts if isinstance(p, Ablation) and getattr(p, "offsets", None) is not None]
    if affine:
        raise WorkbenchError(f"cannot export {', '.join(affine)} as a LoRA adapter: an affine ablation (offsets μ_l) "
                             "has no weight edit to follow; export zero-ablations only")
    partial = [p.label for p in parts if isinstance(p, Ablation) and p.strength != 1.0]
    if partial:
        raise WorkbenchError(f"cannot export {', '.join(partial)} as a LoRA adapter: a partial ablation (β < 1) is not "
                             "exported as an adapter; export an edited checkpoint or use hooks")
    layout = layout_of(model)
    writers = writer_parameters(model)
    for name, _, kind in writers:
        if kind == "bias":
            raise WorkbenchError(f"cannot export {_direction_names(intervention)} as a LoRA adapter: residual writer "
                                 f"{name} has a bias, which the ablation changes (it would need lora_bias on every "
                                 "writer and the embedding stored whole; not exported): export an edited checkpoint "
                                 "instead (`workbench export --lam`)")
        if kind == "conv1d":
            raise WorkbenchError(f"cannot export a LoRA adapter for the Conv1D layout of {name} (GPT-2 style): "
                                 "export an edited checkpoint instead (`workbench export --lam`)")
    ablations = [unit(p.direction.to(torch.float64)) for p in parts if isinstance(p, Ablation)]
    additions = [p for p in parts if isinstance(p, Addition)]
    blocks = model.get_submodule(layout.blocks)
    token_embedding = layout.embeddings[0]

    lora: dict[str, LoraFactors] = {}
    edited_embeddings: dict[str, Tensor] = {}
    for name, param, kind in writers:
        module = name.removesuffix(".weight")
        current = param.detach().to(torch.float64)
        factors = LoraFactors(embedding=kind == "embedding")
        for c in ablations:
            c = c.to(current.device)
            if factors.embedding:  # rows ⊗ ĉ: lora_embedding_A = (Eĉ)ᵀ, lora_embedding_B = −ĉ
                a = current @ c
                current = current - torch.outer(a, c)
            else:  # ĉ ⊗ ĉᵀW: lora_A = ĉᵀW, lora_B = −ĉ
                a = c @ current
                current = current - torch.outer(c, a)
            factors.a_rows.append(a)
            factors.b_cols.append(-c)
        if factors.a_rows:
            lora[module] = factors
        if factors.embedding:
            edited_embeddings[module] = current

    biases: dict[str, Tensor] = {}
    for part in additions:
        if not 0 <= part.layer < len(blocks):
            raise WorkbenchError(f"{part.label}: layer {part.layer} is outside the model's 0..{len(blocks) - 1}")
        v = part.vector.to(torch.float64).cpu()
        if part.layer == 0:
            if model.config.model_type in SCALED_EMBEDDINGS:
                raise WorkbenchError(f"cannot export {part.label} as a LoRA adapter: an addition at block 0 of a "
                                     f"{model.config.model_type} model (embeddings scaled by √d_model) is not mapped")
            weight = model.get_submodule(token_embedding).weight
            factors = lora.setdefault(token_embedding, LoraFactors(embedding=True))
            factors.a_rows.append(torch.ones(weight.shape[0], dtype=torch.float64, device=weight.device))
            factors.b_cols.append(part.coeff * v.to(weight.device))
            edited_embeddings[token_embedding] = (edited_embeddings.get(token_embedding, weight.to(torch.float64))
                                                  + part.coeff * v.to(weight.device))
        else:
            writer = f"{layout.blocks}.{part.layer - 1}.{layout.mlp_out}"
            biases[writer] = biases.get(writer, torch.zeros_like(v)) + part.coeff * v
        if ablations and part.layer < len(blocks) - 1:  # the next block input ablates what was added
            projected = v
            for c in ablations:
                projected = remove_component(projected, c.cpu())
            writer = f"{layout.blocks}.{part.layer}.{layout.mlp_out}"
            biases[writer] = biases.get(writer, torch.zeros_like(v)) - part.coeff * (v - projected)

    saved: dict[str, Tensor] = {}
    if biases:  # peft has no lora_bias on an embedding's LoRA: an edited embedding travels whole instead
        for module in [m for m, f in lora.items() if f.embedding]:
            del lora[module]
            saved[module] = edited_embeddings[module]
        for writer, bias in biases.items():
            d_in = model.get_submodule(writer).weight.shape[1]
            factors = lora.setdefault(writer, LoraFactors(embedding=False))
            factors.bias = bias
            if not factors.a_rows:  # a bias-only module: a zero rank-1 pair
                factors.a_rows.append(torch.zeros(d_in, dtype=torch.float64))
                factors.b_cols.append(torch.zeros_like(bias))
    lora = {m: LoraFactors(f.embedding, [a.cpu() for a in f.a_rows], [b.cpu() for b in f.b_cols], f.bias)
            for m, f in lora.items()}
    rank = max(len(f.a_rows) for f in lora.values())  # every part above adds at least one LoRA module
    return AdapterWeights(rank, lora, {m: w.cpu() for m, w in saved.items()}, bool(biases))


def _parts_record(intervention: Intervention) -> list[dict]:
    out = []
    for p in intervention.parts:
        if isinstance(p, Ablation):
            out.append({"kind": "ablation", "label": p.label})
        else:
            out.append({"kind": "addition", "label": p.label, "layer": p.layer, "alpha": p.coeff})
    return out


def write_adapter(plain: torch.nn.Module, model_info, item: NamedIntervention, out_dir: Path, run: str | None
                  ) -> dict:
    """Write `item` as a PEFT adapter for `plain` (the plain base of `model_info`) into the new directory `out_dir`
    (callers write into a `.partial` directory and rename); returns the `workbench.json` record."""
    weights = adapter_weights(plain, item.intervention)
    out_dir.mkdir(parents=True)
    save_file(weights.tensors(), str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    write_json(out_dir / "adapter_config.json", weights.config(model_info.source))
    record = {
        "model": model_info.name, "source": model_info.source, "fingerprint": model_info.fingerprint,
        "run": run, "intervention": item.name, "description": item.description,
        "signature": signature(item.intervention), "parts": _parts_record(item.intervention),
        "rank": weights.rank, "lora_bias": weights.lora_bias, "modules_to_save": sorted(weights.saved_embeddings),
        "base": "the plain (unedited) model: PeftModel.from_pretrained(base, this directory)",
    }
    write_json(out_dir / RECORD, record)
    return record


def export_adapter(lm, item: NamedIntervention, out_dir: str | Path, run: str | None = None,
                   force: bool = False) -> Path:
    """Write one intervention as a PEFT adapter directory for `lm`'s plain base (atomic: a `.partial` sibling)."""
    from workbench.interventions.export import plain_hf_model

    out_dir = Path(out_dir)
    refuse_nonempty_dir(out_dir, force)
    with atomic_dir(out_dir) as tmp:
        write_adapter(plain_hf_model(lm), lm.info, item, tmp, run)
    return out_dir


def export_adapters(lm, items: list[NamedIntervention], out_dir: str | Path, run: str | None = None,
                    force: bool = False) -> dict:
    """One adapter per intervention under `out_dir/<name>/` (the baseline skipped) and `index.json`; an
    intervention no adapter can express is listed under `refused` with the reason. Atomic as a whole."""
    from workbench.interventions.export import plain_hf_model

    out_dir = Path(out_dir)
    refuse_nonempty_dir(out_dir, force)
    plain = plain_hf_model(lm)
    index = {"model": lm.info.name, "fingerprint": lm.info.fingerprint, "run": run, "adapters": {}, "refused": {}}
    with atomic_dir(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for item in items:
            if not item.intervention.parts:
                continue
            try:
                record = write_adapter(plain, lm.info, item, tmp / item.name, run)
            except WorkbenchError as exc:
                index["refused"][item.name] = str(exc)
                continue
            index["adapters"][item.name] = {"path": item.name, "signature": record["signature"],
                                            "rank": record["rank"], "lora_bias": record["lora_bias"],
                                            "modules_to_save": record["modules_to_save"]}
        write_json(tmp / INDEX, index)
    return index


def read_adapter_record(adapter_dir: str | Path) -> dict:
    path = Path(adapter_dir) / RECORD
    if not path.is_file():
        raise WorkbenchError(f"{adapter_dir} has no {RECORD}: not an adapter written by `workbench export --adapter`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path} is corrupted ({exc}): export the adapter again") from None


def check_adapter(adapter_dir: str | Path, fingerprint: str, name: str) -> dict:
    """The adapter's record, if it was made for the model with this fingerprint (else a one-line error)."""
    record = read_adapter_record(adapter_dir)
    check_made_for(f"adapter {adapter_dir}", record, fingerprint, name, "export one from a run of this model",
                   verb="was made for")
    return record


def load_adapter(lm, adapter_dir: str | Path):
    """`lm`'s plain base with the adapter applied through peft (after checking it was made for this model)."""
    from peft import PeftModel

    from workbench.interventions.export import plain_hf_model

    check_adapter(adapter_dir, lm.info.fingerprint, lm.info.name)
    return PeftModel.from_pretrained(plain_hf_model(lm), str(adapter_dir)).eval()


def lora_delta(weights: AdapterWeights, module: str) -> Float[Tensor, "rows cols"]:
    """The dense delta a module's LoRA adds (Linear: out × in; embedding: vocab × d_model), for tests."""
    f = weights.lora[module]
    a, b = torch.stack(f.a_rows), torch.stack(f.b_cols, dim=1)
    return (b @ a).T if f.embedding else b @ a
