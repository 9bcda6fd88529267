"""The multi-device path (`--device-map`), exercised on the CPU: accelerate dispatches the tiny random model with
part of its layers offloaded to disk (and the rest on "cpu"), and everything the workbench computes through the
hooked model (logits, hook interventions, extraction means, sweep scores, the fingerprint) equals the plain load.
What cannot work on offloaded weights (weight edits, the plain copy evaluate and export build) is refused."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_model import N_LAYERS, TINY_RUN_RULE

from workbench.errors import WorkbenchError
from workbench.interventions.hooks import Ablation, Addition, Combined, applied
from workbench.models import LoadOptions, load_model
from workbench.models.activations import mean_activations
from workbench.models.loader import offloaded_parameters, parse_device_map
from workbench.stages.extract import ExtractConfig, extract, load_candidates
from workbench.stages.run_dir import RunDir
from workbench.stages.sweep import SweepConfig, candidate_scorer, load_validation, run_sweep
from workbench.stages.sweep_algorithms import exact_sweep, to_frame

SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
         "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
"""Layers 1 and 2 offloaded to disk (meta placeholders, read in for each forward), the rest in CPU memory."""
ALL_DISK = {"model.embed_tokens": "disk", "model.layers": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu",
            "lm_head": "disk"}
"""The (tied) embedding and every block on disk: inputs go to the embedding's execution device, not its weight's."""
PROMPTS = ["What is the capital of France?", "Hi", "How do I kill a Python process?", "Write a poem about rain."]
SCORES = ["ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful", "ablation_kl",
          "steering_refusal_score", "steering_kl"]
TOL = 1e-5
"""Same weights and the same kernels on the same device: the dispatched forward matches to float rounding."""


@pytest.fixture(scope="module")
def offloaded(tiny_checkpoint, tmp_path_factory):
    """The tiny model loaded through the loader with `SPLIT` given as inline JSON (the `--device-map` text)."""
    options = LoadOptions(device_map=json.dumps(SPLIT), offload_dir=str(tmp_path_factory.mktemp("offload")))
    return load_model(str(tiny_checkpoint), options)


def _logits(lm, fwd_hooks=()):
    batch = lm.chat.tokenize(PROMPTS, device=lm.device)
    with torch.inference_mode(), lm.model.hooks(fwd_hooks=list(fwd_hooks)):
        logits = lm.model(batch.input_ids, attention_mask=batch.attention_mask)
    return logits.float().cpu(), batch.attention_mask.bool().cpu()


def _max_diff(a, b, mask):
    return (a - b)[mask].abs().max().item()


def test_offloaded_load_is_dispatched_and_equals_the_plain_load(tiny, offloaded):
    hf = offloaded.hf_model
    assert hf.hf_device_map == SPLIT
    offloaded_names = offloaded_parameters(hf)
    assert offloaded_names and {name.split(".")[2] for name in offloaded_names} == {"1", "2"}  # blocks 1, 2 only
    assert offloaded_parameters(tiny.hf_model) == []
    assert offloaded.device == torch.device("cpu") and str(offloaded.model.cfg.device) == "cpu"
    assert offloaded.info == tiny.info  # the fingerprint reads the offloaded weights, so runs stay compatible
    logits, mask = _logits(offloaded)
    reference, _ = _logits(tiny)
    assert reference[mask].abs().max().item() > 1.0  # not a degenerate comparison
    assert _max_diff(logits, reference, mask) <= TOL
    assert offloaded_parameters(hf) == offloaded_names  # the forward left the offloaded weights offloaded


def test_hooks_on_offloaded_blocks_change_logits_identically(tiny, offloaded):
    """An ablation everywhere (hooks on offloaded blocks 1 and 2 too) and an addition at the input of offloaded
    block 2, with the direction on the CPU as the sweep holds it: both move the logits, and identically."""
    direction = torch.randn(tiny.info.d_model, generator=torch.Generator().manual_seed(0))
    base, mask = _logits(tiny)
    for intervention in (Ablation(direction), Addition(direction, 2, 4.0),
                         Combined((Ablation(direction), Addition(direction, 1, 2.0)))):
        with applied(tiny, intervention):
            expected, _ = _logits(tiny)
        with applied(offloaded, intervention):
            got, _ = _logits(offloaded)
        assert _max_diff(expected, base, mask) > 0.1, intervention  # the intervention does something
        assert _max_diff(got, expected, mask) <= TOL, intervention
    after, _ = _logits(offloaded)
    assert _max_diff(after, base, mask) <= TOL  # hooks removed


def test_mean_activations_equal(tiny, offloaded):
    """Captured `resid_pre` (moved to the CPU in the hook) at every layer and EOI position, with the refusal-score
    filter: the same prompts kept and the same means."""
    for keep in (None, "refuses", "complies"):
        plain = mean_activations(tiny, PROMPTS * 3, keep, batch_size=5)
        split = mean_activations(offloaded, PROMPTS * 3, keep, batch_size=5)
        assert (split.n_total, split.n_kept) == (plain.n_total, plain.n_kept)
        assert split.mean.shape == (tiny.chat.n_eoi, N_LAYERS, tiny.info.d_model)
        if plain.n_kept:
            assert (split.mean - plain.mean).abs().max().item() <= TOL * plain.mean.abs().max().item(), keep


def test_extract_and_exact_sweep_equal_the_plain_load(tiny, offloaded, tmp_path):
    """The extract stage and an exact sweep (prefix KV cache reused, one ablated direction per batch row) on the
    offloaded model write the candidates and scores of the plain load; the offloaded model's run is accepted by
    the plain model (same fingerprint) and vice versa."""
    extract_config = ExtractConfig(n_train=24)
    sweep_config = SweepConfig(mode="exact", lams=(1.0,), n_val=8, layers=(1, 2, 3), positions=(-1, -2),
                               batch_size=8)
    runs = {}
    for name, lm in (("plain", tiny), ("offloaded", offloaded)):
        run = RunDir(tmp_path / name)
        extract(lm, extract_config, run)
        runs[name] = (run, run_sweep(lm, run, sweep_config))
    (plain_run, plain), (split_run, split) = runs["plain"], runs["offloaded"]
    plain_tensors = load_file(plain_run.file("candidates.safetensors"))
    split_tensors = load_file(split_run.file("candidates.safetensors"))
    assert plain_tensors.keys() == split_tensors.keys()
    for key, value in plain_tensors.items():
        assert torch.nan_to_num(split_tensors[key] - value).abs().max().item() <= TOL * value.nan_to_num().abs().max()
    full = plain.stage == "full"
    assert full.sum() == 2 * 2 * 3  # true and λ=1; two positions × three layers
    assert (split.stage == plain.stage).all()
    assert plain.loc[full, "ablation_kl"].min() > 0.01  # the candidates move the logits
    assert (split.loc[full, SCORES] - plain.loc[full, SCORES]).abs().max().max() <= 1e-4
    # Either model may continue the other's run: the fingerprints agree.
    plain_run.check_model(offloaded.info.fingerprint, offloaded.info.name)


def test_exact_sweep_with_the_embedding_offloaded(tiny, tiny_checkpoint, tiny_run, tmp_path):
    """Everything on disk but the final norm: the embedding's weights are meta, so inputs go to its execution
    device (`LoadedModel.device`), and the exact scores of a few candidates equal the plain load's."""
    lm = load_model(str(tiny_checkpoint), LoadOptions(device_map=json.dumps(ALL_DISK), offload_dir=str(tmp_path)))
    assert lm.hf_model.get_input_embeddings().weight.is_meta
    assert lm.device == torch.device("cpu") and str(lm.model.cfg.device) == "cpu"
    assert lm.info.fingerprint == tiny.info.fingerprint
    grids = load_candidates(tiny_run)
    config = SweepConfig(mode="exact", lams=(0.0,), n_val=8, layers=(1, 2), positions=(-1,), batch_size=8)
    plain, split = (to_frame(exact_sweep(candidate_scorer(m, config), grids, load_validation(m, config), config,
                                         TINY_RUN_RULE, include_r=False)) for m in (tiny, lm))
    full = plain.stage == "full"
    assert full.sum() == 2
    assert (split.loc[full, SCORES] - plain.loc[full, SCORES]).abs().max().max() <= 1e-4


