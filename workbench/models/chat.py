"""Chat formatting with the tokenizer's own template, the post-instruction (EOI) positions, and batching.

The EOI tokens are whatever the chat template puts after the user's instruction (ChatML:
`<|im_end|>\\n<|im_start|>assistant\\n`; Llama-2: ` [/INST]`); they are derived by rendering the template
around a sentinel instruction, never written per model family.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from workbench.errors import WorkbenchError

_SENTINEL = "\u2063WORKBENCH_INSTRUCTION\u2063"


def pad_token_rows(rows: Sequence[Sequence[int]], pad: int, left: bool = True
                   ) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Token-id rows padded to the longest one (on the left, or the right) and their attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(list(r), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@dataclass(frozen=True)
class TokenizedBatch:
    """Left-padded token ids with their attention mask; the last position of every row is the prompt's last token."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]

    def to(self, device: torch.device | str) -> "TokenizedBatch":
        return TokenizedBatch(self.input_ids.to(device), self.attention_mask.to(device))


class ChatFormat:
    """Formats instructions with a tokenizer's chat template and knows the EOI token positions."""

    def __init__(self, tokenizer, system: str | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise WorkbenchError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template: "
                "the workbench needs a chat model (or set tokenizer.chat_template)"
            )
        self.tokenizer = tokenizer
        self.system = system
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.prefix_string, self.eoi_string = self._render(_SENTINEL).split(_SENTINEL, 1)
        self.prefix_token_ids: list[int] = tokenizer.encode(self.prefix_string, add_special_tokens=False)
        self.eoi_token_ids: list[int] = tokenizer.encode(self.eoi_string, add_special_tokens=False)
        if not self.eoi_token_ids:
            raise WorkbenchError("the chat template puts no tokens after the instruction: no EOI positions")

    def _render(self, instruction: str) -> str:
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages.append({"role": "user", "content": instruction})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if _SENTINEL not in text and instruction == _SENTINEL:
            raise WorkbenchError("the chat template does not contain the user message verbatim")
        return text

    @property
    def n_eoi(self) -> int:
        return len(self.eoi_token_ids)

    @property
    def eoi_positions(self) -> list[int]:
        """EOI positions as negative offsets from the end of the prompt, e.g. [-5, -4, -3, -2, -1]."""
        return list(range(-self.n_eoi, 0))

    @property
    def eoi_token_strings(self) -> list[str]:
        return [self.tokenizer.decode([t]) for t in self.eoi_token_ids]

    def format(self, instruction: str) -> str:
        return self._render(instruction)

    def tokenize_after_prefix(
        self, instructions: Sequence[str], device: torch.device | str = "cpu"
    ) -> TokenizedBatch | None:
        """The tokens after the shared template prefix (system turn, user header), left-padded; None if some prompt's
        tokenization does not start with exactly the prefix tokens (then the prefix cannot be shared)."""
        prefix = self.prefix_token_ids
        if not prefix:
            return None
        rows = []
        for instruction in instructions:
            ids = self.tokenizer.encode(self.format(instruction), add_special_tokens=False)
            if ids[: len(prefix)] != prefix or len(ids) == len(prefix):
                return None
            rows.append(ids[len(prefix) :])
        input_ids, mask = pad_token_rows(rows, self.tokenizer.pad_token_id)
        return TokenizedBatch(input_ids.to(device), mask.to(device))

    def tokenize(self, instructions: Sequence[str], device: torch.device | str = "cpu") -> TokenizedBatch:
        """Format and tokenize with left padding. The template supplies BOS where it has one, so none is added."""
        if len(instructions) == 0:
            raise WorkbenchError("empty prompt set: nothing to tokenize")
        texts = [self.format(i) for i in instructions]
        previous_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            enc = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        finally:
            self.tokenizer.padding_side = previous_side
        return TokenizedBatch(enc["input_ids"].to(device), enc["attention_mask"].to(device))
