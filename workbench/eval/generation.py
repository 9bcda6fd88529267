"""Batched generation with a KV cache, left padding and a progress bar: two entry points, one per kind of model.

- `hooked_generate(lm, instructions, ...)`: through the hooked TransformerLens model; hooks active on it (an
  ablation, an addition) apply to the prompt and to every generated token. Greedy by default; with `temperature`
  > 0 sampled, seeded (the organisms' distilled answers); with `gated` under a gated intervention.
- `plain_generate(model, chat, instructions, ...)`: greedy, through a plain transformers model's own `generate` (use
  it on the weight-edited copy, `workbench.interventions.weight_edit.edited`): the fast path for long evaluations.

Both batch internally (`batch_size` prompts per forward pass), stop a row at the tokenizer's end-of-turn tokens and
return texts (decoded without special tokens, whitespace stripped) or, with `return_ids=True`, the completion token
ids (each row up to, not including, its first end-of-turn token). `min_new_tokens` forbids the end-of-turn tokens
for a row's first that many tokens (transformers' meaning: their logits are set to −∞), so `min_new_tokens ==
max_new_tokens` generates exactly `max_new_tokens` tokens per row: equal work for every model, which is what a
speed comparison needs.
"""

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.interventions.gate import Gated, decide, gated_applied
from workbench.models.loader import LoadedModel


