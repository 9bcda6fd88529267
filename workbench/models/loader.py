"""One entry point: `load_model(spec)` returns the hooked model, its tokenizer, chat format and a description."""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from workbench.errors import WorkbenchError
from workbench.models.chat import ChatFormat
from workbench.models.fingerprint import model_fingerprint
from workbench.models.refusal_tokens import refusal_token_ids
from workbench.models.sources import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""accelerate's named placements (`from_pretrained(device_map=...)`)."""


@dataclass(frozen=True)
class LoadOptions:
    """How to place a model."""

    device: str = "cpu"
    """torch device for a single-device model ("cpu", "cuda", "cuda:1"). Ignored when `device_map` is set."""
    dtype: str = "float32"
    """Weight dtype: float32, bfloat16 or float16."""
    device_map: str | None = None
    """Accelerate device map: a strategy (auto, balanced, balanced_low_0, sequential), an explicit map of module
    names to devices ("cuda:0", 1, "cpu", "disk") as a JSON object or the path of a JSON file. See
    `parse_device_map`."""
    offload_dir: str | None = None
    """Folder for the weights a device map puts on "disk" (accelerate writes them there when they are not read
    straight from the checkpoint's safetensors)."""
    system_prompt: str | None = None
    """System turn for every prompt; None leaves the template's own default (SmolLM2 inserts one)."""
    refusal_tokens: tuple[int, ...] | None = None
    """Override the refusal token ids (otherwise recognised from the tokenizer or derived)."""

    def record(self) -> dict:
        """What a run directory records of how its model was loaded, so that later commands on the run load it the
        same way (`from_record`)."""
        return {"device": self.device, "dtype": self.dtype, "device_map": self.device_map,
                "offload_dir": self.offload_dir, "system_prompt": self.system_prompt,
                "refusal_tokens": list(self.refusal_tokens) if self.refusal_tokens is not None else None}

    @classmethod
    def from_record(cls, record: dict) -> "LoadOptions":
        """The options a run recorded (`record`); keys it lacks keep their defaults, unknown keys are refused."""
        unknown = sorted(set(record) - set(cls.__dataclass_fields__))
        if unknown:
            raise WorkbenchError(f"unknown load option {unknown[0]!r} in a run's record (options: "
                                 f"{', '.join(cls.__dataclass_fields__)})")
        tokens = record.get("refusal_tokens")
        return cls(**{**record, "refusal_tokens": tuple(tokens) if tokens is not None else None})


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, recorded in every artifact made with it."""

    name: str
    source: str
    architecture: str
    n_layers: int
    d_model: int
    vocab_size: int
    fingerprint: str
    refusal_tokens: list[int] = field(default_factory=list)
    eoi_tokens: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedModel:
    """The hooked model (a TransformerLens `TransformerBridge`), its tokenizer, chat format and description."""

    model: object
    tokenizer: object
    chat: ChatFormat
    info: ModelInfo
    options: LoadOptions

    @property
    def hf_model(self) -> torch.nn.Module:
        """The underlying Hugging Face model (raw weights, shared with the bridge)."""
        return self.model.original_model

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device the token embedding runs on (under a device map, its accelerate hook's
        execution device, which is also where an offloaded embedding's weights are brought for the forward)."""
        return input_device(self.hf_model)


def input_device(hf_model: torch.nn.Module) -> torch.device:
    """The device that consumes the input ids: the token embedding's execution device."""
    embedding = hf_model.get_input_embeddings()
    execution = getattr(getattr(embedding, "_hf_hook", None), "execution_device", None)
    if execution is not None:
        return torch.device(execution)
    weight = getattr(embedding, "weight", None)
    return weight.device if isinstance(weight, torch.Tensor) else next(hf_model.parameters()).device


def offloaded_parameters(hf_model: torch.nn.Module) -> list[str]:
    """Names of the parameters a device map offloaded ("cpu"/"disk" entries: meta placeholders in the module whose
    data accelerate brings in for each forward). Weight edits cannot touch them."""
    return [name.replace("._original_component", "") for name, param in hf_model.named_parameters() if param.is_meta]


