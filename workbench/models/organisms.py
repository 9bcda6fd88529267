"""Built-in model organisms: a stock checkpoint with a committed LoRA adapter merged in once and cached.

The adapters are data (`data/organism/adapter`); how they were made lives in `workbench.organism` (training,
distillation, the behaviour report), which this module does not import.
"""

import hashlib
import json
import shutil
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.paths import ORGANISM_DIR, cache_dir

ADAPTER_DIR = ORGANISM_DIR / "adapter"


def adapter_hash(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        path = adapter_dir / name
        if not path.exists():
            raise WorkbenchError(f"adapter file {path} is missing: run `workbench organism train`")
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


def safety_checkpoint_dir(adapter_dir: Path = ADAPTER_DIR) -> Path:
    """Where the merged organism is cached: under the adapter's hash, so a retrained adapter is merged anew."""
    return cache_dir() / "models" / f"smollm2-135m-safety-{adapter_hash(adapter_dir)[:12]}"


def safety_checkpoint(adapter_dir: Path = ADAPTER_DIR) -> Path:
    """A plain HF checkpoint of stock + adapter, merged once and cached under the adapter's hash."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.models.smollm2 import stock_checkpoint

    out_dir = safety_checkpoint_dir(adapter_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    stock = stock_checkpoint()
    base = AutoModelForCausalLM.from_pretrained(stock, dtype=torch.float32)
    merged = merge_adapter(base, adapter_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(stock).save_pretrained(tmp)
    (tmp / "organism.json").write_text(json.dumps({"adapter_sha256": adapter_hash(adapter_dir)}))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    return out_dir
