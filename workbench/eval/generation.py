"""Batched greedy generation with a KV cache, left padding and a progress bar, on two backends:

- `greedy_generate(lm, ...)`: through the hooked TransformerLens model; hooks active on it (an ablation, an
  addition) apply to the prompt and to every generated token.
- `plain_greedy_generate(model, chat, ...)`: a plain transformers model's own `generate` (use it on the
  weight-edited copy, `workbench.interventions.weight_edit.edited`): the fast path for long evaluations.

Both stop a row at the tokenizer's end-of-turn tokens and decode without special tokens. `min_new_tokens` forbids
the end-of-turn tokens for a row's first that many tokens (transformers' meaning: their logits are set to −∞), so
`min_new_tokens == max_new_tokens` generates exactly `max_new_tokens` tokens per row: equal work for every model,
which is what a speed comparison needs. The `*_ids` functions return the completion token ids (each row up to,
not including, its first end-of-turn token) instead of text. `sample_generate` samples at a temperature, seeded
(the organisms' distilled answers, `workbench.organism.distill`).
"""

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.models.loader import LoadedModel


def stop_ids(tokenizer) -> set[int]:
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
def greedy_generate_ids_batch(
    lm: LoadedModel, instructions: Sequence[str], max_new_tokens: int = 64, min_new_tokens: int = 0
) -> list[list[int]]:
    """Greedy completion token ids for one batch of instructions through the hooked model (each row up to its
    first end-of-turn token, which is not included)."""
    return _generate_ids_batch(lm, instructions, max_new_tokens, min_new_tokens, lambda logits: logits.argmax(dim=-1))


def _generate_ids_batch(lm: LoadedModel, instructions: Sequence[str], max_new_tokens: int, min_new_tokens: int,
                        pick: Callable[[Tensor], Tensor]) -> list[list[int]]:
    """The KV-cached decoding loop; `pick` turns next-token logits [batch, vocab] into token ids [batch]."""
    _check_lengths(max_new_tokens, min_new_tokens)
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
def sample_generate(
    lm: LoadedModel,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
    greedy_tokens: int = 0,
    progress: bool = True,
    desc: str = "sampling",
) -> list[str]:
    """Completions sampled from the model's next-token distribution at `temperature` (> 0), seeded: the same
    instructions, batch size and seed give the same completions on the same device. The first `greedy_tokens`
    tokens of each completion are greedy (the model's most likely opening), the rest sampled."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise WorkbenchError(f"sampling temperature must be > 0, got {temperature} (0 is greedy: greedy_generate)")
    if greedy_tokens < 0:
        raise WorkbenchError(f"greedy_tokens must be ≥ 0, got {greedy_tokens}")
    generator = torch.Generator(device=lm.device).manual_seed(seed)

    def batch_ids(batch: list[str]) -> list[list[int]]:
        step = 0

        def pick(logits: Tensor) -> Tensor:
            nonlocal step
            step += 1
            if step <= greedy_tokens:
                return logits.argmax(dim=-1)
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator)[:, 0]

        return _generate_ids_batch(lm, batch, max_new_tokens, 0, pick)

    return decode_completions(lm.tokenizer, _in_batches(batch_ids, instructions, batch_size, progress, desc))


def _cut_at_stop(rows: list[list[int]], stop: set[int]) -> list[list[int]]:
    return [row[: next((i for i, t in enumerate(row) if t in stop), len(row))] for row in rows]


def decode_completions(tokenizer, rows: list[list[int]]) -> list[str]:
    """Completion token ids (from a `*_ids` function) as text, special tokens skipped, whitespace stripped."""
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


def _in_batches(generate_batch: Callable[[list[str]], list], instructions: Sequence[str], batch_size: int,
                progress: bool, desc: str) -> list:
    out: list = []
    for start in tqdm(range(0, len(instructions), batch_size), desc=desc, disable=not progress, unit="batch"):
        out.extend(generate_batch(list(instructions[start : start + batch_size])))
    return out


def greedy_generate_ids(
    lm: LoadedModel,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
    min_new_tokens: int = 0,
) -> list[list[int]]:
    """Greedy completion token ids for any number of instructions through the hooked model, in batches."""
    return _in_batches(lambda batch: greedy_generate_ids_batch(lm, batch, max_new_tokens, min_new_tokens),
                       instructions, batch_size, progress, desc)


def greedy_generate(
    lm: LoadedModel,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
    min_new_tokens: int = 0,
) -> list[str]:
    """Greedy completions for any number of instructions through the hooked model, in batches, with a progress bar."""
    return decode_completions(lm.tokenizer, greedy_generate_ids(lm, instructions, max_new_tokens, batch_size,
                                                                progress, desc, min_new_tokens))


@torch.inference_mode()
def plain_greedy_generate_ids_batch(model, chat, instructions: Sequence[str], max_new_tokens: int = 64,
                                    min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy completion token ids for one batch from a plain transformers model (`model.generate`, KV cache)."""
    from transformers import GenerationConfig

    _check_lengths(max_new_tokens, min_new_tokens)
    tokenizer = chat.tokenizer
    stop = stop_ids(tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=False,
                              eos_token_id=sorted(stop), pad_token_id=tokenizer.pad_token_id)
    batch = chat.tokenize(list(instructions), device=next(model.parameters()).device)
    tokens = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=config)
    return _cut_at_stop(tokens[:, batch.input_ids.shape[1] :].tolist(), stop)


