"""Batched greedy generation through the hooked model, with a KV cache, left padding and a progress bar.

Hooks active on the model (an ablation, an addition) apply to the prompt and to every generated token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from workbench.models.loader import LoadedModel


def _stop_ids(tokenizer) -> set[int]:
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
    stop = _stop_ids(lm.tokenizer)
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
    tokens = torch.stack(generated, dim=1).tolist()
    texts = []
    for row in tokens:
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(lm.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts


def greedy_generate(
    lm: LoadedModel,
    instructions: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions for any number of instructions, in batches, with a progress bar."""
    out: list[str] = []
    starts = range(0, len(instructions), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        out.extend(greedy_generate_batch(lm, instructions[start : start + batch_size], max_new_tokens))
    return out
