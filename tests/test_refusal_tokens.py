"""Refusal tokens: recognised families by vocabulary, derived ones otherwise."""

import pytest

from workbench.models.refusal_tokens import derive, recognise, refusal_token_ids


class VocabOnlyTokenizer:
    """Just enough of a tokenizer for recognition: a size and the token string at each id."""

    def __init__(self, size: int, tokens: dict[int, str]):
        self.size, self.tokens = size, tokens

    def __len__(self):
        return self.size

    def convert_ids_to_tokens(self, ids):
        return [self.tokens.get(i, "<unk>") for i in ids]


def test_llama2_recognised_by_vocabulary():
    tok = VocabOnlyTokenizer(32000, {306: "▁I"})
    assert recognise(tok).family == "llama-2"
    assert refusal_token_ids(tok) == [306]


def test_qwen_recognised_with_added_tokens():
    tok = VocabOnlyTokenizer(151665, {40: "I", 2121: "As"})
    assert refusal_token_ids(tok) == [40, 2121]


def test_same_size_different_tokens_not_recognised():
    assert recognise(VocabOnlyTokenizer(32000, {306: "▁the"})) is None


def test_override_wins():
    assert refusal_token_ids(VocabOnlyTokenizer(32000, {306: "▁I"}), override=[1, 2]) == [1, 2]


@pytest.mark.model
def test_derived_for_default_tokenizer(stock_model):
    tok = stock_model.tokenizer
    assert recognise(tok) is None
    ids = derive(tok)
    assert [tok.decode([i]) for i in ids] == ["I", "As", "Sorry"]