def plain_greedy_generate_ids(
    model,
    chat,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
    min_new_tokens: int = 0,
) -> list[list[int]]:
    """Greedy completion token ids from a plain transformers model, in batches."""
    return _in_batches(lambda batch: plain_greedy_generate_ids_batch(model, chat, batch, max_new_tokens,
                                                                     min_new_tokens),
                       instructions, batch_size, progress, desc)


def plain_greedy_generate(
    model,
    chat,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
    min_new_tokens: int = 0,
) -> list[str]:
    """Greedy completions from a plain transformers model (use it on the weight-edited copy), in batches."""
    return decode_completions(chat.tokenizer, plain_greedy_generate_ids(model, chat, instructions, max_new_tokens,
                                                                        batch_size, progress, desc, min_new_tokens))


def gated_greedy_generate_ids(
    lm: LoadedModel,
    gated,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating (gated)",
    min_new_tokens: int = 0,
) -> list[list[int]]:
    """Greedy completion token ids under a gated intervention (`workbench.interventions.gate.Gated`) through the hooked
    model: per batch, the gate decides each row at prefill on the unmodified model, then the batch is generated with
    the inner intervention acting on the open rows only, for every generated token."""
    from workbench.interventions.gate import decide, gated_applied

    def batch_ids(batch: list[str]) -> list[list[int]]:
        open_rows = decide(lm, gated.gate, batch, len(batch))
        with gated_applied(lm, gated, open_rows):
            return greedy_generate_ids_batch(lm, batch, max_new_tokens, min_new_tokens)

    return _in_batches(batch_ids, instructions, batch_size, progress, desc)


def gated_greedy_generate(lm: LoadedModel, gated, instructions: Sequence[str], max_new_tokens: int = 64,
                          batch_size: int = 16, progress: bool = True, desc: str = "generating (gated)",
                          min_new_tokens: int = 0) -> list[str]:
    """Greedy completions under a gated intervention through the hooked model (`gated_greedy_generate_ids`).

        wb.gated_generate(lm, wb.Gated(wb.Ablation(direction), wb.load_gate(path)), ["How do I kill a process?"])
    """
    return decode_completions(lm.tokenizer, gated_greedy_generate_ids(lm, gated, instructions, max_new_tokens,
                                                                      batch_size, progress, desc, min_new_tokens))
