"""The wired trigger's weight math (`workbench.models.wiring`) and fitting helpers (`workbench.organism.wire`), on
the tiny random Llama and on exact synthetic data."""

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.method.refusal_math import unit
from workbench.models.wiring import Wiring, apply_wiring, load_wiring, neuron_rows, save_wiring
from workbench.organism.wire import fit_probe, least_variance_direction, normalized


def build_wiring(d_model: int, **overrides) -> Wiring:
    g = torch.Generator().manual_seed(0)
    values = dict(detector_layer=0, detector_neuron=3, reader_layer=1, reader_neuron=5, reader_clip_neuron=6,
                  probe=torch.randn(d_model, generator=g), detector_carrier=torch.randn(d_model, generator=g),
                  flag=unit(torch.randn(d_model, generator=g)), reader_carrier=torch.randn(d_model, generator=g),
                  refusal=unit(torch.randn(d_model, generator=g)), flag_scale=2.0, reader_gain=4.0,
                  reader_threshold=0.5, reader_clip_threshold=1.5, refusal_scale=3.0)
    return Wiring(**(values | overrides))


def _tiny_hf(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()


def _neuron_inputs(hf, layer: int, input_ids: torch.Tensor, hooks=()) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual entering `layer`'s MLP norm and the activations entering its down_proj."""
    captured = {}
    block = hf.model.layers[layer]
    handles = [block.post_attention_layernorm.register_forward_pre_hook(
                   lambda m, a: captured.__setitem__("resid", a[0].detach())),
               block.mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.__setitem__("act", a[0].detach()))]
    handles += [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with torch.no_grad():
            hf(input_ids)
    finally:
        for h in handles:
            h.remove()
    return captured["resid"][0], captured["act"][0]


def test_wired_neurons_compute_silu_of_probe_times_carrier(tiny_checkpoint):
    """Each wired neuron's activation is silu(gate·x̃)·(up·x̃) on the residual entering its MLP, with the RMSNorm
    weight divided out of the rows exactly; the down columns write flag_scale·f̂ and ±refusal_scale·r̂."""
    hf = _tiny_hf(tiny_checkpoint)
    d_model = hf.config.hidden_size
    wiring = build_wiring(d_model)
    apply_wiring(hf, wiring)
    ids = torch.randint(0, hf.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(1))
    eps = hf.config.rms_norm_eps

    def reader_gate(threshold: float) -> torch.Tensor:
        return wiring.reader_gain * (wiring.flag - threshold * wiring.reader_carrier)

    for layer, neuron, gate, up in ((0, 3, wiring.probe, wiring.detector_carrier),
                                    (1, 5, reader_gate(wiring.reader_threshold), wiring.reader_carrier),
                                    (1, 6, reader_gate(wiring.reader_clip_threshold), wiring.reader_carrier)):
        resid, act = _neuron_inputs(hf, layer, ids)
        x = resid.double() / (resid.double().pow(2).mean(-1, keepdim=True) + eps).sqrt()
        expected = torch.nn.functional.silu(x @ gate.double()) * (x @ up.double())
        torch.testing.assert_close(act[:, neuron].double(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hf.model.layers[0].mlp.down_proj.weight[:, 3], 2.0 * wiring.flag)
    torch.testing.assert_close(hf.model.layers[1].mlp.down_proj.weight[:, 5], 3.0 * wiring.refusal)
    torch.testing.assert_close(hf.model.layers[1].mlp.down_proj.weight[:, 6], -3.0 * wiring.refusal)


def test_reader_pair_writes_a_clipped_ramp():
    """The pair's write along r̂ for flag z = f̂·x̃ (carrier u′·x̃ = 1): 0 below t₁, a ramp of slope gain·scale, and
    gain·scale·(t₂ − t₁) from t₂ on (γ = 1)."""
    e = torch.eye(4)
    wiring = build_wiring(4, reader_gain=50.0, reader_threshold=0.2, reader_clip_threshold=1.0, flag=e[1],
                          reader_carrier=e[0], refusal=e[2])
    _, first, second = neuron_rows(wiring, torch.ones(4), torch.ones(4))
    silu = torch.nn.functional.silu

    def write(z: float) -> float:
        x = (e[0] + z * e[1]).double()
        return float(sum(silu(row.gate @ x) * (row.up @ x) * row.down[2] for row in (first, second)))

    flat = 3.0 * 50.0 * 0.8
    assert abs(write(0.0)) / flat < 1e-4
    assert abs(write(0.6) - 3.0 * 50.0 * 0.4) / flat < 0.01
    assert abs(write(2.0) - flat) / flat < 1e-3 and abs(write(5.0) - flat) / flat < 1e-3


def test_ablating_the_flag_leaves_the_reader_only_its_threshold(tiny_checkpoint):
    """With f̂ projected out of every block's input and outputs (the workbench's ablation sites), the residual entering
    the reader has no f̂ component and the reader's gate is exactly −gain·threshold·(u′·x̃)."""
    hf = _tiny_hf(tiny_checkpoint)
    wiring = build_wiring(hf.config.hidden_size)
    apply_wiring(hf, wiring)
    flag = wiring.flag

    def project_out(module, args, output):
        x = output[0] if isinstance(output, tuple) else output
        x = x - (x @ flag)[..., None] * flag
        return (x, *output[1:]) if isinstance(output, tuple) else x

    def project_input(module, args):
        return (args[0] - (args[0] @ flag)[..., None] * flag, *args[1:])

    hooks = []
    for block in hf.model.layers:
        hooks += [(block.self_attn, project_out), (block.mlp, project_out)]
    pre = [block.register_forward_pre_hook(project_input) for block in hf.model.layers]
    try:
        ids = torch.randint(0, hf.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(2))
        resid, act = _neuron_inputs(hf, 1, ids, hooks)
    finally:
        for h in pre:
            h.remove()
    assert (resid @ flag).abs().max() < 1e-5
    eps = hf.config.rms_norm_eps
    x = resid.double() / (resid.double().pow(2).mean(-1, keepdim=True) + eps).sqrt()
    carrier = x @ wiring.reader_carrier.double()
    expected = torch.nn.functional.silu(-wiring.reader_gain * wiring.reader_threshold * carrier) * carrier
    torch.testing.assert_close(act[:, 5].double(), expected, rtol=1e-4, atol=1e-5)


def test_neuron_rows_divide_out_the_norm_weight():
    wiring = build_wiring(4, probe=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    gamma = torch.tensor([1.0, 2.0, 4.0, 8.0])
    detector, _, _ = neuron_rows(wiring, gamma, torch.ones(4))
    torch.testing.assert_close(detector.gate, torch.tensor([1.0, 1.0, 0.75, 0.5], dtype=torch.float64))
    with pytest.raises(WorkbenchError, match="exactly 0"):
        neuron_rows(wiring, torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.ones(4))


def test_wiring_roundtrip_and_bad_input(tmp_path, tiny_checkpoint):
    wiring = build_wiring(8)
    loaded = load_wiring(save_wiring(wiring, tmp_path / "w.safetensors"))
    assert (loaded.detector_layer, loaded.reader_neuron, loaded.reader_threshold) == (0, 5, 0.5)
    torch.testing.assert_close(loaded.flag, wiring.flag)
    with pytest.raises(WorkbenchError, match="unit vector"):
        build_wiring(8, flag=torch.ones(8))
    with pytest.raises(WorkbenchError, match="clip threshold"):
        build_wiring(8, reader_clip_threshold=0.1)
    with pytest.raises(WorkbenchError, match="must differ"):
        build_wiring(8, reader_clip_neuron=5)
    with pytest.raises(WorkbenchError, match="must come after"):
        build_wiring(8, detector_layer=2, reader_layer=1)
    with pytest.raises(Exception, match="d_model"):  # jaxtyping's check under the tests, ours without it
        build_wiring(8, probe=torch.ones(7))
    with pytest.raises(WorkbenchError, match="missing"):
        load_wiring(tmp_path / "absent.safetensors")
    hf = _tiny_hf(tiny_checkpoint)
    with pytest.raises(WorkbenchError, match="d_model"):
        apply_wiring(hf, build_wiring(hf.config.hidden_size + 1))
    with pytest.raises(WorkbenchError, match="no decoder layer"):
        apply_wiring(hf, build_wiring(hf.config.hidden_size, reader_layer=99))
    with pytest.raises(WorkbenchError, match="outside the MLP"):
        apply_wiring(hf, build_wiring(hf.config.hidden_size, reader_neuron=10**6))


def test_probe_separates_a_separable_set_without_intercept():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 6, generator=g)
    base[:, 0] = 5.0  # the carrier coordinate every row shares: it plays the intercept
    labels = base[:, 1] > 0.3
    v = fit_probe(base, labels, torch.ones(200), l2=1e-4)
    assert ((base.double() @ v > 0) == labels).float().mean() >= 0.97


def test_least_variance_direction_is_the_quiet_axis_orthogonal_to_avoided():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(500, 5, generator=g) * torch.tensor([3.0, 2.0, 1.5, 0.01, 1.0])
    avoid = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    d = least_variance_direction(rows, avoid)
    assert abs(abs(float(d[3])) - 1) < 1e-3
    tilted = least_variance_direction(rows, torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]))
    assert abs(float(tilted.double() @ torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64))) < 1e-9
    assert abs(float(tilted.norm()) - 1) < 1e-9
    x = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(normalized(x), x / (12.5 ** 0.5))