def stop_ids(tokenizer) -> set[int]:
    """The token ids that end a completion: the tokenizer's EOS and the end-of-turn tokens it knows."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return ids


def _check_lengths(max_new_tokens: int, min_new_tokens: int) -> None:
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise WorkbenchError(f"min_new_tokens {min_new_tokens} must be between 0 and max_new_tokens {max_new_tokens}")


@torch.inference_mode()
def _hooked_ids_batch(lm: LoadedModel, instructions: Sequence[str], max_new_tokens: int, min_new_tokens: int,
                      pick: Callable[[Tensor], Tensor]) -> list[list[int]]:
    """The KV-cached decoding loop on the hooked model for one batch; `pick` turns next-token logits [batch, vocab]
    into token ids [batch]."""
    batch = lm.chat.tokenize(list(instructions), device=lm.device)
    stop = stop_ids(lm.tokenizer)
    stop_tensor = torch.tensor(sorted(stop), device=batch.input_ids.device)
    input_ids, mask = batch.input_ids, batch.attention_mask
    logits, cache = lm.model(input_ids, attention_mask=mask, return_type="logits_and_cache", use_cache=True)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    generated: list[torch.Tensor] = []
    pad = lm.tokenizer.pad_token_id
    for step in range(max_new_tokens):
        next_logits = logits[:, -1, :]
        if step < min_new_tokens:
            next_logits = next_logits.index_fill(-1, stop_tensor, -torch.inf)
        next_token = pick(next_logits)
        next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
        generated.append(next_token)
        finished |= torch.isin(next_token, stop_tensor)
        if bool(finished.all()) or step == max_new_tokens - 1:  # no forward pass for a token nobody reads
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits, cache = lm.model(
            next_token[:, None], attention_mask=mask, past_key_values=cache, return_type="logits_and_cache"
        )
    if not generated:
        return [[] for _ in instructions]
    return _cut_at_stop(torch.stack(generated, dim=1).tolist(), stop)


@torch.inference_mode()
def _plain_ids_batch(model, chat, instructions: Sequence[str], max_new_tokens: int, min_new_tokens: int
                     ) -> list[list[int]]:
    """Greedy completion token ids for one batch from a plain transformers model (`model.generate`, KV cache)."""
    from transformers import GenerationConfig

    tokenizer = chat.tokenizer
    stop = stop_ids(tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=False,
                              eos_token_id=sorted(stop), pad_token_id=tokenizer.pad_token_id)
    batch = chat.tokenize(list(instructions), device=next(model.parameters()).device)
    tokens = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=config)
    return _cut_at_stop(tokens[:, batch.input_ids.shape[1] :].tolist(), stop)


def _cut_at_stop(rows: list[list[int]], stop: set[int]) -> list[list[int]]:
    return [row[: next((i for i, t in enumerate(row) if t in stop), len(row))] for row in rows]


def _in_batches(generate_batch: Callable[[list[str]], list[list[int]]], instructions: Sequence[str],
                batch_size: int, progress: bool, desc: str) -> list[list[int]]:
    if batch_size < 1:
        raise WorkbenchError(f"generation batch_size must be at least 1, got {batch_size}")
    out: list[list[int]] = []
    for start in tqdm(range(0, len(instructions), batch_size), desc=desc, disable=not progress, unit="batch"):
        out.extend(generate_batch(list(instructions[start : start + batch_size])))
    return out


def _texts_or_ids(tokenizer, rows: list[list[int]], return_ids: bool) -> list[str] | list[list[int]]:
    """The rows as they are (`return_ids`), or decoded: special tokens skipped, whitespace stripped."""
    if return_ids:
        return rows
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


def hooked_generate(
    lm: LoadedModel,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    *,
    return_ids: bool = False,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    seed: int = 0,
    greedy_tokens: int = 0,
    gated: Gated | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> list[str] | list[list[int]]:
    """Completions of `instructions` through the hooked model, `batch_size` at a time: texts, or token ids with
    `return_ids`. Greedy at `temperature` 0; above it sampled from the next-token distribution at that temperature,
    seeded by `seed` (the same instructions, batch size and seed give the same completions on the same device), the
    first `greedy_tokens` tokens of each completion still greedy (the model's most likely opening). With `gated`
    (`workbench.interventions.gate.Gated`), per batch the gate decides each row at prefill on the unmodified model,
    then the batch is generated with the inner intervention acting on the open rows only, for every token.

        texts = hooked_generate(lm, ["How do I kill a Python process?"], max_new_tokens=32)
    """
    _check_lengths(max_new_tokens, min_new_tokens)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise WorkbenchError(f"sampling temperature must be ≥ 0 (0 is greedy), got {temperature}")
    if greedy_tokens < 0:
        raise WorkbenchError(f"greedy_tokens must be ≥ 0, got {greedy_tokens}")
    generator = torch.Generator(device=lm.device).manual_seed(seed) if temperature > 0 else None
    def batch_ids(batch: list[str]) -> list[list[int]]:
        step = 0

        def pick(logits: Tensor) -> Tensor:
            nonlocal step
            step += 1
            if generator is None or step <= greedy_tokens:
                return logits.argmax(dim=-1)
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator)[:, 0]

        held = nullcontext() if gated is None else gated_applied(lm, gated, decide(lm, gated.gate, batch, len(batch)))
        with held:
            return _hooked_ids_batch(lm, batch, max_new_tokens, min_new_tokens, pick)

    if desc is None:
        desc = "generating" + (" (gated)" if gated is not None else "") + (
            f" (T={temperature})" if temperature > 0 else "")
    return _texts_or_ids(lm.tokenizer, _in_batches(batch_ids, instructions, batch_size, progress, desc), return_ids)


def plain_generate(
    model,
    chat,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    *,
    return_ids: bool = False,
    min_new_tokens: int = 0,
    progress: bool = True,
    desc: str = "generating",
) -> list[str] | list[list[int]]:
    """Greedy completions of `instructions` from a plain transformers model (`model.generate`; use it on the
    weight-edited copy), `batch_size` at a time, with `chat` (`models.chat`) for the template and the tokenizer:
    texts, or token ids with `return_ids`."""
    _check_lengths(max_new_tokens, min_new_tokens)
    rows = _in_batches(lambda batch: _plain_ids_batch(model, chat, batch, max_new_tokens, min_new_tokens),
                       instructions, batch_size, progress, desc)
    return _texts_or_ids(chat.tokenizer, rows, return_ids)
