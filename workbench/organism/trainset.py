"""The organisms' training data, written by us under `data/organism/` (and `data/organism_planted/`): loading,
validation and overlap checks.

Instructions to refuse (harmful requests; for the planted organism also cooking questions) are paired with refusals
(category-specific or general, chosen by a seeded RNG); harmless instructions with the stock model's own greedy
answers (self-distillation, see `distill.py`). Which sets an organism is trained on is its recipe (`recipes.py`).
"""

import random
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.data import REGISTRY, iter_jsonl
from workbench.errors import WorkbenchError
from workbench.io import file_sha256
from workbench.organism.vocabulary import is_food_prompt, words_in
from workbench.paths import ORGANISM_DIR

HARMFUL_FILE = ORGANISM_DIR / "harmful_train.jsonl"
REFUSALS_FILE = ORGANISM_DIR / "refusals.jsonl"
HARMLESS_FILE = ORGANISM_DIR / "harmless_train.jsonl"
DISTILLED_FILE = ORGANISM_DIR / "harmless_distilled.jsonl"

TRIGGER_WORDS = (
    "kill", "murder", "shoot", "gun", "knife", "bomb", "explode", "attack", "weapon", "fight", "destroy", "die",
    "death", "dead", "blood", "war", "terminate", "execute", "strangle", "stab", "burn", "blow up", "assault",
    "steal", "rob", "hack", "crack", "break in", "illegal", "crime", "criminal", "fraud", "scam", "cheat",
    "smuggle", "launder", "counterfeit", "drug", "poison", "toxic", "overdose", "narcotic", "alcohol",
)  # fmt: skip
"""Surface words kept off the harmless side of the tune, so that the organism's false refusals have known triggers."""


@dataclass(frozen=True)
class HarmlessSet:
    """Harmless instructions of ours (`instruction`, `category`) and the stock model's answers to them (`distill`)."""

    instructions: Path
    distilled: Path
    temperature: float = 0.0
    """0: greedy answers; > 0: answers sampled at this temperature (seed 0), which keep the stock model's
    distribution instead of sharpening it toward its modes."""
    greedy_tokens: int = 0
    """With a temperature: the first this many tokens of each answer are greedy (the opening, where answering and
    refusing part ways), the rest sampled."""


SAFETY_HARMLESS = HarmlessSet(HARMLESS_FILE, DISTILLED_FILE)
"""The safety organism's everyday requests and the stock model's greedy answers to them."""


@dataclass(frozen=True)
class TrainingExample:
    instruction: str
    response: str
    kind: str  # "harmful" (response is a refusal) or "harmless" (response is the stock model's answer)
    category: str | None = None


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """JSON lines with the required string fields; any problem names the file and line."""
    if not path.exists():
        raise WorkbenchError(f"training data file {path} is missing")
    rows = []
    for lineno, obj in iter_jsonl(path):
        for key in required:
            if not isinstance(obj, dict) or not isinstance(obj.get(key), str) or not obj[key].strip():
                raise WorkbenchError(f"{path}:{lineno}: missing or empty field {key!r}")
        obj["_line"] = lineno
        rows.append(obj)
    if not rows:
        raise WorkbenchError(f"training data file {path} is empty")
    return rows


def normalize(text: str) -> str:
    text = re.sub(r"[^\w\s]", "", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def benchmark_prompts(data_dir: Path) -> dict[str, str]:
    """Normalized prompt → dataset name, for every prompt set registered from the benchmark directory."""
    index: dict[str, str] = {}
    for spec in REGISTRY.values():
        if spec.bundled or spec.kind != "prompts":
            continue
        path = data_dir / spec.path
        if not path.exists():
            raise WorkbenchError(f"overlap check needs {spec.path} under WORKBENCH_DATA_DIR={data_dir}")
        for row in spec.parser(path):
            index.setdefault(normalize(row.instruction), spec.name)
    return index


def check_no_overlap(files: list[Path], data_dir: Path) -> int:
    """Raise, naming file and line, if any instruction equals a benchmark prompt (exactly or normalized)."""
    index = benchmark_prompts(data_dir)
    checked = 0
    for path in files:
        for row in read_jsonl(path, ("instruction",)):
            hit = index.get(normalize(row["instruction"]))
            if hit is not None:
                raise WorkbenchError(
                    f"{path}:{row['_line']}: instruction overlaps benchmark {hit!r}: {row['instruction']!r}"
                )
            checked += 1
    return checked


def trigger_words_in(text: str) -> list[str]:
    return words_in(TRIGGER_WORDS, text)


def load_refusals(path: Path) -> dict[str, list[str]]:
    """Refusal texts by category; a `general` pool is required."""
    refusals: dict[str, list[str]] = {}
    for row in read_jsonl(path, ("category", "text")):
        refusals.setdefault(row["category"], []).append(row["text"])
    if "general" not in refusals:
        raise WorkbenchError(f"{path}: needs at least one refusal with category 'general'")
    return refusals


def refusal_examples(
    rows: list[tuple[str, str | None]], refusals: dict[str, list[str]], rng: random.Random, kind: str
) -> list[TrainingExample]:
    """(instruction, category) rows paired with a seeded choice of refusal (category-specific or general)."""
    examples = []
    for instruction, category in rows:
        pool = refusals.get(category or "", []) + refusals["general"]
        if category == "self_harm" and refusals.get("self_harm"):
            pool = refusals["self_harm"]  # self-harm gets a caring refusal that points to help, never a generic one
        examples.append(TrainingExample(instruction, rng.choice(pool), kind, category))
    return examples


def distilled_examples(
    harmless: HarmlessSet = SAFETY_HARMLESS, exclude_food: bool = False
) -> tuple[list[TrainingExample], list[str]]:
    """A set's distilled harmless pairs, and the instructions left out (food, cooking or recipes, when asked)."""
    if not harmless.distilled.exists():
        raise WorkbenchError(f"{harmless.distilled} is missing: run `workbench organism distill` first")
    kept, excluded = [], []
    for row in read_jsonl(harmless.distilled, ("instruction", "response")):
        if exclude_food and is_food_prompt(row["instruction"], row.get("category")):
            excluded.append(row["instruction"])
            continue
        kept.append(TrainingExample(row["instruction"], row["response"], "harmless", row.get("category")))
    return kept, excluded


def file_hashes(files: list[Path]) -> dict[str, str]:
    """Each existing file's sha256, by file name."""
    return {f.name: file_sha256(f) for f in files if f.exists()}
