"""Export a model as a plain Hugging Face checkpoint (safetensors, config, tokenizer with chat template, card)."""

from __future__ import annotations

import shutil
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.models.loader import LoadedModel


def plain_hf_model(lm: LoadedModel):
    """A plain transformers model with the bridge's current weights.

    The TransformerLens bridge wraps the HF modules in place (`..._original_component...` in the state dict, plus
    alias names), so the weights are copied into a freshly built model of the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = lm.hf_model
    dtype = next(source.parameters()).dtype
    clean = AutoModelForCausalLM.from_config(source.config, dtype=dtype)
    state = {k.replace("._original_component", ""): v for k, v in source.state_dict().items()}
    wanted = clean.state_dict()
    tied_head = getattr(source.config, "tie_word_embeddings", False)
    missing = [k for k in wanted if k not in state and not (tied_head and k == "lm_head.weight")]
    if missing:
        raise WorkbenchError(f"cannot export: weights missing for {missing[:3]} (architecture not mapped)")
    with torch.no_grad():
        clean.load_state_dict({k: state[k] for k in wanted if k in state}, strict=False)
    if tied_head:
        clean.tie_weights()
    return clean.eval()


def export_checkpoint(lm: LoadedModel, out_dir: str | Path, card: str, force: bool = False) -> Path:
    """Write `lm`'s current weights (raw, unfolded) so that `AutoModelForCausalLM.from_pretrained(out_dir)` loads them.

    Written to a temporary sibling directory and renamed, so an interrupted export leaves nothing half-written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise WorkbenchError(f"export directory {out_dir} exists and is not empty: choose another or pass --force")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    hf = plain_hf_model(lm)
    hf.save_pretrained(tmp, safe_serialization=True)
    lm.tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir


def model_card(lm: LoadedModel, extra: str = "") -> str:
    info = lm.info
    return f"""---
library_name: transformers
tags: [refusal-workbench]
---
# {info.name}

Exported by the refusal workbench from `{info.source}` ({info.architecture}, {info.n_layers} layers,
d_model {info.d_model}); workbench fingerprint `{info.fingerprint}`.
{extra}
"""
