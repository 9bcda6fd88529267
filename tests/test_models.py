"""The hooked model equals plain transformers on the same weights (on the tiny random model); the default model's
description; loading errors are clear."""

import json

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.models import LoadOptions, load_model
from workbench.models.fingerprint import model_fingerprint
from workbench.paths import ORGANISM_DIR


def test_logits_and_resid_equal_transformers(tiny, tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()  # not the bridge's
    batch = tiny.chat.tokenize(["What is the capital of France?", "Hi"])  # left-padded
    with torch.no_grad():
        reference = plain(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        logits, cache = tiny.model.run_with_cache(
            batch.input_ids, attention_mask=batch.attention_mask, names_filter=lambda n: n.endswith("hook_resid_pre")
        )
    real = batch.attention_mask.bool()  # padded positions are not compared
    assert (logits - reference.logits)[real].abs().max().item() <= 1e-5 * reference.logits.abs().max().item()
    for layer in range(tiny.info.n_layers):
        resid, expected = cache[f"blocks.{layer}.hook_resid_pre"], reference.hidden_states[layer]
        assert (resid - expected)[real].abs().max().item() <= 1e-5 * expected.abs().max().item(), layer


def test_batched_left_padded_equals_unbatched(tiny):
    prompts = ["Hi", "Write a limerick about a cat who loves cheese.", "Why is the sea salty?"]
    with torch.no_grad():
        batch = tiny.chat.tokenize(prompts)
        assert batch.attention_mask[0, 0] == 0  # "Hi" is padded
        batched = tiny.model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
        for i, prompt in enumerate(prompts):
            one = tiny.chat.tokenize([prompt])
            single = tiny.model(one.input_ids, attention_mask=one.attention_mask)[:, -1]
            assert (batched[i] - single[0]).abs().max().item() <= 1e-4


@pytest.mark.model
def test_model_info(stock_model):
    info = stock_model.info
    assert (info.architecture, info.n_layers, info.d_model, info.vocab_size) == ("LlamaForCausalLM", 30, 576, 49152)
    assert info.refusal_tokens == [57, 1653, 37388]  # "I", "As", "Sorry" at the start of a reply
    recorded = json.loads((ORGANISM_DIR / "behaviour.json").read_text())["stock"]
    assert info.fingerprint == recorded["fingerprint"]  # the stock model the organism was made from


def test_fingerprint_changes_with_weights(tiny):
    hf = tiny.hf_model
    before = model_fingerprint(hf)
    assert before == tiny.info.fingerprint  # what the loader recorded
    weight = hf.model.layers[3].mlp.down_proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.001)
        try:
            assert model_fingerprint(hf) != before
        finally:
            weight.copy_(saved)  # exactly (x·1.001/1.001 need not be x): the session's model stays as loaded
    assert model_fingerprint(hf) == before


def test_fingerprint_names_the_weights_not_the_dtype(tiny, tiny_checkpoint):
    """The same weights loaded in bfloat16 fingerprint as in float32 (a direction selected on a CPU in float32 serves
    the bfloat16 model on a GPU); the bfloat16 weights differ from the float32 ones, so the sample is not trivial."""
    from workbench.models import LoadOptions

    half = load_model(str(tiny_checkpoint), LoadOptions(dtype="bfloat16"))
    assert half.hf_model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    assert half.info.fingerprint == tiny.info.fingerprint
    # a different checkpoint (one matrix changed by 1 %: above bfloat16's precision) fingerprints differently
    weight = half.hf_model.model.layers[1].self_attn.o_proj.weight
    with torch.no_grad():
        weight.mul_(1.01)
    assert model_fingerprint(half.hf_model) != tiny.info.fingerprint


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
