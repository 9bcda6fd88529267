"""Refusal tokens: the token ids whose probability at the first response position defines the refusal score.

Known tokenizers are recognised by their vocabulary (size and the token strings at the paper's ids), not by a
model name; any other tokenizer gets the first tokens of typical refusal openings.
"""

from dataclasses import dataclass

from workbench.registry import Registry

REFUSAL_OPENINGS: tuple[str, ...] = ("I", "As", "Sorry")
"""Openings of typical refusals ("I'm sorry…", "As an AI…", "Sorry, …") used to derive tokens for new tokenizers."""


@dataclass(frozen=True)
class KnownRefusalTokens:
    """The paper's refusal token ids for one tokenizer family, with what identifies that tokenizer."""

    family: str
    vocab_size: int
    token_ids: tuple[int, ...]
    token_strings: tuple[str, ...]


KNOWN: Registry[KnownRefusalTokens] = Registry("refusal-token family")
"""The known tokenizer families, by family name."""

for _entry in (KnownRefusalTokens("llama-2", 32000, (306,), ("▁I",)),
               KnownRefusalTokens("llama-3", 128256, (40,), ("I",)),
               KnownRefusalTokens("gemma", 256000, (235285,), ("I",)),
               KnownRefusalTokens("qwen", 151643, (40, 2121), ("I", "As")),
               KnownRefusalTokens("yi", 64000, (59597,), ("I",))):
    KNOWN.register(_entry.family, _entry)


def _vocab_size(tokenizer) -> int:
    return len(tokenizer)


def recognise(tokenizer) -> KnownRefusalTokens | None:
    """The registered family whose token strings sit at its ids in this tokenizer, if any."""
    size = _vocab_size(tokenizer)
    for entry in KNOWN.values():
        # Vocabularies grow by a few added special tokens between releases; the ids must still decode the same.
        if not (entry.vocab_size <= size <= entry.vocab_size + 2048):
            continue
        if max(entry.token_ids) >= size:
            continue
        if tuple(tokenizer.convert_ids_to_tokens(list(entry.token_ids))) == entry.token_strings:
            return entry
    return None


def derive(tokenizer, openings: tuple[str, ...] = REFUSAL_OPENINGS) -> list[int]:
    """First token of each refusal opening as it would start a reply (no leading space), deduplicated."""
    ids: list[int] = []
    for text in openings:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def refusal_token_ids(tokenizer, override: list[int] | None = None) -> list[int]:
    """The refusal tokens for this tokenizer: an explicit override, a recognised family, or derived ones."""
    if override:
        return list(override)
    known = recognise(tokenizer)
    if known is not None:
        return list(known.token_ids)
    return derive(tokenizer)
