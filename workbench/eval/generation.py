"""Batched greedy generation with a KV cache, left padding and a progress bar, on two backends:

- `greedy_generate(lm, ...)`: through the hooked TransformerLens model; hooks active on it (an ablation, an
  addition) apply to the prompt and to every generated token.
- `plain_greedy_generate(model, chat, ...)`: a plain transformers model's own `generate` (use it on the
  weight-edited copy, `workbench.interventions.weight_edit.edited`): the fast path for long evaluations.

Both stop a row at the tokenizer's end-of-turn tokens and decode without special tokens.
"""

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from workbench.models.loader import LoadedModel


def stop_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return ids


@torch.inference_mode()
def greedy_generate_batch(
    lm: LoadedModel, instructions: Sequence[str], max_new_tokens: int = 64
) -> list[str]:
    """Greedy completions for one batch of instructions (decoded, special tokens stripped)."""
    batch = lm.chat.tokenize(list(instructions), device=lm.device)
    stop = stop_ids(lm.tokenizer)
    input_ids, mask = batch.input_ids, batch.attention_mask
    logits, cache = lm.model(input_ids, attention_mask=mask, return_type="logits_and_cache", use_cache=True)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    generated: list[torch.Tensor] = []
    pad = lm.tokenizer.pad_token_id
    for _ in range(max_new_tokens):
        next_token = logits[:, -1, :].argmax(dim=-1)
        next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
        generated.append(next_token)
        finished |= torch.isin(next_token, torch.tensor(sorted(stop), device=next_token.device))
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits, cache = lm.model(
            next_token[:, None], attention_mask=mask, past_key_values=cache, return_type="logits_and_cache"
        )
    return _decode(lm.tokenizer, torch.stack(generated, dim=1).tolist(), stop)


def _decode(tokenizer, rows: list[list[int]], stop: set[int]) -> list[str]:
    texts = []
    for row in rows:
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts


def _in_batches(generate_batch, instructions: Sequence[str], batch_size: int, progress: bool, desc: str) -> list[str]:
    out: list[str] = []
    for start in tqdm(range(0, len(instructions), batch_size), desc=desc, disable=not progress, unit="batch"):
        out.extend(generate_batch(list(instructions[start : start + batch_size])))
    return out


def greedy_generate(
    lm: LoadedModel,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions for any number of instructions through the hooked model, in batches, with a progress bar."""
    return _in_batches(lambda batch: greedy_generate_batch(lm, batch, max_new_tokens), instructions, batch_size,
                       progress, desc)


@torch.inference_mode()
def plain_greedy_generate_batch(model, chat, instructions: Sequence[str], max_new_tokens: int = 64) -> list[str]:
    """Greedy completions for one batch from a plain transformers model (`model.generate`, KV cache)."""
    from transformers import GenerationConfig

    tokenizer = chat.tokenizer
    stop = stop_ids(tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stop),
                              pad_token_id=tokenizer.pad_token_id)
    batch = chat.tokenize(list(instructions), device=next(model.parameters()).device)
    tokens = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=config)
    return _decode(tokenizer, tokens[:, batch.input_ids.shape[1] :].tolist(), stop)


def plain_greedy_generate(
    model,
    chat,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions from a plain transformers model (use it on the weight-edited copy), in batches."""
    return _in_batches(lambda batch: plain_greedy_generate_batch(model, chat, batch, max_new_tokens), instructions,
                       batch_size, progress, desc)