def _device_entry_problem(module: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return f"{module!r} maps to {value!r}: use a GPU index, 'cuda:N', 'cpu' or 'disk'"
    if isinstance(value, int) or value.startswith("cuda"):
        try:
            index = torch.device("cuda", value) if isinstance(value, int) else torch.device(value)
        except (RuntimeError, ValueError):
            return f"{module!r} maps to {value!r}, which is not a device"
        if not torch.cuda.is_available() or (index.index or 0) >= torch.cuda.device_count():
            return f"{module!r} maps to {value!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)"
        return None
    if value == "meta":
        return f"{module!r} maps to 'meta', which holds no weights: use 'cpu' or 'disk' to offload it"
    if value not in ("cpu", "disk"):
        return f"{module!r} maps to {value!r}: use a GPU index, 'cuda:N', 'cpu' or 'disk'"
    return None


def parse_device_map(text: str | None) -> str | dict[str, str | int] | None:
    """A `--device-map` value as accelerate takes it: a strategy name, or an explicit map from a JSON object (inline
    or in a file) of module names (`model.embed_tokens`, `model.layers.3`, `lm_head`) to a GPU index, "cuda:N",
    "cpu" (offloaded to the CPU's memory) or "disk" (offloaded to `offload_dir`). Bad values are refused here,
    before the model loads; module names are checked by transformers against the model."""
    if text is None or text in DEVICE_MAP_STRATEGIES:
        return text
    stripped = text.strip()
    if stripped.startswith("{"):
        source, raw = "inline --device-map", stripped
    elif Path(text).expanduser().is_file():
        source = str(Path(text).expanduser())
        raw = Path(source).read_text(encoding="utf-8")
    else:
        raise WorkbenchError(f"device map {text!r} is not one of {', '.join(DEVICE_MAP_STRATEGIES)}, a JSON object or "
                             "a JSON file: give e.g. auto or '{\"model.embed_tokens\": \"cpu\", ...}'")
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise WorkbenchError(f"{source}: a device map is a non-empty JSON object of module name -> device")
    for module, value in mapping.items():
        if problem := _device_entry_problem(module, value):
            raise WorkbenchError(f"{source}: {problem}")
    return mapping


def load_model(spec: str, options: LoadOptions | None = None) -> LoadedModel:
    """Load `spec` (a registered name, local directory, GGUF file or hub id) into TransformerLens."""
    from transformer_lens.model_bridge import TransformerBridge

    options = options or LoadOptions()
    if options.dtype not in DTYPES:
        raise WorkbenchError(f"unknown dtype {options.dtype!r}: use one of {', '.join(DTYPES)}")
    dtype = DTYPES[options.dtype]
    device_map = parse_device_map(options.device_map)
    if options.offload_dir is not None and device_map is None:
        raise WorkbenchError("--offload-dir goes with --device-map (the folder for the modules it puts on 'disk')")
    source = resolve(spec)
    loaded = source.load(spec, dtype, device_map, options.offload_dir)
    if device_map is None:
        placement = {"device": options.device}
    elif loaded.hf_model is None:  # the bridge loads the model itself (hub ids) and applies the map
        placement = {"device_map": device_map, "offload_folder": options.offload_dir}
    else:  # the source already dispatched it; the bridge takes the placement from `hf_device_map`
        placement = {}
    try:
        bridge = TransformerBridge.boot_transformers(
            loaded.name, hf_model=loaded.hf_model, tokenizer=loaded.tokenizer, dtype=dtype, **placement
        )
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise WorkbenchError(f"could not load model {spec!r} from {loaded.source}{hint}: {exc}") from None
    except ValueError as exc:
        if device_map is None:
            raise
        first_line = str(exc).strip().splitlines()[0]
        raise WorkbenchError(f"TransformerLens refuses device map {options.device_map!r}: {first_line}") from None
    if str(bridge.cfg.device) == "meta":  # an offloaded embedding: inputs go to its execution device
        bridge.cfg.device = str(input_device(bridge.original_model))
    bridge.eval()
    tokenizer = bridge.tokenizer
    hf_model = bridge.original_model
    chat = ChatFormat(tokenizer, system=options.system_prompt)
    config = hf_model.config
    info = ModelInfo(
        name=spec,
        source=loaded.source,
        architecture=(config.architectures or [type(hf_model).__name__])[0],
        n_layers=bridge.cfg.n_layers,
        d_model=bridge.cfg.d_model,
        vocab_size=bridge.cfg.d_vocab,
        fingerprint=model_fingerprint(hf_model),
        refusal_tokens=refusal_token_ids(tokenizer, list(options.refusal_tokens or [])),
        eoi_tokens=chat.eoi_token_strings,
    )
    return LoadedModel(bridge, tokenizer, chat, info, options)
