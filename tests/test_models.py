"""The hooked model equals plain transformers on the same weights; loading errors are clear."""

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadOptions, load_model
from workbench.models.fingerprint import model_fingerprint

pytestmark = pytest.mark.model


def test_logits_and_resid_equal_transformers(stock_model):
    batch = stock_model.chat.tokenize(["What is the capital of France?"])
    hf = stock_model.hf_model
    with torch.no_grad():
        reference = hf(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        logits, cache = stock_model.model.run_with_cache(
            batch.input_ids, attention_mask=batch.attention_mask, names_filter=lambda n: n.endswith("hook_resid_pre")
        )
    assert (logits - reference.logits).abs().max().item() <= 1e-5
    for layer in (0, 7, 29):
        resid = cache[f"blocks.{layer}.hook_resid_pre"]
        assert (resid - reference.hidden_states[layer]).abs().max().item() <= 1e-5


def test_batched_left_padded_equals_unbatched(stock_model):
    prompts = ["Hi", "Write a limerick about a cat who loves cheese.", "Why is the sea salty?"]
    with torch.no_grad():
        batch = stock_model.chat.tokenize(prompts)
        batched = stock_model.model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
        for i, prompt in enumerate(prompts):
            one = stock_model.chat.tokenize([prompt])
            single = stock_model.model(one.input_ids, attention_mask=one.attention_mask)[:, -1]
            assert (batched[i] - single[0]).abs().max().item() <= 1e-4


def test_model_info(stock_model):
    info = stock_model.info
    assert (info.architecture, info.n_layers, info.d_model, info.vocab_size) == ("LlamaForCausalLM", 30, 576, 49152)
    assert info.refusal_tokens == [57, 1653, 37388]  # "I", "As", "Sorry" at the start of a reply
    assert len(info.fingerprint) == 16


def test_fingerprint_changes_with_weights(stock_model):
    hf = stock_model.hf_model
    before = model_fingerprint(hf)
    assert model_fingerprint(hf) == before
    weight = hf.model.layers[3].mlp.down_proj.weight
    with torch.no_grad():
        weight.mul_(1.001)
        try:
            assert model_fingerprint(hf) != before
        finally:
            weight.div_(1.001)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(WorkbenchError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")


def test_bad_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file")
    with pytest.raises(WorkbenchError, match="could not parse GGUF file"):
        load_model(str(bad))


def test_local_dir_without_config(tmp_path):
    with pytest.raises(WorkbenchError, match="no config.json"):
        load_model(str(tmp_path))


def test_unknown_dtype():
    with pytest.raises(WorkbenchError, match="unknown dtype"):
        load_model("smollm2-135m-instruct", LoadOptions(dtype="float8"))
