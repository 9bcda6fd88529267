"""Self-distillation: the stock model's own greedy answers to our harmless instructions become training targets."""

from workbench.eval.generation import greedy_generate
from workbench.eval.judge import SubstringJudge
from workbench.io import write_jsonl
from workbench.models import load_model
from workbench.organism.trainset import DISTILLED_FILE, HARMLESS_FILE, read_jsonl, trigger_words_in

STOCK_MODEL = "smollm2-135m-instruct"


def distill(max_new_tokens: int = 48, batch_size: int = 32) -> dict:
    """Write `harmless_distilled.jsonl`; drop answers that are themselves refusal-like disclaimers."""
    rows = read_jsonl(HARMLESS_FILE, ("instruction",))
    for row in rows:
        found = trigger_words_in(row["instruction"])
        if found:
            raise ValueError(f"{HARMLESS_FILE}:{row['_line']}: harmless training prompt contains trigger word {found}")
    lm = load_model(STOCK_MODEL)
    answers = greedy_generate(lm, [r["instruction"] for r in rows], max_new_tokens, batch_size, desc="distilling")
    judge = SubstringJudge()
    kept = [
        {"instruction": r["instruction"], "category": r.get("category"), "response": a}
        for r, a in zip(rows, answers, strict=True)
        if a.strip() and not judge.is_refusal(a)
    ]
    write_jsonl(DISTILLED_FILE, kept)
    return {"prompts": len(rows), "kept": len(kept), "dropped": len(rows) - len(kept)}
