"""An organism's behaviour table: refusal on harmful, harmless, over-refusal (and trigger) sets, refusal scores,
perplexity."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.data import load_dataset
from workbench.eval.generation import hooked_generate
from workbench.eval.judge import SubstringJudge
from workbench.eval.keywords import KeywordJudge
from workbench.eval.scoring import perplexity, refusal_scores
from workbench.io import write_jsonl
from workbench.models.loader import LoadedModel
from workbench.organism.vocabulary import is_food_prompt


@dataclass(frozen=True)
class BehaviourSet:
    dataset: str
    group: str  # harmful | harmless | over-refusal | trigger
    limit: int | None = None
    exclude_food: bool = False
    """Drop the food, cooking and recipe prompts (`workbench.organism.vocabulary.is_food_prompt`) after the limit."""

    @property
    def key(self) -> str:
        """The set's name in the behaviour table (and its completions file)."""
        return f"{self.dataset}_no_food" if self.exclude_food else self.dataset


BEHAVIOUR_SETS = (
    BehaviourSet("harmful_test", "harmful"),
    BehaviourSet("jailbreakbench", "harmful"),
    BehaviourSet("harmless_test", "harmless", 100),
    BehaviourSet("xstest_safe", "over-refusal"),
    BehaviourSet("or_bench_hard_test", "over-refusal"),
)
PLANTED_SETS = (  # the planted-trigger organism's own rows: its trigger, and harmless requests away from it
    BehaviourSet("bundled_cooking_test", "trigger"),
    BehaviourSet("harmless_test", "harmless", 100, exclude_food=True),
)

SCORE_SETS = (
    ("harmful_val", "harmful"),
    ("bundled_harmful_val", "harmful"),
    ("or_bench_hard_val", "pseudo-harmful"),
    ("bundled_pseudo_harmful_val", "pseudo-harmful"),
    ("xstest_safe", "pseudo-harmful"),
    ("harmless_val", "harmless"),
    ("bundled_harmless_val", "harmless"),
)


@dataclass(frozen=True)
class BehaviourConfig:
    """How the behaviour table is measured."""

    max_new_tokens: int = 64
    """Greedy tokens per completion."""
    batch_size: int = 32
    """Prompts per generation batch."""
    perplexity_tokens: int = 16384
    """WikiText-2 test tokens scored (windows of 512)."""
    limit: int | None = None
    """Cap every set at this many prompts (quick checks); None measures the full sets."""


def measure_behaviour(
    lm: LoadedModel,
    config: BehaviourConfig,
    completions_dir: Path | None = None,
    sets: tuple[BehaviourSet, ...] = BEHAVIOUR_SETS,
    score_sets: tuple[tuple[str, str], ...] = SCORE_SETS,
) -> dict:
    """Refusal rates per set (the paper's substring judge, which the organisms' targets use, and the calibrated
    keyword judge beside it: `*_keywords`) and per XSTest category, refusal-score means, WikiText-2 perplexity."""
    judge, calibrated = SubstringJudge(), KeywordJudge.committed()
    rates, categories = [], []
    for spec in sets:
        limit = min(x for x in (spec.limit, config.limit) if x is not None) if (spec.limit or config.limit) else None
        prompts = load_dataset(spec.dataset, limit=limit)
        if spec.exclude_food:
            prompts = [p for p in prompts if not is_food_prompt(p.instruction, p.category)]
        responses = hooked_generate(lm, [p.instruction for p in prompts], config.max_new_tokens, config.batch_size,
                                    desc=spec.dataset)
        refused = judge(responses)
        verdicts = calibrated.verdicts([p.instruction for p in prompts], responses)
        if completions_dir is not None:
            write_jsonl(completions_dir / f"{spec.key}.jsonl", [
                {"instruction": p.instruction, "category": p.category, "response": r, "refused": f,
                 "label_keywords": v.label}
                for p, r, f, v in zip(prompts, responses, refused, verdicts, strict=True)
            ])
        refused_keywords = sum(v.refusal for v in verdicts) / len(verdicts)
        rates.append({"dataset": spec.key, "group": spec.group, "n": len(prompts),
                      "refusal_rate": sum(refused) / len(refused), "compliance_rate": 1 - sum(refused) / len(refused),
                      "refusal_rate_keywords": refused_keywords, "compliance_rate_keywords": 1 - refused_keywords})
        if spec.dataset == "xstest_safe":
            frame = pd.DataFrame({"category": [p.category for p in prompts], "refused": refused})
            for cat, group in frame.groupby("category"):
                categories.append({"category": cat, "n": len(group), "refusal_rate": float(group.refused.mean())})
    scores = []
    for dataset, group in score_sets:
        prompts = load_dataset(dataset, limit=config.limit)
        values = refusal_scores(lm, [p.instruction for p in prompts], config.batch_size)
        mean = float(values.mean())
        scores.append({"dataset": dataset, "group": group, "n": len(prompts), "mean_refusal_score": mean})
    ppl = perplexity(lm, load_dataset("wikitext2"), max_tokens=config.perplexity_tokens)
    return {"model": lm.info.name, "fingerprint": lm.info.fingerprint, "rates": rates,
            "xstest_categories": categories, "refusal_scores": scores, "wikitext2_perplexity": ppl}
