"""Dataclass configs from TOML files and plain dicts, with errors that name the key.

A file has one table per stage (`[extract]`, `[sweep]`, `[select]`, `[diagnose]`, `[gate]`, `[evaluate]`,
`[capability]`, `[frontier]`),
top-level keys of the pipeline itself (`stages`) and of the model to load (`model`, `dtype`: `pop_model_keys`);
every other key is a field of a stage's config dataclass.
"""

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.data import read_text
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.stages.run_dir import RunDir


def _check(value: Any, annotation: Any, where: str) -> Any:
    """`value` converted to `annotation` (lists become tuples), or a WorkbenchError naming `where`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _check(value, option, where)
            except WorkbenchError as exc:
                errors.append(str(exc))
        raise WorkbenchError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise WorkbenchError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return tuple(_check(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is Any:
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WorkbenchError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WorkbenchError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation in (bool, str):
        if not isinstance(value, annotation):
            raise WorkbenchError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise WorkbenchError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    raise WorkbenchError(f"{where}: cannot read a value of type {annotation!r} from a config file")


def from_dict(cls: type, data: dict, where: str = "config", base: Any = None) -> Any:
    """An instance of dataclass `cls` from `data` (keys must be fields; values are type-checked), on top of `base`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise WorkbenchError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    base = base if base is not None else cls()
    values = {}
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):  # a nested table keeps its defaults
            values[key] = from_dict(hints[key], value, f"{where}.{key}", getattr(base, key))
        else:
            values[key] = _check(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(base, **values)


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"config file {path} does not exist")
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise WorkbenchError(f"config file {path} is not valid TOML: {exc}") from None


DTYPE_NAMES = ("float32", "bfloat16", "float16")
TOP_LEVEL = {"model": "registered name, local directory, .gguf file or hub id",
             "dtype": f"weight dtype: one of {', '.join(DTYPE_NAMES)}"}
"""Keys of a run config file that say how to load the model rather than configure a stage."""


def pop_model_keys(data: dict, where: str) -> dict[str, str | None]:
    """Remove and check the top-level `model` and `dtype` keys of a run config (what the rest configures is a
    `PipelineConfig`); absent keys are None."""
    out = {key: data.pop(key, None) for key in TOP_LEVEL}
    for key, value in out.items():
        if value is not None and not isinstance(value, str):
            raise WorkbenchError(f"{where}: {key} must be a string ({TOP_LEVEL[key]})")
    if out["dtype"] is not None and out["dtype"] not in DTYPE_NAMES:
        raise WorkbenchError(f"{where}: dtype must be one of {', '.join(DTYPE_NAMES)}, got {out['dtype']!r}")
    return out


def read_recorded(run: "RunDir", name: str, cls: type, key: str = "config", besides: tuple[str, ...] = (),
                  artifact: dict | None = None) -> Any:
    """The `cls` config an artifact recorded under `key` (e.g. `sweep.json`'s SweepConfig), rebuilt through the
    dataclass: every field must be there and nothing else (`besides`: other keys the record may hold, left out),
    so a renamed or missing field is a one-line error naming the file, never a silent default. `artifact`: the
    file's content when the caller has already read it (`run.read_json(name, keys=(key,))`)."""
    record = (run.read_json(name, keys=(key,)) if artifact is None else artifact)[key]
    if not isinstance(record, dict):
        raise run.corrupted(name, f"its {key!r} is not a record")
    fields = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(fields - set(record))
    unknown = sorted(set(record) - fields - set(besides))
    if missing or unknown:
        problem = (f"its {key} lacks {', '.join(map(repr, missing))}" if missing
                   else f"its {key} has unknown {', '.join(map(repr, unknown))}")
        raise run.corrupted(name, f"{problem}: made by another workbench version")
    return from_dict(cls, {k: v for k, v in record.items() if k in fields}, f"{run.file(name)}: {key}")
