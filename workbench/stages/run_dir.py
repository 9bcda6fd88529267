"""A run directory: every stage writes its artifacts here (atomically) and later stages and notebooks reload them.

Each artifact records the model fingerprint; a stage refuses a run directory made with another model. Every
artifact a stage reads is checked when loaded (`read_json`, `read_csv`, `read_tensors`): a missing, corrupted or
truncated file is a one-line `WorkbenchError` naming the file and the stage command that rewrites it.
"""

import csv
import fnmatch
import io
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from workbench import __version__
from workbench.errors import WorkbenchError
from workbench.models.fingerprint import check_made_for

STAGE_COMMANDS = {
    "extract": "workbench extract --model M --run DIR",
    "sweep": "workbench sweep --run DIR",
    "select": "workbench select --run DIR",
    "diagnose": "workbench diagnose --run DIR",
    "evaluate": "workbench evaluate --run DIR",
    "capability": "workbench capability --run DIR",
    "gate": "workbench gate --run DIR",
    "frontier": "workbench frontier --run DIR",
    "figures": "workbench figures --run DIR",
    "run": "workbench run --run DIR --force",
    "report": "workbench report --run DIR",
    "token_means": "workbench sweep --run DIR --ablation harmless_mean",
}
WRITERS = {
    "config.json": "run",
    "run.json": "run",
    "run.log": "run",
    "prompts/": "run",
    "report.html": "report",
    "candidates.json": "extract",
    "candidates.safetensors": "extract",
    "sweep.csv": "sweep",
    "sweep.json": "sweep",
    "selection.json": "select",
    "selection.csv": "select",
    "directions/gate.safetensors": "gate",
    "gate.csv": "gate",
    "gate.json": "gate",
    "directions/lam_*.safetensors": "select",
    "directions/r.safetensors": "select",
    "token_means.safetensors": "token_means",
    "token_means.json": "token_means",
    "diagnostics.csv": "diagnose",
    "diagnostics.json": "diagnose",
    "evaluation.csv": "evaluate",
    "evaluation_categories.csv": "evaluate",
    "interventions.json": "evaluate",
    "judge_agreement.csv": "evaluate",
    "completions/": "evaluate",
    "capability.csv": "capability",
    "capability.meta.json": "capability",
    "frontier.csv": "frontier",
    "frontier.json": "frontier",
    "frontier/": "frontier",
    "figures/": "figures",
}
"""Which stage writes each artifact (a trailing / covers a folder, a * any name; `config.json`, `run.json` and
`run.log` are the run's records, `run.json` written around every stage by `record_stage`; `prompts/` holds prompt
lists given through the API). Each pipeline stage's
`outputs` are exactly its artifacts here, and no file is declared twice (tests keep both so)."""
STAGE_INPUTS = {
    "extract": (),
    "token_means": ("candidates.json",),
    "sweep": ("candidates.json", "candidates.safetensors"),
    "select": ("candidates.json", "candidates.safetensors", "sweep.csv", "sweep.json"),
    "diagnose": ("candidates.json", "candidates.safetensors"),
    "gate": ("selection.json", "directions/lam_*.safetensors"),
    "evaluate": ("selection.json", "directions/lam_*.safetensors"),
    "capability": ("selection.json", "directions/lam_*.safetensors"),
    "frontier": ("selection.json", "directions/lam_*.safetensors"),
    "figures": (),
}
"""What each pipeline stage reads (written by earlier stages), in pipeline order: the stages' `inputs`, and what
`workbench status` compares modification times with."""


ON_DEMAND_STAGES = ("token_means",)
"""Stages that run only when the config's settings read their outputs (the token means: an affine ablation)."""
OPT_IN_STAGES = ("gate", "frontier")
"""Stages a run includes only when its config lists them (the gate reads the paper's training splits; the frontier
generates under a dozen interventions)."""


def stage_outputs(stage: str) -> tuple[str, ...]:
    """The artifacts `stage` writes (`WRITERS`), in the order listed."""
    return tuple(name for name, writer in WRITERS.items() if writer == stage)


def writer_of(name: str) -> str | None:
    """The stage that writes artifact `name` (a path relative to the run directory)."""
    if name in WRITERS:
        return WRITERS[name]
    for declared, stage in WRITERS.items():
        if declared_covers(declared, name):
            return stage
    return None