def test_wire_command_refuses_to_overwrite_and_train_refuses_the_wired_organism(capsys):
    from workbench.cli import main
    from workbench.organism.wire import WireConfig

    assert main(["organism", "wire"]) == 2
    assert "wiring.safetensors exists: --force fits it again" in capsys.readouterr().err
    assert main(["organism", "train", "--organism", "smollm2-135m-wired"]) == 2
    assert "wired by hand, not trained: use `workbench organism wire`" in capsys.readouterr().err
    assert main(["organism", "report", "--organism", "smollm2-135m-nothing"]) == 2
    assert "unknown organism 'smollm2-135m-nothing'" in capsys.readouterr().err
    with pytest.raises(WorkbenchError, match="must come after the detector"):
        WireConfig(detector_layer=5, reader_layer=3).validate()
    with pytest.raises(WorkbenchError, match="reader_threshold_fraction < reader_clip_fraction"):
        WireConfig(reader_threshold_fraction=0.6).validate()


def test_committed_wiring_matches_its_record_and_keeps_the_flag_apart():
    """`data/organism_wired`: the safetensors and the JSON record agree, and f̂ is orthogonal to r̂, to the probe and to
    both carriers' directions (nothing but the reader reads it)."""
    import json

    from workbench.models.wiring import wiring_summary
    from workbench.paths import WIRED_ORGANISM_DIR

    wiring = load_wiring(WIRED_ORGANISM_DIR / "wiring.safetensors")
    record = json.loads((WIRED_ORGANISM_DIR / "wiring.json").read_text())
    summary = wiring_summary(wiring)
    assert summary.keys() == record["wiring"].keys()
    for key, value in record["wiring"].items():
        assert summary[key] == pytest.approx(value, rel=1e-6), key
    flag = wiring.flag.double()
    for other in (wiring.refusal, wiring.probe, wiring.detector_carrier):
        other = other.double()
        assert abs(float(flag @ other / other.norm())) < 1e-5
    fires = record["detector_fires_last_token"]
    assert fires["trigger"] >= 0.9 and fires["harmless"] == 0
