"""Self-distillation: the stock model's own answers (greedy, or sampled after a greedy opening) to our harmless
instructions become training targets."""

from workbench.eval.generation import hooked_generate
from workbench.eval.judge import SubstringJudge
from workbench.io import write_jsonl
from workbench.models import load_model
from workbench.models.loader import LoadedModel
from workbench.organism.trainset import SAFETY_HARMLESS, HarmlessSet, read_jsonl, trigger_words_in

STOCK_MODEL = "smollm2-135m-instruct"


def distill(harmless: HarmlessSet = SAFETY_HARMLESS, max_new_tokens: int = 48, batch_size: int = 32,
            lm: LoadedModel | None = None) -> dict:
    """Write the set's distilled file (greedy answers, or sampled at the set's temperature with seed 0 after its
    greedy opening tokens); drop answers that are themselves refusal-like disclaimers. `lm`: the stock model, when
    the caller already loaded it (several sets)."""
    rows = read_jsonl(harmless.instructions, ("instruction",))
    for row in rows:
        found = trigger_words_in(row["instruction"])
        if found:
            raise ValueError(
                f"{harmless.instructions}:{row['_line']}: harmless training prompt contains trigger word {found}")
    lm = lm or load_model(STOCK_MODEL)
    instructions = [r["instruction"] for r in rows]
    sampled = f" (T={harmless.temperature}, {harmless.greedy_tokens} greedy)" if harmless.temperature > 0 else ""
    answers = hooked_generate(lm, instructions, max_new_tokens, batch_size, temperature=harmless.temperature, seed=0,
                              greedy_tokens=harmless.greedy_tokens,
                              desc=f"distilling{sampled}")
    judge = SubstringJudge()
    kept = [
        {"instruction": r["instruction"], "category": r.get("category"), "response": a}
        for r, a in zip(rows, answers, strict=True)
        if a.strip() and not judge.is_refusal(a)
    ]
    write_jsonl(harmless.distilled, kept)
    return {"file": harmless.distilled.name, "prompts": len(rows), "kept": len(kept), "dropped": len(rows) - len(kept)}
