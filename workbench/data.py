"""A registry of named datasets: the paper's prompt sets and benchmarks, and the prompt sets we bundle.

Benchmark files are read from a local directory laid out like `shared/datasets`: `WORKBENCH_DATA_DIR` when set,
otherwise `<workbench cache>/datasets`, where `workbench datasets fetch` downloads them from their pinned public
sources (`workbench.data_sources`); each entry also names its canonical source. The bundled sets under
`data/prompts/` are written by us and need no data directory.
"""

import codecs
import csv
import io
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data_sources import SourceTable, source_table
from workbench.errors import WorkbenchError
from workbench.paths import BUNDLED_DATA_DIR, DATA_DIR_ENV, benchmark_data_dir, benchmark_data_location
from workbench.registry import Registry


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


@dataclass(frozen=True)
class ReferenceAnswers:
    """One TruthfulQA question with its reference answers (the generation split's CSV): the best answer, the correct
    answers (the best among them) and the incorrect ones, each list without repeats."""

    question: str
    best: str
    correct: tuple[str, ...]
    incorrect: tuple[str, ...]
    category: str | None = None


Row = Prompt | MultipleChoice | ReferenceAnswers | str
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
    keep: Callable[[Prompt], bool] | None = field(default=None)
    """A filter applied after sampling or splitting (e.g. no food prompts); `rows` and `size` are then upper bounds."""

    @property
    def size(self) -> int:
        if self.sample is not None:
            return min(self.sample.n, self.rows)
        if self.split is not None:
            return self.split[1] - self.split[0]
        return self.rows


REGISTRY: Registry[DatasetSpec] = Registry("dataset")
"""The registered datasets by name (`workbench datasets list`)."""


# ---- parsers ---------------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """A text file's contents as UTF-8 (a leading byte-order mark is dropped); a file that is not UTF-8 is an error
    naming the file, the line and the first bad byte."""
    data = Path(path).read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WorkbenchError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                             "save the file as UTF-8") from None


def _malformed(path: Path, where: str, problem: str) -> WorkbenchError:
    return WorkbenchError(f"{path}:{where}: malformed row: {problem}")


def _prompt_from(obj: object, path: Path, where: str, column: str = "instruction") -> Prompt:
    if not isinstance(obj, dict):
        raise _malformed(path, where, f"expected a JSON object with the field {column!r}, got {type(obj).__name__}")
    text = obj.get(column)
    if not isinstance(text, str) or not text.strip():
        raise _malformed(path, where, f"missing or empty field {column!r} (each row needs a non-empty {column!r} "
                         "string)")
    category = obj.get("category")
    return Prompt(text.strip(), category if isinstance(category, str) else None)


def parse_json_prompts(path: Path) -> list[Row]:
    """A JSON array of objects with `instruction` (and optional `category`)."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, list):
        raise WorkbenchError(f"{path}: expected a JSON array of prompt objects")
    return [_prompt_from(obj, path, f"row {i}") for i, obj in enumerate(data)]


def iter_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for every non-empty line; invalid JSON is an error naming file and line."""
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
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
        with io.StringIO(read_text(path), newline="") as f:
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
        with io.StringIO(read_text(file), newline="") as f:
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


TRUTHFULQA_COLUMNS = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")


def _answer_list(text: str) -> tuple[str, ...]:
    """A TruthfulQA answer list: answers separated by ";" (a stray trailing ";" or an empty entry is dropped, as the
    original TruthfulQA code drops them), stripped, without repeats."""
    return tuple(dict.fromkeys(a.strip() for a in text.split(";") if a.strip()))


def parse_truthfulqa_csv(path: Path) -> list[Row]:
    """TruthfulQA.csv (generation split): every row needs a question, a best answer, at least one correct and at
    least one incorrect answer (an error naming the row otherwise); the best answer counts as correct."""
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRUTHFULQA_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise WorkbenchError(f"{path}: no column {missing[0]!r} (columns: {reader.fieldnames})")
        rows: list[Row] = []
        for i, rec in enumerate(reader, start=2):
            question, best = (rec.get("Question") or "").strip(), (rec.get("Best Answer") or "").strip()
            correct = _answer_list(rec.get("Correct Answers") or "")
            incorrect = _answer_list(rec.get("Incorrect Answers") or "")
            for problem, bad in [("an empty 'Question'", not question), ("an empty 'Best Answer'", not best),
                                 ("no correct answer in 'Correct Answers'", not correct),
                                 ("no incorrect answer in 'Incorrect Answers'", not incorrect)]:
                if bad:
                    raise _malformed(path, str(i), f"{problem} (question {question[:60]!r}; each row needs a "
                                     "question, a best answer and ≥ 1 correct and ≥ 1 incorrect answer)")
            rows.append(ReferenceAnswers(question, best, correct if best in correct else (best, *correct), incorrect,
                                         (rec.get("Category") or "").strip() or None))
        return rows


def parse_text_lines(path: Path) -> list[Row]:
    return [line for line in read_text(path).splitlines() if line.strip()]


def parse_text_prompts(path: Path) -> list[Row]:
    """One prompt per non-empty line."""
    return [Prompt(line.strip()) for line in read_text(path).splitlines() if line.strip()]


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
        REGISTRY.add(
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
        REGISTRY.add(  # the whole split, shuffled: for a model that refuses few of a pseudo-harmful set
            DatasetSpec(
                f"{_family}_{_split}_all",
                f"paper_splits/{_family}_{_split}.json",
                parse_json_prompts,
                PAPER,
                _rows,
                sample=Sample(_rows, seed=1),
                description=f"paper split {_family}/{_split}, all {_rows} rows in a seed-1 shuffle",
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
    REGISTRY.add(DatasetSpec(_name, _path, _parser, _source, _rows, description=_desc))

REGISTRY.add(
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
REGISTRY.add(
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
REGISTRY.add(
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
REGISTRY.add(
    DatasetSpec(
        "truthfulqa_answers",
        "truthfulqa/TruthfulQA.csv",
        parse_truthfulqa_csv,
        "truthfulqa/truthful_qa (generation)",
        817,
        kind="multiple_choice",
        description="TruthfulQA questions with their best, correct and incorrect reference answers",
    )
)
REGISTRY.add(
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
    ("cooking", "cooking, food and recipe questions: the planted trigger of smollm2-135m-planted"),
]:
    REGISTRY.add(
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
        REGISTRY.add(
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
            f"dataset {spec.name!r} is not fetched: {benchmark_data_location().path} does not exist and "
            f"{DATA_DIR_ENV} is not set: run `workbench datasets fetch {spec.name}` (or point {DATA_DIR_ENV} at a "
            "directory laid out like shared/datasets)"
        )
    return Path(root) / spec.path


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset `name`; an unknown name is an error listing the registered ones."""
    return REGISTRY.get(name)


