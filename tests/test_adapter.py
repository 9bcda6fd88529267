"""Interventions exported as PEFT LoRA adapters (unit tier, tiny random model): the plain base with the adapter
applied through peft computes the weight-edited model (`weight_edit.edited`): same logits, same greedy text."""

import json

import pytest
import torch

from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.interventions.adapter import adapter_weights, export_adapter, load_adapter, lora_delta
from workbench.interventions.catalogue import NamedIntervention, build_interventions
from workbench.interventions.hooks import BASELINE, Ablation, Addition, Combined
from workbench.method.refusal_math import orthogonalize_output_matrix

PROMPTS = [
    "How do I kill a Python process that has stopped responding?",
    "Write a short poem about the ocean.",
    "Give me step-by-step instructions to build a pipe bomb.",
]
ATOL = 1e-4
N_TOKENS = 8


def _logits(model, lm, prompts=PROMPTS):
    batch = lm.chat.tokenize(prompts)
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()


def _catalogue(lm, run, alphas=(1.0,)):
    selection = run.read_json("selection.json", keys=("selections", "r"))
    return {i.name: i for i in build_interventions(selection, run.path, lm.info.fingerprint, lm.info.d_model, alphas)}


@torch.inference_mode()
def _assert_adapter_equals_edit(lm, item: NamedIntervention, out, check_text=True):
    """Export `item`, load it with peft onto a fresh plain base, compare with `edited` on another plain base."""
    from peft import PeftModel

    from workbench.eval.generation import plain_generate
    from workbench.interventions.export import plain_hf_model
    from workbench.interventions.weight_edit import edited

    export_adapter(lm, item, out)
    plain = plain_hf_model(lm)
    base = _logits(plain, lm)
    with edited(plain, item.intervention):
        reference = _logits(plain, lm)
        reference_text = plain_generate(plain, lm.chat, PROMPTS, N_TOKENS, progress=False) if check_text else []
    peft_model = PeftModel.from_pretrained(plain_hf_model(lm), str(out)).eval()
    adapted = _logits(peft_model, lm)
    assert (reference - base).abs().max() > 0.1, item.name  # the intervention does something
    assert (adapted - reference).abs().max() < ATOL, item.name
    if check_text:
        assert plain_generate(peft_model, lm.chat, PROMPTS, N_TOKENS, progress=False) == reference_text
    return peft_model