def declared_covers(declared: str, name: str) -> bool:
    """Whether a declared artifact (a file, a folder ending in /, or a pattern with *) covers the file `name`."""
    if declared.endswith("/"):
        return name.startswith(declared)
    return fnmatch.fnmatchcase(name, declared) if "*" in declared else name == declared


def artifact_paths(root: Path, declared: str) -> list[Path]:
    """The existing paths a declared artifact names under `root` (a pattern's matches; a file or folder itself)."""
    if "*" in declared:
        return sorted(root.glob(declared))
    path = root / declared
    return [path] if path.exists() else []


def rewrite_hint(name: str, run_path: Path | str | None = None) -> str:
    """The command that (re)writes artifact `name`, with the run directory filled in when given."""
    stage = writer_of(name)
    if stage is None:
        return "the stage that makes it"
    command = STAGE_COMMANDS[stage]
    return f"`{command.replace('DIR', str(run_path)) if run_path is not None else command}`"


def _short_rows(text: str) -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first CSV record with fewer fields than the header (a row cut short,
    which pandas would silently fill with NaN), or None."""
    records = csv.reader(io.StringIO(text))
    header = next(records, None)
    if header is None:
        return None
    for record in records:
        if record and len(record) < len(header):
            return records.line_num, len(record), len(header)
    return None


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def file(self, name: str) -> Path:
        return self.path / name

    def require_dir(self) -> "RunDir":
        """This run directory, refused unless it exists (a mistyped --run otherwise reads as a missing artifact)."""
        if not self.path.is_dir():
            what = "is not a directory" if self.path.exists() else "does not exist"
            raise WorkbenchError(f"run directory {self.path} {what}: make one with `workbench run --run {self.path}` "
                                 f"(or `workbench extract --model M --run {self.path}`), or pass an existing --run")
        return self

    def require(self, name: str) -> Path:
        path = self.file(name)
        if not path.exists():
            raise WorkbenchError(f"{path} is missing: run {rewrite_hint(name, self.path)} first")
        return path

    def corrupted(self, name: str, problem: str) -> WorkbenchError:
        """The error for an artifact that exists but cannot be used."""
        return WorkbenchError(f"{self.file(name)} is corrupted or truncated ({problem}): re-run "
                              f"{rewrite_hint(name, self.path)} to rewrite it")

    def read_json(self, name: str, keys: Iterable[str] = ()) -> dict:
        """A JSON artifact, checked: it parses to an object with every key in `keys`."""
        path = self.require(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.corrupted(name, f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self.corrupted(name, f"expected a JSON object, found {type(data).__name__}")
        missing = [k for k in keys if k not in data]
        if missing:
            raise self.corrupted(name, f"no {', '.join(map(repr, missing))}")
        return data

    def read_csv(self, name: str, columns: Iterable[str] = (), text_columns: Iterable[str] = (),
                 numeric_columns: Iterable[str] = ()) -> pd.DataFrame:
        """A CSV artifact, checked: it parses, no row is cut short, it has every column in `columns`, and every
        column in `numeric_columns` holds numbers (or empty cells). `text_columns` are read as strings (empty cells
        stay ""), every other column with empty cells as NaN."""
        path = self.require(name)
        columns, text_columns = list(columns), list(text_columns)
        try:
            text = path.read_text(encoding="utf-8")
            frame = pd.read_csv(io.StringIO(text), dtype=dict.fromkeys(text_columns, str),
                                keep_default_na=not text_columns,
                                na_values={c: [""] for c in columns if c not in text_columns} if text_columns else None)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
            raise self.corrupted(name, f"not a readable CSV: {str(exc).splitlines()[0]}") from None
        if (short := _short_rows(text)) is not None:
            raise self.corrupted(name, f"line {short[0]} has {short[1]} of {short[2]} fields")
        if text and not text.endswith("\n"):  # every row is written with its line end: the last one was cut
            raise self.corrupted(name, "its last line has no line end")
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise self.corrupted(name, f"no column {', '.join(map(repr, missing))}")
        for column in numeric_columns:
            if column in frame and not pd.api.types.is_numeric_dtype(frame[column]):
                values = frame[column].replace("", None)
                numbers = pd.to_numeric(values, errors="coerce")
                bad = values[numbers.isna() & values.notna()]
                if not bad.empty:
                    raise self.corrupted(name, f"column {column!r} holds {bad.iloc[0]!r} on line {bad.index[0] + 2}, "
                                         "not a number")
                frame[column] = numbers
        for column in text_columns:
            if column in frame:
                frame[column] = frame[column].fillna("")
        return frame

    def read_tensors(self, name: str, keys: Iterable[str] = ()) -> dict[str, torch.Tensor]:
        """A safetensors artifact, checked: it loads and holds every tensor in `keys`."""
        from safetensors.torch import load_file

        path = self.require(name)
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a bad header or a short file
            raise self.corrupted(name, f"not a readable safetensors file: {type(exc).__name__}: {exc}") from None
        missing = [k for k in keys if k not in tensors]
        if missing:
            raise self.corrupted(name, f"no tensor {', '.join(map(repr, missing))}")
        return tensors

    def model_record(self) -> dict:
        """The model the run was extracted from (`candidates.json`): a dict with its `name` and `fingerprint`."""
        record = self.read_json("candidates.json", keys=("model",))["model"]
        if not (isinstance(record, dict) and isinstance(record.get("name"), str) and "fingerprint" in record):
            raise self.corrupted("candidates.json", "its 'model' has no name and fingerprint")
        return record

    def load_record(self) -> dict | None:
        """How the run's model was loaded (`LoadOptions.record()`: device, dtype, device map, system prompt), or None
        for a run that did not record it (made from committed directions without load options)."""
        record = self.read_json("candidates.json", keys=("model",)).get("load")
        if record is not None and not isinstance(record, dict):
            raise self.corrupted("candidates.json", "its 'load' is not a record of load options")
        return record

    def check_model(self, fingerprint: str, name: str) -> None:
        """Refuse a run directory whose candidates were extracted from a different model."""
        check_made_for(f"run directory {self.path}", self.model_record(), fingerprint, name,
                       "use a new --run directory", verb="was made with")


def provenance() -> dict:
    return {"workbench_version": __version__}


RUN_RECORD = "run.json"


def git_commit() -> str | None:
    """The commit of the workbench's source checkout (with "+dirty" when it has uncommitted changes), or None when
    the package is not run from a git checkout."""
    import subprocess

    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


@contextmanager
def record_stage(run: RunDir, stage: str) -> Iterator[None]:
    """Time the stage run inside the block and record it in the run's `run.json` (`stages.<stage>`: started and
    ended as ISO times, wall_s, git_commit, workbench_version; the last run of each stage), when the block finishes
    without an error."""
    from workbench.io import write_json

    if stage not in STAGE_INPUTS:
        raise WorkbenchError(f"unknown stage {stage!r} (stages: {', '.join(STAGE_INPUTS)})")
    started, clock = datetime.now(UTC), time.monotonic()
    yield
    path = run.file(RUN_RECORD)
    record = run.read_json(RUN_RECORD, keys=("stages",)) if path.exists() else {"stages": {}}
    record["stages"][stage] = {"started": started.isoformat(timespec="seconds"),
                               "ended": datetime.now(UTC).isoformat(timespec="seconds"),
                               "wall_s": round(time.monotonic() - clock, 1), "git_commit": git_commit(),
                               "workbench_version": __version__}
    write_json(path, record)


def stage_times(run: RunDir) -> dict[str, float]:
    """Each recorded stage's wall time in seconds (`run.json`), {} for a run without records."""
    if not run.file(RUN_RECORD).exists():
        return {}
    stages = run.read_json(RUN_RECORD, keys=("stages",))["stages"]
    if not isinstance(stages, dict) or not all(isinstance(v, dict) and "wall_s" in v for v in stages.values()):
        raise run.corrupted(RUN_RECORD, "'stages' is not a record of stage timings")
    return {name: float(v["wall_s"]) for name, v in stages.items()}


def declaration_clashes(writers: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of artifacts declared by two different stages where one covers files of the other (a folder holding a
    file, a pattern matching a name, the same name), which would let one stage clear or overwrite the other's."""
    def clash(a: str, b: str) -> bool:
        if a == b or (a.endswith("/") and b.startswith(a)) or (b.endswith("/") and a.startswith(b)):
            return True
        if "*" in a and "*" not in b:
            return fnmatch.fnmatchcase(b.rstrip("/"), a)
        if "*" in b and "*" not in a:
            return fnmatch.fnmatchcase(a.rstrip("/"), b)
        return "*" in a and "*" in b and (fnmatch.fnmatchcase(a, b) or fnmatch.fnmatchcase(b, a))

    names = list(writers)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if writers[a] != writers[b] and clash(a, b)]
