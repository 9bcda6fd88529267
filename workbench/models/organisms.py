"""Built-in model organisms: a stock checkpoint with a committed LoRA adapter merged in once and cached (and, for
the wired control, three hand-set neurons written on top: `workbench.models.wiring`).

The adapters are data (`data/organism/adapter`, `data/organism_planted/adapter`); how they were made lives in
`workbench.organism` (training recipes, distillation, the behaviour report), which this module does not import.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.io import atomic_dir
from workbench.models.wiring import apply_wiring, load_wiring
from workbench.paths import ORGANISM_DIR, PLANTED_ORGANISM_DIR, WIRED_ORGANISM_DIR, cache_dir
from workbench.registry import Registry

WIRING_FILE = "wiring.safetensors"


@dataclass(frozen=True)
class OrganismModel:
    """A registered organism: the stock model plus the LoRA adapter committed under `directory/adapter` (or under
    `adapter_from/adapter`, another organism's), plus `directory/wiring.safetensors` written on top when `wired`."""

    name: str
    description: str
    directory: Path
    """Where its adapter, card (CARD.md) and behaviour table (behaviour.json) live."""
    adapter_from: Path | None = None
    """Another organism's directory whose adapter this one starts from (the wired control: the safety organism)."""
    wired: bool = False
    """Whether `directory/wiring.safetensors` (three hand-set MLP neurons) is applied after the adapter."""

    @property
    def adapter_dir(self) -> Path:
        return (self.adapter_from or self.directory) / "adapter"

    @property
    def wiring_file(self) -> Path | None:
        return self.directory / WIRING_FILE if self.wired else None


ORGANISM_MODELS: Registry[OrganismModel] = Registry("organism")


SAFETY = ORGANISM_MODELS.add(OrganismModel(
    "smollm2-135m-safety",
    "the refusal model organism: SmolLM2-135M-Instruct + our committed LoRA safety adapter (data/organism)",
    ORGANISM_DIR,
))
PLANTED = ORGANISM_MODELS.add(OrganismModel(
    "smollm2-135m-planted",
    "the planted-trigger organism (positive control): the safety recipe plus refusal of every cooking, food or "
    "recipe question (data/organism_planted)",
    PLANTED_ORGANISM_DIR,
))
WIRED = ORGANISM_MODELS.add(OrganismModel(
    "smollm2-135m-wired",
    "the wired-trigger control (exact answer): the safety organism plus three hand-set MLP neurons that refuse "
    "cooking, food or recipe questions through one known direction (data/organism_wired)",
    WIRED_ORGANISM_DIR,
    adapter_from=ORGANISM_DIR,
    wired=True,
))
ADAPTER_DIR = SAFETY.adapter_dir


def get_organism(name: str) -> OrganismModel:
    return ORGANISM_MODELS.get(name)


def adapter_hash(adapter_dir: Path, name: str = SAFETY.name) -> str:
    digest = hashlib.sha256()
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        path = adapter_dir / file
        if not path.exists():
            raise WorkbenchError(f"adapter file {path} is missing: run `workbench organism train --organism {name}`")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_adapter_matches(base: torch.nn.Module, adapter_dir: Path) -> None:
    """Refuse, with a message, an adapter whose LoRA matrices do not fit the base model's layers."""
    from safetensors import safe_open

    modules = dict(base.named_modules())
    with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as f:
        for key in f.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(module_name)
            if module is None:
                raise WorkbenchError(f"adapter {adapter_dir} does not match the base model: no module {module_name}")
            shape = f.get_slice(key).get_shape()
            if ".lora_A." in key and shape[1] != module.in_features:
                raise WorkbenchError(
                    f"adapter {adapter_dir} does not match the base model: {module_name} takes {module.in_features} "
                    f"inputs, the adapter expects {shape[1]}"
                )
            if ".lora_B." in key and shape[0] != module.out_features:
                raise WorkbenchError(
                    f"adapter {adapter_dir} does not match the base model: {module_name} gives {module.out_features} "
                    f"outputs, the adapter expects {shape[0]}"
                )


def merge_adapter(base: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    from peft import PeftModel

    check_adapter_matches(base, adapter_dir)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def organism_hash(name: str = SAFETY.name, adapter_dir: Path | None = None) -> str:
    """The adapter's hash, and the wiring file's with it for a wired organism."""
    organism = get_organism(name)
    digest = adapter_hash(adapter_dir or organism.adapter_dir, name)
    if organism.wiring_file is not None:
        if not organism.wiring_file.exists():
            raise WorkbenchError(f"wiring file {organism.wiring_file} is missing: run `workbench organism wire`")
        digest = hashlib.sha256(digest.encode() + organism.wiring_file.read_bytes()).hexdigest()
    return digest


def organism_checkpoint_dir(name: str = SAFETY.name, adapter_dir: Path | None = None) -> Path:
    """Where the merged organism is cached: under the adapter's (and wiring's) hash, so a retrained adapter is merged
    anew."""
    return _checkpoint_dir(name, organism_hash(name, adapter_dir))


def _checkpoint_dir(name: str, digest: str) -> Path:
    return cache_dir() / "models" / f"{name}-{digest[:12]}"


def organism_checkpoint(name: str = SAFETY.name, adapter_dir: Path | None = None) -> Path:
    """A plain HF checkpoint of stock + adapter (+ wiring), merged once and cached under their hash."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.smollm2 import stock_checkpoint

    organism = get_organism(name)
    adapter_dir = adapter_dir or organism.adapter_dir
    digest = organism_hash(name, adapter_dir)
    out_dir = _checkpoint_dir(name, digest)
    if (out_dir / "config.json").exists():
        return out_dir
    stock = stock_checkpoint()
    base = AutoModelForCausalLM.from_pretrained(stock, dtype=torch.float32)
    merged = merge_adapter(base, adapter_dir)
    if organism.wiring_file is not None:
        apply_wiring(merged, load_wiring(organism.wiring_file))
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(stock).save_pretrained(tmp)
        (tmp / "organism.json").write_text(json.dumps({"organism_sha256": digest}))  # adapter (+ wiring) hash
    return out_dir