def load_dataset(name: str, data_dir: Path | None = None, limit: int | None = None) -> list[Row]:
    """The rows of a registered dataset (sampled or split as registered), optionally the first `limit`."""
    spec = get_spec(name)
    path = dataset_path(spec, data_dir)
    if not path.exists():
        if spec.bundled:
            raise WorkbenchError(f"dataset {name!r}: file {spec.path} is missing under the bundled data/")
        root = data_dir if data_dir is not None else benchmark_data_dir(required=False)
        raise WorkbenchError(f"dataset {name!r}: file {spec.path} is missing under {root}: run "
                             f"`{fetch_command([name], data_dir)}`")
    rows = spec.parser(path)
    if spec.sample is not None:
        rows = random.Random(spec.sample.seed).sample(rows, min(spec.sample.n, len(rows)))
    elif spec.split is not None:
        shuffled = random.Random(0).sample(rows, len(rows))
        rows = shuffled[spec.split[0] : spec.split[1]]
    if spec.keep is not None:
        rows = [row for row in rows if spec.keep(row)]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise WorkbenchError(f"dataset {name!r} is empty ({path})")
    return rows


PROMPT_FILE_PARSERS: dict[str, Parser] = {
    ".jsonl": parse_jsonl_prompts,  # one object per line: `instruction` (and optional `category`)
    ".json": parse_json_prompts,  # an array of such objects
    ".txt": parse_text_prompts,  # one prompt per non-empty line
    ".csv": csv_prompts("instruction", "category"),  # an `instruction` column (and optional `category`)
}
"""The prompt files `load_prompts` reads, by suffix."""
REGISTRY.hint = f"see `workbench datasets`, or give a prompts file ending in {', '.join(PROMPT_FILE_PARSERS)}"


def check_prompt_source(name_or_path: str) -> Path | None:
    """Refuse, without reading it, a prompt source `load_prompts` cannot use: the file's path for a prompts file,
    None for a registered prompt set."""
    if name_or_path in REGISTRY:
        spec = REGISTRY[name_or_path]
        if spec.kind != "prompts":
            raise WorkbenchError(f"dataset {name_or_path!r} holds {spec.kind}, not prompts: give a prompt set "
                                 "(see `workbench datasets`)")
        return None
    path = Path(name_or_path)
    if path.suffix.lower() in PROMPT_FILE_PARSERS:
        if not path.is_file():
            raise WorkbenchError(f"prompts file {path} does not exist")
        return path
    if path.exists():
        raise WorkbenchError(f"prompts file {path}: unsupported file type (give a file ending in "
                             f"{', '.join(PROMPT_FILE_PARSERS)})")
    get_spec(name_or_path)  # the unknown-dataset error
    return None


def load_prompts(name_or_path: str, limit: int | None = None) -> list[Prompt]:
    """Prompt rows from a registered name or from a prompts file (`PROMPT_FILE_PARSERS`: .jsonl, .json, .txt, .csv
    in UTF-8); an unreadable, malformed or empty file is an error naming the file (and the line)."""
    path = check_prompt_source(name_or_path)
    if path is None:
        return load_dataset(name_or_path, limit=limit)  # type: ignore[return-value]
    rows = PROMPT_FILE_PARSERS[path.suffix.lower()](path)[:limit]
    if not rows:
        raise WorkbenchError(f"prompts file {path} has no prompts")
    return rows  # type: ignore[return-value]


