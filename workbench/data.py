"""A registry of named datasets: the paper's prompt sets and benchmarks, and the prompt sets we bundle.

Benchmark files are read from a local directory laid out like `shared/datasets` (the `WORKBENCH_DATA_DIR`
environment variable); each entry also names its canonical source for users who fetch it themselves. The
bundled sets under `data/prompts/` are written by us and need no data directory.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import BUNDLED_DATA_DIR, DATA_DIR_ENV, benchmark_data_dir


@dataclass(frozen=True)
class Prompt:
    """One instruction of a prompt set."""

    instruction: str
    category: str | None = None


@dataclass(frozen=True)
class MultipleChoice:
    """One multiple-choice question (MMLU, ARC)."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None


Row = Prompt | MultipleChoice | str
Parser = Callable[[Path], list[Row]]


@dataclass(frozen=True)
class Sample:
    """A seeded sample of `n` rows, as the paper draws its splits (Python's `random.Random(seed).sample`)."""

    n: int
    seed: int = 1


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: where its file lives, how to parse it, where it comes from, how many rows it has."""

    name: str
    path: str
    """Relative to the data directory (benchmarks) or to `data/` (bundled)."""
    parser: Parser
    source: str
    """Canonical source for users online (a Hugging Face id or URL), or 'bundled'."""
    rows: int
    """Rows in the file (MANIFEST.md); the loaded size is `sample.n` when sampled."""
    kind: str = "prompts"
    bundled: bool = False
    sample: Sample | None = None
    description: str = ""
    split: tuple[int, int] | None = field(default=None)
    """For bundled splits: the [start, stop) slice of the seeded shuffle of the full file."""

    @property
    def size(self) -> int:
        if self.sample is not None:
            return min(self.sample.n, self.rows)
        if self.split is not None:
            return self.split[1] - self.split[0]
        return self.rows


REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"dataset {spec.name} registered twice")
    REGISTRY[spec.name] = spec
    return spec


# ---- parsers ---------------------------------------------------------------------------------------------


def _malformed(path: Path, where: str, problem: str) -> WorkbenchError:
    return WorkbenchError(f"{path}:{where}: malformed row: {problem}")


def _prompt_from(obj: object, path: Path, where: str, column: str = "instruction") -> Prompt:
    if not isinstance(obj, dict):
        raise _malformed(path, where, f"expected an object, got {type(obj).__name__}")
    text = obj.get(column)
    if not isinstance(text, str) or not text.strip():
        raise _malformed(path, where, f"missing or empty field {column!r}")
    category = obj.get("category")
    return Prompt(text.strip(), category if isinstance(category, str) else None)


def parse_json_prompts(path: Path) -> list[Row]:
    """A JSON array of objects with `instruction` (and optional `category`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise WorkbenchError(f"{path}: expected a JSON array of prompt objects")
    return [_prompt_from(obj, path, f"row {i}") for i, obj in enumerate(data)]


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for every non-empty line; invalid JSON is an error naming file and line."""
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise _malformed(path, str(lineno), f"invalid JSON ({exc.msg})") from None


def parse_jsonl_prompts(path: Path) -> list[Row]:
    """JSON lines with `instruction` (and optional `category`); errors name the line."""
    return [_prompt_from(obj, path, str(lineno)) for lineno, obj in iter_jsonl(path)]


def csv_prompts(column: str, category_column: str | None = None) -> Parser:
    def parse(path: Path) -> list[Row]:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise WorkbenchError(f"{path}: no column {column!r} (columns: {reader.fieldnames})")
            rows: list[Row] = []
            for i, rec in enumerate(reader, start=2):
                obj = {"instruction": rec[column], "category": rec.get(category_column) if category_column else None}
                rows.append(_prompt_from(obj, path, str(i)))
            return rows

    return parse


def parse_mmlu_dir(path: Path) -> list[Row]:
    """A directory of per-subject CSVs (question, choice0..3, answer as 0-3)."""
    files = sorted(path.glob("*.csv"))
    if not files:
        raise WorkbenchError(f"{path}: no MMLU CSV files")
    rows: list[Row] = []
    for file in files:
        subject = file.stem.rsplit("_", 1)[0]
        with open(file, newline="", encoding="utf-8") as f:
            for i, rec in enumerate(csv.DictReader(f), start=2):
                try:
                    choices = tuple(rec[f"choice{k}"] for k in range(4))
                    rows.append(MultipleChoice(rec["question"], choices, int(rec["answer"]), subject))
                except (KeyError, ValueError, TypeError) as exc:
                    raise _malformed(file, str(i), f"{type(exc).__name__}: {exc}") from None
    return rows


def parse_arc_jsonl(path: Path) -> list[Row]:
    rows: list[Row] = []
    for lineno, obj in iter_jsonl(path):
        try:
            choices = obj["question"]["choices"]
            labels = [c["label"] for c in choices]
            rows.append(
                MultipleChoice(
                    obj["question"]["stem"], tuple(c["text"] for c in choices), labels.index(obj["answerKey"])
                )
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise _malformed(path, str(lineno), f"{type(exc).__name__}: {exc}") from None
    return rows


def parse_text_lines(path: Path) -> list[Row]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def parse_text_list_json(path: Path) -> list[Row]:
    return [Prompt(s) for s in json.loads(path.read_text(encoding="utf-8"))]


# ---- the registry ----------------------------------------------------------------------------------------

PAPER = "mainlp/False-Refusal-Mitigation dataset/splits"
_PAPER_N = {"train": 128, "val": 32, "test": 128}
_PAPER_ROWS = {
    "harmful": {"train": 260, "val": 39, "test": 572},
    "harmless": {"train": 18793, "val": 6264, "test": 6266},
    "or_bench_hard": {"train": 1055, "val": 132, "test": 132},
}
for _family, _splits in _PAPER_ROWS.items():
    for _split, _rows in _splits.items():
        register(
            DatasetSpec(
                f"{_family}_{_split}",
                f"paper_splits/{_family}_{_split}.json",
                parse_json_prompts,
                PAPER,
                _rows,
                sample=Sample(_PAPER_N[_split], seed=1),
                description=f"paper split {_family}/{_split}, {_PAPER_N[_split]} sampled with seed 1",
            )
        )

for _name, _path, _parser, _source, _rows, _desc in [
    ("advbench", "advbench/processed/advbench.json", parse_json_prompts, "walledai/AdvBench", 520, "harmful"),
    (
        "harmbench",
        "harmbench/processed/harmbench_test.json",
        parse_json_prompts,
        "walledai/HarmBench",
        159,
        "harmful, standard behaviours (test)",
    ),
    (
        "harmbench_val",
        "harmbench/processed/harmbench_val.json",
        parse_json_prompts,
        "walledai/HarmBench",
        41,
        "harmful, standard behaviours (val)",
    ),
    (
        "jailbreakbench",
        "jailbreakbench/processed/jailbreakbench.json",
        parse_json_prompts,
        "JailbreakBench/JBB-Behaviors",
        100,
        "harmful",
    ),
    (
        "strongreject",
        "strongreject/processed/strongreject.json",
        parse_json_prompts,
        "walledai/StrongREJECT",
        313,
        "harmful",
    ),
    (
        "malicious_instruct",
        "malicious_instruct/processed/malicious_instruct.json",
        parse_json_prompts,
        "walledai/MaliciousInstruct",
        100,
        "harmful",
    ),
    ("tdc2023", "tdc2023/processed/tdc2023.json", parse_json_prompts, "walledai/TDC23-RedTeaming", 100, "harmful"),
    (
        "alpaca",
        "alpaca/processed/alpaca.json",
        parse_json_prompts,
        "tatsu-lab/alpaca",
        31323,
        "harmless (instructions with empty input)",
    ),
    (
        "xstest_safe",
        "xstest/processed/xstest_safe.json",
        parse_json_prompts,
        "natolambert/xstest-v2-copy",
        250,
        "over-refusal: safe prompts, by category",
    ),
    (
        "xstest_unsafe",
        "xstest/processed/xstest_unsafe.json",
        parse_json_prompts,
        "natolambert/xstest-v2-copy",
        200,
        "harmful contrast prompts",
    ),
    (
        "xstest_refused",
        "xstest/processed/xstest.json",
        parse_json_prompts,
        "natolambert/xstest-v2-copy",
        66,
        "XSTest-S(H): the safe prompts Llama-2-chat fully refused",
    ),
    ("oktest", "oktest/processed/oktest.json", parse_json_prompts, "InvokerStark/OverKill", 300, "over-refusal"),
    (
        "oktest_100",
        "oktest/processed/oktest_100.json",
        parse_json_prompts,
        "InvokerStark/OverKill",
        100,
        "over-refusal, the paper's 100",
    ),
    (
        "or_bench_hard",
        "or_bench/raw/or-bench-hard-1k.csv",
        csv_prompts("prompt", "category"),
        "bench-llm/or-bench (or-bench-hard-1k)",
        1319,
        "over-refusal",
    ),
    (
        "truthfulqa",
        "truthfulqa/TruthfulQA.csv",
        csv_prompts("Question", "Category"),
        "truthfulqa/truthful_qa",
        817,
        "questions",
    ),
]:
    register(DatasetSpec(_name, _path, _parser, _source, _rows, description=_desc))

register(
    DatasetSpec(
        "mmlu",
        "mmlu/test",
        parse_mmlu_dir,
        "cais/mmlu",
        14042,
        kind="multiple_choice",
        description="MMLU test, 57 subjects",
    )
)
register(
    DatasetSpec(
        "mmlu_dev",
        "mmlu/dev",
        parse_mmlu_dir,
        "cais/mmlu",
        285,
        kind="multiple_choice",
        description="MMLU dev: the 5-shot examples",
    )
)
register(
    DatasetSpec(
        "arc_challenge",
        "arc_challenge/ARC-Challenge-Test.jsonl",
        parse_arc_jsonl,
        "allenai/ai2_arc (ARC-Challenge)",
        1172,
        kind="multiple_choice",
        description="ARC-Challenge test",
    )
)
register(
    DatasetSpec(
        "wikitext2",
        "wikitext2/wiki.test.raw",
        parse_text_lines,
        "Salesforce/wikitext (wikitext-2-raw-v1)",
        2891,
        kind="text",
        description="WikiText-2 raw test lines",
    )
)

BUNDLED_SPLITS = {"train": (0, 128), "val": (128, 160), "test": (160, 240)}
for _family, _desc in [
    ("harmful", "harmful requests we wrote"),
    ("harmless", "everyday requests we wrote"),
    ("pseudo_harmful", "safe requests that sound harmful (homonyms, figurative language, safe targets, ...)"),
]:
    register(
        DatasetSpec(
            f"bundled_{_family}",
            f"prompts/{_family}.jsonl",
            parse_jsonl_prompts,
            "bundled",
            240,
            bundled=True,
            description=_desc,
        )
    )
    for _split, _slice in BUNDLED_SPLITS.items():
        register(
            DatasetSpec(
                f"bundled_{_family}_{_split}",
                f"prompts/{_family}.jsonl",
                parse_jsonl_prompts,
                "bundled",
                240,
                bundled=True,
                split=_slice,
                description=f"{_desc} ({_split} split)",
            )
        )


# ---- loading ---------------------------------------------------------------------------------------------


def dataset_path(spec: DatasetSpec, data_dir: Path | None = None) -> Path:
    if spec.bundled:
        return BUNDLED_DATA_DIR / spec.path
    root = data_dir if data_dir is not None else benchmark_data_dir(required=False)
    if root is None:
        raise WorkbenchError(
            f"dataset {spec.name!r} is read from {DATA_DIR_ENV}, which is not set: point it at a directory laid out "
            f"like shared/datasets, containing {spec.path} (source: {spec.source})"
        )
    return Path(root) / spec.path


def get_spec(name: str) -> DatasetSpec:
    if name not in REGISTRY:
        raise WorkbenchError(f"unknown dataset {name!r} (see `workbench datasets` for the registered names)")
    return REGISTRY[name]


def load_dataset(name: str, data_dir: Path | None = None, limit: int | None = None) -> list[Row]:
    """The rows of a registered dataset (sampled or split as registered), optionally the first `limit`."""
    spec = get_spec(name)
    path = dataset_path(spec, data_dir)
    if not path.exists():
        where = "the bundled data/" if spec.bundled else f"{DATA_DIR_ENV}={path.parent.parent}"
        raise WorkbenchError(f"dataset {name!r}: file {spec.path} is missing under {where}")
    rows = spec.parser(path)
    if spec.sample is not None:
        rows = random.Random(spec.sample.seed).sample(rows, min(spec.sample.n, len(rows)))
    elif spec.split is not None:
        shuffled = random.Random(0).sample(rows, len(rows))
        rows = shuffled[spec.split[0] : spec.split[1]]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise WorkbenchError(f"dataset {name!r} is empty ({path})")
    return rows


def load_prompts(name_or_path: str, limit: int | None = None) -> list[Prompt]:
    """Prompt rows from a registered name or from a JSONL file with `instruction` fields."""
    if name_or_path not in REGISTRY and name_or_path.endswith(".jsonl"):
        path = Path(name_or_path)
        if not path.exists():
            raise WorkbenchError(f"prompts file {path} does not exist")
        rows = parse_jsonl_prompts(path)[:limit]
        if not rows:
            raise WorkbenchError(f"prompts file {path} has no prompts")
        return rows  # type: ignore[return-value]
    spec = get_spec(name_or_path)
    if spec.kind != "prompts":
        raise WorkbenchError(f"dataset {name_or_path!r} holds {spec.kind}, not prompts")
    return load_dataset(name_or_path, limit=limit)  # type: ignore[return-value]


def is_available(spec: DatasetSpec) -> bool:
    try:
        return dataset_path(spec).exists()
    except WorkbenchError:
        return False


DATASET_GROUPS = {  # the paper's evaluation sets: compliance is good on over-refusal sets, bad on harmful ones
    "or_bench_hard_test": "over-refusal",
    "xstest_refused": "over-refusal",
    "xstest_safe": "over-refusal",
    "oktest_100": "over-refusal",
    "harmful_test": "harmful",
    "jailbreakbench": "harmful",
    "xstest_unsafe": "harmful",
}