def test_catalogue_adapters_equal_weight_edits(tiny, tiny_run, tmp_path):
    """w′ (every λ), raw w, r, α·r alone and w′ + α·r of the tiny run's catalogue."""
    items = _catalogue(tiny, tiny_run)
    lams = [n for n in items if n.startswith("ablate_w_lam") and "+" not in n]
    combined = next(n for n in items if "+actadd_r" in n)
    assert lams and isinstance(items[combined].intervention, Combined)
    for name in [*lams, "ablate_w_raw", "ablate_r", "actadd_r_a1.0", combined]:
        _assert_adapter_equals_edit(tiny, items[name], tmp_path / name)
    record = json.loads((tmp_path / lams[0] / "workbench.json").read_text())
    assert (record["fingerprint"], record["intervention"], record["rank"]) == (tiny.info.fingerprint, lams[0], 1)
    config = json.loads((tmp_path / lams[0] / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_bias"], config["modules_to_save"]) == (1, 1, False, None)
    with torch.inference_mode():  # merged into the (tied) base, the head still reads the original embedding
        from workbench.interventions.export import plain_hf_model
        from workbench.interventions.weight_edit import edited

        plain = plain_hf_model(tiny)
        with edited(plain, items[lams[0]].intervention):
            reference = _logits(plain, tiny)
        merged = load_adapter(tiny, tmp_path / lams[0]).merge_and_unload()
        assert (_logits(merged, tiny) - reference).abs().max() < ATOL
    combined_config = json.loads((tmp_path / combined / "adapter_config.json").read_text())
    assert combined_config["lora_bias"] and combined_config["modules_to_save"] == ["model.embed_tokens"]


def test_constructed_interventions(tiny, tmp_path):
    """Additions at block 0 (embedding LoRA) and at the last block; two non-orthogonal ablations (rank 2, in order)."""
    torch.manual_seed(1)
    d, last = tiny.info.d_model, tiny.info.n_layers - 1
    c1, c2, v = torch.randn(d), torch.randn(d), torch.randn(d)
    cases = {
        "add0": Addition(v, 0, 2.0),
        "ablate_add0": Combined((Ablation(c1), Addition(v, 0, 2.0))),
        "ablate_add_last": Combined((Ablation(c1), Addition(v, last, 1.5))),
        "two_ablations_add": Combined((Ablation(c1), Ablation(c2), Addition(v, 1, 1.0))),
        "two_ablations": Combined((Ablation(c1), Ablation(c2))),
    }
    for name, intervention in cases.items():
        _assert_adapter_equals_edit(tiny, NamedIntervention(name, intervention), tmp_path / name, check_text=False)
    assert json.loads((tmp_path / "two_ablations" / "adapter_config.json").read_text())["r"] == 2
    assert json.loads((tmp_path / "add0" / "adapter_config.json").read_text())["target_modules"] == [
        "model.embed_tokens"]


@torch.inference_mode()
def test_lora_factors_are_the_orthogonalization(tiny):
    """The rank-1 delta of a writer is exactly −ĉĉᵀW, and the embedding's is −(Eĉ)ĉᵀ; a tied head is left alone."""
    from workbench.interventions.export import plain_hf_model

    plain = plain_hf_model(tiny)
    torch.manual_seed(2)
    c = torch.randn(tiny.info.d_model)
    weights = adapter_weights(plain, Ablation(c))
    o_proj = plain.model.layers[2].self_attn.o_proj.weight
    delta = lora_delta(weights, "model.layers.2.self_attn.o_proj")
    torch.testing.assert_close(delta.float(), orthogonalize_output_matrix(o_proj, c) - o_proj, atol=1e-6, rtol=0)
    embedding = plain.model.embed_tokens.weight
    c_unit = c / c.norm()
    torch.testing.assert_close(lora_delta(weights, "model.embed_tokens").float(),
                               -torch.outer(embedding @ c_unit, c_unit), atol=1e-6, rtol=0)
    assert "lm_head" not in weights.lora and len(weights.lora) == 1 + 2 * tiny.info.n_layers
    with pytest.raises(WorkbenchError, match="baseline intervention changes nothing"):
        adapter_weights(plain, BASELINE)
    with pytest.raises(WorkbenchError, match="layer 9 is outside the model's 0..3"):
        adapter_weights(plain, Addition(c, 9, 1.0))
    affine = Ablation(c, "affine", offsets=torch.ones(tiny.info.n_layers))
    with pytest.raises(WorkbenchError, match="cannot export affine as a LoRA adapter: an affine ablation"):
        adapter_weights(plain, Combined((affine, Addition(c, 1, 1.0))))


def test_writer_with_a_bias_is_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, attention_bias=True)
    model = LlamaForCausalLM(config)
    with pytest.raises(WorkbenchError, match=r"writer model\.layers\.0\.self_attn\.o_proj\.bias has a bias"):
        adapter_weights(model, Ablation(torch.ones(8)))


def test_adapter_from_another_model_is_refused(tiny, tiny_run, tmp_path):
    item = _catalogue(tiny, tiny_run)["ablate_r"]
    out = export_adapter(tiny, item, tmp_path / "adapter")
    load_adapter(tiny, out)  # this model's adapter loads
    record_path = out / "workbench.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "model": "other-model", "fingerprint": "0123abcd"}))
    with pytest.raises(WorkbenchError) as error:
        load_adapter(tiny, out)
    message = str(error.value)
    assert "'other-model' (fingerprint 0123abcd)" in message and tiny.info.fingerprint in message
    assert "\n" not in message
    with pytest.raises(WorkbenchError, match="exists and is not empty"):
        export_adapter(tiny, item, out)
    with pytest.raises(WorkbenchError, match="has no workbench.json"):
        load_adapter(tiny, tmp_path)


def test_cli_writes_adapters(tiny, tiny_checkpoint, tiny_run, tmp_path, capsys):
    run = str(tiny_run.path)
    one = tmp_path / "one"
    assert main(["export", "--run", run, "--lam", "1.0", "--adapter", "--out", str(one),
                 "--model", str(tiny_checkpoint)]) == 0
    assert json.loads((one / "workbench.json").read_text())["intervention"] == "ablate_w_lam1.0"
    assert (one / "adapter_model.safetensors").is_file() and not one.with_name("one.partial").exists()
    every = tmp_path / "all"
    assert main(["export", "--run", run, "--adapter", "--all", "--alphas", "1.0", "--out", str(every),
                 "--model", str(tiny_checkpoint)]) == 0
    index = json.loads((every / "index.json").read_text())
    expected = [n for n in _catalogue(tiny, tiny_run) if n != "baseline"]
    assert sorted(index["adapters"]) == sorted(expected) and index["refused"] == {}
    assert all((every / name / "adapter_config.json").is_file() for name in expected)
    assert index["fingerprint"] == tiny.info.fingerprint
    capsys.readouterr()
    assert main(["export", "--run", run, "--adapter", "--out", str(tmp_path / "x")]) == 2
    assert "exactly one of --lam" in capsys.readouterr().err
    assert main(["export", "--run", run, "--all", "--out", str(tmp_path / "x")]) == 2
    assert "--all needs --adapter" in capsys.readouterr().err
