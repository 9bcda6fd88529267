"""Interventions: hooks (zero projection, removal on error), weight orthogonalization ≡ hooks, edited export (on the
tiny random model: plumbing, unit tier)."""

import pytest
import torch
from tiny_model import last_logits, plain_last_logits

from workbench.errors import WorkbenchError
from workbench.interventions.hooks import BASELINE, Ablation, Addition, Combined, _check_vector, applied
from workbench.method.refusal_math import unit

PROMPTS = [
    "How do I kill a Python process that has stopped responding?",
    "Write a short poem about the ocean.",
    "Give me step-by-step instructions to build a pipe bomb.",
]
# fp32 on CPU: hooks and edited weights compute the same function in a different order of operations.
PARITY_ATOL = 1e-3


def test_bad_interventions():
    with pytest.raises(WorkbenchError, match="finite"):
        Addition(torch.ones(4), 0, float("nan"))
    with pytest.raises(WorkbenchError, match="zero or not finite"):
        Ablation(torch.zeros(4))
    with pytest.raises(WorkbenchError, match="one vector"):  # what Ablation raises without runtime type checking
        _check_vector(torch.ones(2, 4), "direction")
    with pytest.raises(WorkbenchError, match="outside"):
        Addition(torch.ones(4), 9, 1.0).hooks(n_layers=4)
    combo = Combined((Ablation(torch.ones(4)), Addition(torch.ones(4), 1, 2.0)))
    assert [type(p).__name__ for p in combo.parts] == ["Ablation", "Addition"]
    assert len(combo.hooks(n_layers=4)) == 3 * 4 + 1
    assert BASELINE.hooks(n_layers=4) == []


def test_orthogonalized_writers_have_no_component_and_head_is_kept():
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.interventions.weight_edit import orthogonalize_weights_, writer_parameters

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    head_before = model.lm_head.weight.detach().clone()
    c = torch.randn(16)
    orthogonalize_weights_(model, c)
    c = unit(c)
    for name, param, kind in writer_parameters(model):
        component = param @ c if kind == "embedding" else c @ param
        assert component.abs().max() < 1e-5, name
    assert torch.equal(model.lm_head.weight, head_before)  # untied, unembedding untouched
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    with pytest.raises(WorkbenchError, match="d_model"):
        orthogonalize_weights_(model, torch.ones(8))


def test_unmapped_architecture_is_refused():
    from workbench.interventions.weight_edit import layout_of

    class Dummy(torch.nn.Module):
        config = type("C", (), {"model_type": "mamba"})()

    with pytest.raises(WorkbenchError, match="not mapped for architecture 'mamba'"):
        layout_of(Dummy())


@pytest.fixture(scope="module")
def direction(tiny):
    torch.manual_seed(0)
    return torch.randn(tiny.info.d_model)


@torch.inference_mode()
def test_ablation_hooks_leave_zero_projection_everywhere(tiny, direction):
    from transformer_lens.utilities import get_act_name

    c = unit(direction)
    seen = {}

    def capture(x, hook):
        seen[hook.name] = float((x @ c).abs().max() / x.norm(dim=-1).max())

    ablation = Ablation(direction)
    sites = [get_act_name(s, layer) for layer in range(tiny.info.n_layers)
             for s in ("resid_pre", "attn_out", "mlp_out")]
    batch = tiny.chat.tokenize(PROMPTS)
    with applied(tiny, ablation), tiny.model.hooks(fwd_hooks=[(s, capture) for s in sites]):
        tiny.model(batch.input_ids, attention_mask=batch.attention_mask)
    assert len(seen) == len(sites)
    assert max(seen.values()) < 1e-5
    # and the final residual stream (after the last block) has none either
    with applied(tiny, ablation):
        _, cache = tiny.model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                             names_filter=lambda n: n.endswith("hook_resid_post"))
        resid = cache[f"blocks.{tiny.info.n_layers - 1}.hook_resid_post"]
    assert float((resid @ c).abs().max()) < 1e-4 * float(resid.norm(dim=-1).max())


@torch.inference_mode()
def test_hooks_removed_after_error(tiny, direction):
    before = last_logits(tiny, PROMPTS[:1])
    with pytest.raises(RuntimeError, match="boom"):
        with applied(tiny, Combined((Ablation(direction), Addition(direction, 3, 4.0)))):
            assert not torch.allclose(last_logits(tiny, PROMPTS[:1]), before, atol=1e-3)
            raise RuntimeError("boom")
    assert torch.equal(last_logits(tiny, PROMPTS[:1]), before)


@torch.inference_mode()
def test_weight_orthogonalization_equals_hooks(tiny, direction):
    from workbench.interventions.export import plain_hf_model
    from workbench.interventions.weight_edit import edited

    plain = plain_hf_model(tiny)
    base = plain_last_logits(plain, tiny, PROMPTS)
    for intervention in (Ablation(direction), Addition(direction, 2, 3.0),
                         Combined((Ablation(direction), Addition(direction, 2, 3.0)))):
        with applied(tiny, intervention):
            hooked = last_logits(tiny, PROMPTS)
        with edited(plain, intervention):
            weights = plain_last_logits(plain, tiny, PROMPTS)
        assert (hooked - base).abs().max() > 0.1  # the intervention does something
        assert (hooked - weights).abs().max() < PARITY_ATOL
    assert torch.equal(plain_last_logits(plain, tiny, PROMPTS), base)  # edits restored on exit


def test_edited_export_loads_in_plain_transformers(tiny, tiny_run, tmp_path):
    """Export the λ=1 selection of a (tiny) run; plain transformers gives the hooked logits and generations."""
    from transformers import AutoModelForCausalLM

    from workbench.eval.generation import hooked_generate, plain_generate
    from workbench.interventions.directions import load_direction
    from workbench.interventions.export import export_edited
    from workbench.stages.select import selected_direction_file

    run = tiny_run
    out = export_edited(tiny, selected_direction_file(run, 1.0), tmp_path / "export")
    direction, meta = load_direction(run.file("directions/lam_1.0.safetensors"))
    choice = next(s for s in run.read_json("selection.json")["selections"] if s["lam"] == 1.0)
    readme = (out / "README.md").read_text()
    assert (f"λ = 1.0) taken at EOI position {choice['pos']}, layer {choice['layer']} of run\n`{meta['run']}` "
            "(`lam_1.0.safetensors`)") in readme  # the run that selected it (the fixture's copy's origin)
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.inference_mode():
        with applied(tiny, Ablation(direction)):
            hooked = last_logits(tiny, PROMPTS)
            hooked_text = hooked_generate(tiny, PROMPTS, 24, progress=False)
        exported = plain_last_logits(loaded, tiny, PROMPTS)
    assert (hooked - exported).abs().max() < PARITY_ATOL
    assert plain_generate(loaded, tiny.chat, PROMPTS, 24, progress=False) == hooked_text
    with pytest.raises(WorkbenchError, match="exists"):
        export_edited(tiny, selected_direction_file(run, 1.0), out)
    with pytest.raises(WorkbenchError, match="no selected direction at λ=0.3"):
        selected_direction_file(run, 0.3)
