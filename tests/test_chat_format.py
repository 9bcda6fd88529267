"""EOI positions derived from chat templates (template fixtures on the tiny model's tokenizer; the real default
tokenizer)."""

from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.models.chat import ChatFormat

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"

EXPECTED_EOI = {
    "llama2": " [/INST]",
    "llama3": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<end_of_turn>\n<start_of_turn>model\n",
    "chatml": "<|im_end|>\n<|im_start|>assistant\n",
}


@pytest.mark.parametrize("family", sorted(EXPECTED_EOI))
def test_eoi_string_derived_from_template(tiny_checkpoint, family):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)  # its own copy: the session's stays as loaded
    tokenizer.chat_template = (TEMPLATES / f"{family}.jinja").read_text()
    chat = ChatFormat(tokenizer)
    assert chat.eoi_string == EXPECTED_EOI[family]
    assert tokenizer.decode(chat.eoi_token_ids) == EXPECTED_EOI[family]


@pytest.mark.model
def test_default_model_eoi_positions(stock_model):
    chat = stock_model.chat
    assert chat.eoi_string == "<|im_end|>\n<|im_start|>assistant\n"
    assert chat.eoi_token_strings == ["<|im_end|>", "\n", "<|im_start|>", "ass", "istant", "\n"]
    assert chat.eoi_positions == [-6, -5, -4, -3, -2, -1]
    batch = chat.tokenize(["Hi", "How do I bake bread?", "Explain why the sky is blue in one sentence."])
    for row in batch.input_ids:
        assert row[-chat.n_eoi :].tolist() == chat.eoi_token_ids


@pytest.mark.model
def test_left_padding_and_no_doubled_bos(stock_model):
    chat = stock_model.chat
    batch = chat.tokenize(["Hi", "Tell me three facts about octopuses, please."])
    mask = batch.attention_mask
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # short prompt padded on the left
    assert mask[1].all()
    text = chat.format("Hi")
    # SmolLM2's template inserts its own default system turn and no BOS token is added on top of it.
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    ids = batch.input_ids[1].tolist()
    assert ids.count(stock_model.tokenizer.bos_token_id) == text.count(stock_model.tokenizer.bos_token)


@pytest.mark.model
def test_system_prompt_option(stock_model):
    chat = ChatFormat(stock_model.tokenizer, system="Be brief.")
    assert chat.format("Hi").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert chat.eoi_positions == [-6, -5, -4, -3, -2, -1]


def test_empty_prompt_set_is_refused(tiny):
    with pytest.raises(WorkbenchError, match="empty prompt set"):
        tiny.chat.tokenize([])
