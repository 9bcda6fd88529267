"""General capability under an intervention: WikiText-2 perplexity, MMLU (5-shot) and ARC-Challenge accuracy by
log-likelihood of the answer options, and TruthfulQA (MC1/MC2-style, from answer log-likelihoods), scored by our own
code on the weight-edited plain model.

Why our own scorer and not lm-eval: here the benchmarks must come from local files (no hub), and lm-eval fetches its
tasks from the hub. The prompt formats follow lm-eval's defaults (MMLU: the original Hendrycks 5-shot format,
answer letter compared at the last position; ARC: "Question: …\\nAnswer:" with each option's summed
log-likelihood for `acc` and per-byte for `acc_norm`; TruthfulQA: see `truthfulqa_scores`), so numbers are
comparable in kind. Online, the exported checkpoint (`workbench export --run DIR --lam λ`) runs in lm-eval unchanged.

Every scorer takes `forward(input_ids, attention_mask) -> logits`; sequences are right-padded, so no position
shifts. The capability stage (`workbench.stages.capability`) runs these under each intervention.
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.data import MultipleChoice, ReferenceAnswers, load_dataset
from workbench.errors import WorkbenchError
from workbench.eval.scoring import Forward, keep_last_logits_kwargs, windowed_perplexity
from workbench.models.chat import pad_token_rows

LastLogits = Callable[[Sequence[list[int]]], Float[Tensor, "batch vocab"]]
"""Next-token logits after each token sequence (its last position only)."""
TASKS = ("wikitext2", "mmlu", "arc_challenge", "truthfulqa")
DEFAULT_TASKS = ("wikitext2", "mmlu", "arc_challenge")
"""The tasks run unless named: TruthfulQA is asked for by name (`tasks`, `--tasks ... truthfulqa`)."""
LETTERS = ("A", "B", "C", "D", "E")
TASK_SETTINGS = {
    "wikitext2": ("perplexity_tokens", "window", "batch_size"),
    "mmlu": ("n_mmlu", "mmlu_shots", "batch_size", "seed"),
    "arc_challenge": ("n_arc", "seed"),
    "truthfulqa": ("n_truthfulqa", "batch_size", "seed"),
}
"""The `CapabilityConfig` fields each task's scores depend on."""
TASK_DATASETS: dict[str, tuple[str, ...]] = {
    "wikitext2": ("wikitext2",),
    "mmlu": ("mmlu", "mmlu_dev"),
    "arc_challenge": ("arc_challenge",),
    "truthfulqa": ("truthfulqa_answers",),
}
"""The registered datasets each task reads (the questions first; MMLU's few-shot examples second)."""