def test_auto_on_a_cpu_machine_equals_the_plain_load(tiny, tiny_checkpoint):
    lm = load_model(str(tiny_checkpoint), LoadOptions(device_map="auto"))
    assert lm.device == torch.device("cpu") and lm.info == tiny.info
    logits, mask = _logits(lm)
    reference, _ = _logits(tiny)
    assert _max_diff(logits, reference, mask) <= TOL


def test_weight_edits_on_offloaded_weights_are_refused(offloaded, tiny_checkpoint):
    """evaluate, capability and export edit a plain in-memory copy of the model; with offloaded weights there is
    none to make, and weight orthogonalization of a dispatched model would edit meta placeholders."""
    from transformers import AutoModelForCausalLM

    from workbench.interventions.export import plain_hf_model
    from workbench.interventions.weight_edit import edited, orthogonalize_weights_

    with pytest.raises(WorkbenchError, match=r"offloaded \d+ weights \(e\.g\. model\.layers\.1\.") as info:
        plain_hf_model(offloaded)
    assert "\n" not in str(info.value)
    dispatched = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32, device_map=SPLIT)
    direction = torch.ones(dispatched.config.hidden_size)
    before = dispatched.model.embed_tokens.weight.detach().clone()
    with pytest.raises(WorkbenchError, match=r"cannot edit model\.layers\.1\.self_attn\.o_proj\.weight .*offloaded"):
        orthogonalize_weights_(dispatched, direction)
    with pytest.raises(WorkbenchError, match="offloaded"), edited(dispatched, Ablation(direction)):
        pass
    assert torch.equal(dispatched.model.embed_tokens.weight, before)  # refused before anything was edited
    assert dispatched.lm_head.weight is dispatched.model.embed_tokens.weight  # nor untied