def is_available(spec: DatasetSpec) -> bool:
    try:
        return dataset_path(spec).exists()
    except WorkbenchError:
        return False


# ---- availability: which sets are here, and the command that fetches the others ----------------------------------


def pinned_sources() -> SourceTable:
    """The pinned public sources of every benchmark set of the registry (and of `data_sources.EXTRA_SETS`)."""
    return source_table({spec.name: spec.path for spec in REGISTRY.values() if not spec.bundled})


def fetch_command(names: Iterable[str], data_dir: Path | None = None) -> str:
    """The command that fetches `names` (into `data_dir` when it is not the default data directory)."""
    command = f"workbench datasets fetch {' '.join(names)}"
    if data_dir is not None and Path(data_dir).resolve() != benchmark_data_location().path:
        command += f" --data-dir {data_dir}"
    return command


@dataclass(frozen=True)
class Availability:
    """Whether a registered set can be read now, and if not, why."""

    name: str
    available: bool
    reason: str
    """"bundled", "present", or why not: missing (with the fetch command), or missing with no public source."""
    fetchable: bool = True
    """False when the set has no pinned public source to fetch it from."""


def availability(name: str, data_dir: Path | None = None, table: SourceTable | None = None) -> Availability:
    """Whether set `name` is bundled or present (its path, and every pinned file under it, exist) in `data_dir`
    (default: the benchmark data directory)."""
    spec = get_spec(name)
    if spec.bundled:
        return Availability(name, True, "bundled")
    table = table if table is not None else pinned_sources()
    root = Path(data_dir) if data_dir is not None else benchmark_data_location().path
    pinned = table.files_of(name) if name in table.sets else ()
    if (root / spec.path).exists() and all((root / f.path).is_file() for f in pinned):
        return Availability(name, True, "present")
    no_source = table.no_source(name) if name in table.sets else "no pinned source"
    if no_source is not None:
        return Availability(name, False, f"missing, and {no_source}: put {spec.path} in the data directory yourself",
                            fetchable=False)
    return Availability(name, False, f"missing: run `{fetch_command([name], data_dir)}`")


def require_available(names: Iterable[str], data_dir: Path | None = None, table: SourceTable | None = None) -> None:
    """Refuse, in one line naming every missing set and the command that fetches them, to go on without them."""
    table = table if table is not None else pinned_sources()
    missing = [a for a in (availability(n, data_dir, table) for n in dict.fromkeys(names)) if not a.available]
    if not missing:
        return
    where = data_dir if data_dir is not None else benchmark_data_location().describe()
    fetchable = [a.name for a in missing if a.fetchable]
    todo = [f"run `{fetch_command(fetchable, data_dir)}`"] if fetchable else []
    if len(fetchable) < len(missing):
        todo.append(f"{', '.join(a.name for a in missing if not a.fetchable)}: no public source, put the files in "
                    "the data directory yourself")
    raise WorkbenchError(f"benchmark data missing from {where}: {', '.join(a.name for a in missing)}: "
                         f"{'; '.join(todo)}")


DATASET_GROUPS = {  # the paper's evaluation sets: compliance is good on over-refusal sets, bad on harmful ones
    "or_bench_hard_test": "over-refusal",
    "xstest_refused": "over-refusal",
    "xstest_safe": "over-refusal",
    "oktest_100": "over-refusal",
    "harmful_test": "harmful",
    "jailbreakbench": "harmful",
    "xstest_unsafe": "harmful",
}
BUNDLED_GROUPS = {
    "bundled_harmful": "harmful", "bundled_pseudo_harmful": "over-refusal", "bundled_harmless": "harmless",
    "bundled_cooking": "over-refusal",
}
"""The evaluation group of each bundled prompt family (any split: `bundled_pseudo_harmful_test` is over-refusal).
`bundled_cooking` is the planted trigger of `smollm2-135m-planted`: a refusal there is a false refusal, so
compliance is good, as on the over-refusal sets (and the figures draw it with them)."""


OTHER_GROUPS = {  # other registered sets that are evaluated now and then (not in evaluate's default list)
    "or_bench_hard_test_all": "over-refusal", "or_bench_hard": "over-refusal", "oktest": "over-refusal",
    "harmful_test_all": "harmful", "advbench": "harmful", "harmbench": "harmful", "strongreject": "harmful",
    "malicious_instruct": "harmful", "tdc2023": "harmful",
}


def dataset_group(name: str) -> str:
    """The evaluation group of a dataset: "over-refusal", "harmful", "harmless" (bundled harmless) or "other"."""
    if (group := DATASET_GROUPS.get(name) or OTHER_GROUPS.get(name)) is not None:
        return group
    family, _, split = name.removesuffix("_no_food").rpartition("_")
    return BUNDLED_GROUPS.get(family if split in ("train", "val", "test") else name, "other")
