"""One entry point: `load_model(spec)` returns the hooked model, its tokenizer, chat format and a description."""

import os
from dataclasses import asdict, dataclass, field

import torch

from workbench.errors import WorkbenchError
from workbench.models.chat import ChatFormat
from workbench.models.fingerprint import model_fingerprint
from workbench.models.refusal_tokens import refusal_token_ids
from workbench.models.sources import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadOptions:
    """How to place a model."""

    device: str = "cpu"
    """torch device for a single-device model ("cpu", "cuda", "cuda:1"). Ignored when `device_map` is set."""
    dtype: str = "float32"
    """Weight dtype: float32, bfloat16 or float16."""
    device_map: str | None = None
    """Accelerate device map ("auto", "balanced") to split a large model over several GPUs."""
    system_prompt: str | None = None
    """System turn for every prompt; None leaves the template's own default (SmolLM2 inserts one)."""
    refusal_tokens: tuple[int, ...] | None = None
    """Override the refusal token ids (otherwise recognised from the tokenizer or derived)."""


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
        return next(self.hf_model.parameters()).device


def load_model(spec: str, options: LoadOptions | None = None) -> LoadedModel:
    """Load `spec` (a registered name, local directory, GGUF file or hub id) into TransformerLens."""
    from transformer_lens.model_bridge import TransformerBridge

    options = options or LoadOptions()
    if options.dtype not in DTYPES:
        raise WorkbenchError(f"unknown dtype {options.dtype!r}: use one of {', '.join(DTYPES)}")
    dtype = DTYPES[options.dtype]
    source = resolve(spec)
    loaded = source.load(spec, dtype, options.device_map)
    placement = {"device_map": options.device_map} if options.device_map else {"device": options.device}
    try:
        bridge = TransformerBridge.boot_transformers(
            loaded.name, hf_model=loaded.hf_model, tokenizer=loaded.tokenizer, dtype=dtype, **placement
        )
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
        raise WorkbenchError(f"could not load model {spec!r} from {loaded.source}{hint}: {exc}") from None
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