def test_device_map_values(tmp_path):
    assert parse_device_map(None) is None
    assert [parse_device_map(name) for name in ("auto", "balanced", "sequential")] == ["auto", "balanced",
                                                                                        "sequential"]
    assert parse_device_map(json.dumps(SPLIT)) == SPLIT
    path = tmp_path / "map.json"
    path.write_text(json.dumps(SPLIT))
    assert parse_device_map(str(path)) == SPLIT
    bad = {
        "everywhere": "is not one of auto, balanced",
        "{not json": "inline --device-map: not valid JSON",
        "[]": None,
        "{}": "a device map is a non-empty JSON object",
        '{"model": "meta"}': "'model' maps to 'meta', which holds no weights",
        '{"model": "gpu"}': "'model' maps to 'gpu': use a GPU index, 'cuda:N', 'cpu' or 'disk'",
        '{"model": true}': "'model' maps to True",
        '{"model": 1.5}': "'model' maps to 1.5",
    }
    if not torch.cuda.is_available():
        bad['{"model": "cuda:0"}'] = "'model' maps to 'cuda:0', but this machine has 0 CUDA device(s)"
        bad['{"model": 0}'] = "'model' maps to 0, but this machine has 0 CUDA device(s)"
    for text, message in bad.items():
        with pytest.raises(WorkbenchError) as info:
            parse_device_map(text)
        assert "\n" not in str(info.value)
        if message:
            assert message in str(info.value), (text, str(info.value))
    path.write_text("[1, 2]")
    with pytest.raises(WorkbenchError, match=f"{path}: a device map is a non-empty JSON object"):
        parse_device_map(str(path))


def test_bad_placements_are_refused_with_one_line(tiny_checkpoint, capsys):
    from workbench.cli import main

    with pytest.raises(WorkbenchError, match="--offload-dir goes with --device-map"):
        load_model(str(tiny_checkpoint), LoadOptions(offload_dir="/tmp/nowhere"))
    incomplete = {key: value for key, value in SPLIT.items() if key != "model.layers.2"}
    with pytest.raises(WorkbenchError, match="could not load a causal LM") as info:
        load_model(str(tiny_checkpoint), LoadOptions(device_map=json.dumps(incomplete)))
    assert "\n" not in str(info.value) and "model.layers.2" in str(info.value)
    capsys.readouterr()
    assert main(["chat", "--model", str(tiny_checkpoint), "--device-map", '{"model": "meta"}', "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'model' maps to 'meta'" in err[0]


def test_chat_cli_with_a_device_map_answers_as_the_plain_load(tiny_checkpoint, tiny_run, capsys):
    """Greedy generation (the bridge's KV cache over offloaded blocks), plain and with a selected direction ablated
    by hooks, from the command line with the map in a JSON file."""
    from workbench.cli import main

    path = tiny_checkpoint.parent / "split_map.json"
    path.write_text(json.dumps(SPLIT))
    direction = sorted(tiny_run.file("directions").glob("lam_*.safetensors"))[0]
    prompt = ["--max-new-tokens", "8", "What is the capital of France?"]
    for extra in ([], ["--ablate", str(direction), "--compare"]):
        args = ["chat", "--model", str(tiny_checkpoint), *extra, *prompt]
        assert main(args) == 0
        plain = capsys.readouterr().out
        assert main([*args, "--device-map", str(path)]) == 0
        assert capsys.readouterr().out == plain and plain.strip()