@dataclass(frozen=True)
class CapabilityConfig:
    """Which capability tasks run, on how much data (CPU-sized defaults; None = the whole test set)."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    """Capability tasks: wikitext2 (perplexity), mmlu (5-shot), arc_challenge, truthfulqa (MC1/MC2)."""
    interventions: tuple[str, ...] | None = ("baseline",)
    """Intervention names (as in `workbench evaluate`); None: baseline and every ablation (no additions)."""
    perplexity_tokens: int = 16384
    """WikiText-2 test tokens scored, in non-overlapping windows of `window`."""
    window: int = 512
    """Tokens per perplexity window."""
    n_mmlu: int | None = 200
    """MMLU test questions, a seeded sample across subjects (None: all 14,042)."""
    mmlu_shots: int = 5
    """Worked examples before each MMLU question."""
    n_arc: int | None = 200
    """ARC-Challenge test questions, a seeded sample (None: all 1,172)."""
    n_truthfulqa: int | None = 200
    """TruthfulQA questions (of 817), a seeded sample (None: all)."""
    batch_size: int = 8
    """Prompts per forward pass."""
    seed: int = 0
    """Seed of the question samples."""

    def task_settings(self, task: str) -> dict:
        """The settings a task's scores depend on (what `capability.meta.json` records per task and intervention)."""
        return {name: getattr(self, name) for name in TASK_SETTINGS[task]}

    def validate(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise WorkbenchError(f"unknown capability task {unknown[0]!r} (known: {', '.join(TASKS)})")
        for name in ("perplexity_tokens", "window", "mmlu_shots", "batch_size"):
            low = 0 if name == "mmlu_shots" else 1
            if getattr(self, name) < low:
                raise WorkbenchError(f"capability {name} must be {'≥ 0' if low == 0 else 'at least 1'}, got "
                                     f"{getattr(self, name)}")
        for name in ("n_mmlu", "n_arc", "n_truthfulqa"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise WorkbenchError(f"capability {name} must be ≥ 0 (0 or None: all), got {getattr(self, name)}")


def mmlu_prompt(question: MultipleChoice, shots: Sequence[MultipleChoice]) -> str:
    subject = (question.subject or "").replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"

    def block(q: MultipleChoice, answer: bool) -> str:
        options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
        return f"{q.question.strip()}{options}\nAnswer:" + (f" {LETTERS[q.answer]}\n\n" if answer else "")

    return head + "".join(block(s, True) for s in shots) + block(question, False)


@torch.inference_mode()
def mmlu_accuracy(last_logits: LastLogits, tokenizer, questions: Sequence[MultipleChoice],
                  dev: dict[str, list[MultipleChoice]], shots: int, batch_size: int,
                  progress: bool = True) -> float:
    """5-shot MMLU: the answer is the letter with the highest next-token logit after "Answer:"."""
    letter_ids = [tokenizer.encode(f" {letter}", add_special_tokens=False)[-1] for letter in LETTERS[:4]]
    prompts = [tokenizer.encode(mmlu_prompt(q, dev.get(q.subject, [])[:shots]), add_special_tokens=False)
               for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    correct = 0
    for start in tqdm(range(0, len(order), batch_size), desc="mmlu", disable=not progress):
        idx = order[start : start + batch_size]
        picked = last_logits([prompts[i] for i in idx])[:, letter_ids].argmax(dim=-1)
        correct += sum(int(p) == questions[i].answer for p, i in zip(picked.tolist(), idx, strict=True))
    return correct / len(questions)


@torch.inference_mode()
def continuation_loglikelihoods(forward: Forward, tokenizer, requests: Sequence[tuple[str, str]], batch_size: int,
                                progress: bool = False, desc: str = "loglikelihood") -> list[float]:
    """Summed log-likelihood of the continuation `" " + text` after `context`, for each (context, text) request, in
    the requests' order: the context's tokens, then the tokens that `context + " " + text` adds to them, scored in
    right-padded batches of `batch_size` sequences (shortest first)."""
    contexts = {c: tokenizer.encode(c, add_special_tokens=False) for c in dict.fromkeys(c for c, _ in requests)}
    seqs, starts = [], []
    for context, text in requests:
        ctx = contexts[context]
        seqs.append(ctx + tokenizer.encode(context + " " + text, add_special_tokens=False)[len(ctx):])
        starts.append(len(ctx))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = [0.0] * len(seqs)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        idx = order[start : start + batch_size]
        ids, mask = pad_token_rows([seqs[i] for i in idx], tokenizer.pad_token_id or 0, left=False)
        logits: Float[Tensor, "batch seq vocab"] = forward(ids, mask)
        for row, i in enumerate(idx):
            targets = torch.tensor(seqs[i][starts[i] :], device=logits.device)
            logprobs = torch.log_softmax(logits[row, starts[i] - 1 : len(seqs[i]) - 1].double(), dim=-1)
            out[i] = float(logprobs[torch.arange(len(targets), device=logits.device), targets].sum())
    return out


def option_loglikelihoods(forward: Forward, tokenizer, context: str, options: Sequence[str],
                          ) -> list[float]:
    """Summed log-likelihood of each continuation `" " + option` after `context` (one batch)."""
    return continuation_loglikelihoods(forward, tokenizer, [(context, o) for o in options], max(1, len(options)))


def arc_accuracy(forward: Forward, tokenizer, questions: Sequence[MultipleChoice],
                 progress: bool = True) -> tuple[float, float]:
    """ARC-Challenge (0-shot, lm-eval format): (acc by summed log-likelihood, acc_norm by per-byte)."""
    acc = acc_norm = 0
    for q in tqdm(questions, desc="arc_challenge", disable=not progress):
        ll = option_loglikelihoods(forward, tokenizer, f"Question: {q.question}\nAnswer:", q.choices)
        norm = [v / max(1, len((" " + c).encode())) for v, c in zip(ll, q.choices, strict=True)]
        acc += int(max(range(len(ll)), key=ll.__getitem__) == q.answer)
        acc_norm += int(max(range(len(norm)), key=norm.__getitem__) == q.answer)
    return acc / len(questions), acc_norm / len(questions)


def truthfulqa_prompt(question: str) -> str:
    return f"Q: {question}\nA:"


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def truthfulqa_per_question(forward: Forward, tokenizer, questions: Sequence[ReferenceAnswers], batch_size: int,
                            progress: bool = True) -> list[tuple[float, float]]:
    """(mc1, mc2) of each question (see `truthfulqa_scores`, their means)."""
    index: dict[tuple[str, str], int] = {}
    for q in questions:
        for answer in (q.best, *q.correct, *q.incorrect):
            index.setdefault((truthfulqa_prompt(q.question), answer), len(index))
    ll = continuation_loglikelihoods(forward, tokenizer, list(index), batch_size, progress, "truthfulqa")
    out = []
    for q in questions:
        prompt = truthfulqa_prompt(q.question)
        correct = [ll[index[(prompt, a)]] for a in q.correct]
        incorrect = [ll[index[(prompt, a)]] for a in q.incorrect]
        out.append((float(ll[index[(prompt, q.best)]] > max(incorrect)),
                    math.exp(_logsumexp(correct) - _logsumexp(correct + incorrect))))
    return out


def truthfulqa_scores(forward: Forward, tokenizer, questions: Sequence[ReferenceAnswers], batch_size: int,
                      progress: bool = True) -> tuple[float, float]:
    """TruthfulQA (0-shot) by answer log-likelihoods, no generation: (mc1, mc2).

    Each question is asked as "Q: {question}\\nA:" (lm-eval's QA format without its 6-shot preamble; no chat
    template) and each answer scored as the continuation " {answer}" by its summed token log-likelihood ℓ.
    `mc1`: share of questions whose best answer has a higher ℓ than every incorrect answer (a tie counts as wrong).
    `mc2`: mean over questions of Σ_correct p / (Σ_correct p + Σ_incorrect p), p = exp(ℓ) (computed in log space).
    MC2-*style*: the answers are the generation split's lists (`ReferenceAnswers`, unpunctuated as in the CSV), not
    lm-eval's `truthfulqa_mc1` / `truthfulqa_mc2` targets, so numbers are comparable in kind only. Every distinct
    (question, answer) is scored once, the continuations of all questions batched together (`batch_size` sequences)."""
    scores = truthfulqa_per_question(forward, tokenizer, questions, batch_size, progress)
    return sum(s[0] for s in scores) / len(questions), sum(s[1] for s in scores) / len(questions)


def _sample(rows: list, n: int | None, seed: int) -> list:
    return rows if not n or n >= len(rows) else random.Random(seed).sample(rows, n)  # None or 0: all


def score_task(task: str, forward: Forward, tokenizer, config: CapabilityConfig,
               progress: bool = True, last_logits: LastLogits | None = None) -> list[dict]:
    """Metric rows (`metric`, `value`, `n`) of one task (`last_logits` for MMLU: default, from `forward`)."""
    if task == "wikitext2":
        text = "\n".join(load_dataset(TASK_DATASETS["wikitext2"][0]))
        ppl, n = windowed_perplexity(forward, tokenizer.encode(text, add_special_tokens=False),
                                     config.perplexity_tokens, config.window, config.batch_size, progress)
        return [{"metric": "perplexity", "value": ppl, "n": n}]
    if task == "mmlu":
        last_logits = last_logits or last_logits_from(forward, tokenizer.pad_token_id or 0)
        questions = _sample(load_dataset(TASK_DATASETS["mmlu"][0]), config.n_mmlu, config.seed)
        dev: dict[str, list[MultipleChoice]] = {}
        for q in load_dataset(TASK_DATASETS["mmlu"][1]):
            dev.setdefault(q.subject, []).append(q)
        acc = mmlu_accuracy(last_logits, tokenizer, questions, dev, config.mmlu_shots, config.batch_size, progress)
        return [{"metric": "acc", "value": acc, "n": len(questions)}]
    if task == "arc_challenge":
        questions = _sample(load_dataset(TASK_DATASETS["arc_challenge"][0]), config.n_arc, config.seed)
        acc, acc_norm = arc_accuracy(forward, tokenizer, questions, progress)
        return [{"metric": "acc", "value": acc, "n": len(questions)},
                {"metric": "acc_norm", "value": acc_norm, "n": len(questions)}]
    if task == "truthfulqa":
        questions = _sample(load_dataset(TASK_DATASETS["truthfulqa"][0]), config.n_truthfulqa, config.seed)
        mc1, mc2 = truthfulqa_scores(forward, tokenizer, questions, config.batch_size, progress)
        return [{"metric": "mc1", "value": mc1, "n": len(questions)},
                {"metric": "mc2", "value": mc2, "n": len(questions)}]
    raise WorkbenchError(f"unknown capability task {task!r} (known: {', '.join(TASKS)})")


def last_logits_from(forward: Forward, pad_id: int) -> LastLogits:
    """Last-position logits through a full forward on right-padded sequences (any `Forward`; unembeds everything)."""

    def last_logits(seqs: Sequence[list[int]]) -> Float[Tensor, "batch vocab"]:
        ids, mask = pad_token_rows(seqs, pad_id, left=False)
        logits = forward(ids, mask)
        return logits[torch.arange(len(seqs)), (mask.sum(dim=1) - 1).to(logits.device)]

    return last_logits


def plain_last_logits(model, pad_id: int) -> LastLogits:
    """Last-position logits of a plain transformers model: left-padded, positions from the mask, and only the last
    position unembedded (`logits_to_keep=1` where the model takes it). For 5-shot MMLU prompts (≈ 700 tokens) the
    full-vocabulary logits of every position were most of the cost."""
    device = next(model.parameters()).device
    keep = keep_last_logits_kwargs(model)

    def last_logits(seqs: Sequence[list[int]]) -> Float[Tensor, "batch vocab"]:
        ids, mask = pad_token_rows(seqs, pad_id)
        position_ids = (mask.cumsum(dim=1) - 1).clamp_min(0)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                    **keep)
        return out.logits[:, -1].float()

    return last_logits


def plain_forward(model) -> Forward:
    device = next(model.parameters()).device

    def forward(ids: Int[Tensor, "batch seq"], mask: Int[Tensor, "batch seq"]) -> Float[Tensor, "batch seq vocab"]:
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()

    return forward


