"""Loading chat models into TransformerLens: sources (a registry), the built-in offline models, fingerprints."""

from workbench.models.loader import LoadedModel, LoadOptions, ModelInfo, load_model
from workbench.models.sources import BUILTIN_MODELS, BuiltinModel

__all__ = [
    "BUILTIN_MODELS",
    "BuiltinModel",
    "LoadOptions",
    "LoadedModel",
    "ModelInfo",
    "load_model",
]
