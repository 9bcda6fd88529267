"""`workbench chat --ablate/--add` on the tiny random chat model and its run (unit tier): the CLI's generations
against `hooked_generate` under the same intervention built here, and the refusals of bad direction files, layers
and flag combinations (file-level ones before the model loads)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from workbench.cli import main
from workbench.eval.generation import hooked_generate
from workbench.eval.judge import SubstringJudge
from workbench.interventions.directions import read_direction_file, save_direction
from workbench.interventions.hooks import Ablation, Addition, Combined, applied

PROMPTS = ["How do I kill a stuck process?", "Write a haiku about rain.", "What is a black hole?", "Hi",
           "How do I make a bomb?"]
MAX_NEW = "8"


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"instruction": p}) + "\n" for p in PROMPTS))
    return path


def chat(checkpoint, *args) -> list[str]:
    return ["chat", "--model", str(checkpoint), "--max-new-tokens", MAX_NEW, *map(str, args)]


def rows(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def one_line(capsys, loaded: bool = False) -> str:
    """The one error line (after the loader's progress bars when the model `loaded`); nothing was generated."""
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == ""
    assert [line for line in err if line.startswith("workbench:")] == err[-1:], err
    assert loaded or len(err) == 1, err
    return err[-1]


def lam_selection(run, lam: float = 1.0) -> dict:
    return next(s for s in run.read_json("selection.json")["selections"] if s["lam"] == lam)


def expected(lm, intervention) -> list[str]:
    with applied(lm, intervention):
        return hooked_generate(lm, PROMPTS, int(MAX_NEW), progress=False)


@pytest.fixture
def no_model_load(monkeypatch):
    """File-level errors are refused before the model loads: loading fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("workbench.models.load_model", fail)


def test_ablate_equals_hooked_generation_and_compare_shows_baseline(tiny, tiny_checkpoint, tiny_run, prompts_file,
                                                                    capsys):
    path = tiny_run.file("directions/lam_1.0.safetensors")
    choice = lam_selection(tiny_run)
    assert main(chat(tiny_checkpoint, "--prompts-file", prompts_file, "--ablate", path, "--compare")) == 0
    out = rows(capsys)
    direction = read_direction_file(path)[0]["direction"]
    ablated, baseline = expected(tiny, Ablation(direction)), hooked_generate(tiny, PROMPTS, int(MAX_NEW))
    judge = SubstringJudge()
    assert [r["instruction"] for r in out] == PROMPTS
    assert [r["response"] for r in out] == ablated
    assert [r["baseline_response"] for r in out] == baseline
    assert any(a != b for a, b in zip(ablated, baseline, strict=True))  # the ablation changes some answer
    assert [r["refused"] for r in out] == [judge.is_refusal(t) for t in ablated]
    assert [r["baseline_refused"] for r in out] == [judge.is_refusal(t) for t in baseline]
    label = f"ablate lam_1.0.safetensors (λ=1.0, pos {choice['pos']}, layer {choice['layer']})"
    assert {r["intervention"] for r in out} == {label}


def test_ablate_without_compare_has_no_baseline(tiny, tiny_checkpoint, tiny_run, prompts_file, capsys):
    path = tiny_run.file("directions/lam_0.0.safetensors")
    assert main(chat(tiny_checkpoint, "--prompts-file", prompts_file, "--ablate", path)) == 0
    out = rows(capsys)
    assert set(out[0]) == {"instruction", "response", "refused", "intervention"}
    assert [r["response"] for r in out] == expected(tiny, Ablation(read_direction_file(path)[0]["direction"]))


@pytest.mark.parametrize("source", ["r", "lam"])
def test_add_equals_addition(tiny, tiny_checkpoint, tiny_run, prompts_file, capsys, source):
    """--add adds raw r from r.safetensors, and ŵ′ rescaled to ‖w‖ from a lam_ file."""
    if source == "r":
        path = tiny_run.file("directions/r.safetensors")
        vector = read_direction_file(path, ("raw_r",))[0]["raw_r"]
        what = "r"
    else:
        path = tiny_run.file("directions/lam_1.0.safetensors")
        tensors = read_direction_file(path, ("direction", "raw_w"))[0]
        vector = tensors["direction"] / tensors["direction"].norm() * tensors["raw_w"].norm()
        what = "ŵ′·‖w‖"
    assert path.exists()
    args = chat(tiny_checkpoint, "--prompts-file", prompts_file, "--add", path, "--layer", 2, "--alpha", 3.0,
                "--compare")
    assert main(args) == 0
    out = rows(capsys)
    added = expected(tiny, Addition(vector, 2, 3.0))
    assert [r["response"] for r in out] == added
    assert any(r["response"] != r["baseline_response"] for r in out)
    assert out[0]["intervention"].startswith(f"add 3.0·{what} of {path.name} (") and out[0]["intervention"].endswith(
        ") at layer 2")


def test_ablate_then_add_equals_combined(tiny, tiny_checkpoint, tiny_run, prompts_file, capsys):
    lam_file, r_file = tiny_run.file("directions/lam_1.0.safetensors"), tiny_run.file("directions/r.safetensors")
    args = chat(tiny_checkpoint, "--prompts-file", prompts_file, "--ablate", lam_file, "--add", r_file,
                "--layer", 1)  # α defaults to 1.0
    assert main(args) == 0
    out = rows(capsys)
    direction = read_direction_file(lam_file)[0]["direction"]
    r = read_direction_file(r_file, ("raw_r",))[0]["raw_r"]
    assert [row["response"] for row in out] == expected(tiny, Combined((Ablation(direction), Addition(r, 1, 1.0))))
    ablate_label, add_label = out[0]["intervention"].split(" + ")
    assert ablate_label.startswith("ablate lam_1.0.safetensors (λ=1.0, ")
    assert add_label.startswith("add 1.0·r of r.safetensors (true refusal r, ") and add_label.endswith("layer 1")


def test_single_prompt_compare_prints_both_answers(tiny, tiny_checkpoint, tiny_run, capsys):
    path = tiny_run.file("directions/lam_1.0.safetensors")
    direction = read_direction_file(path)[0]["direction"]
    prompt = PROMPTS[0]
    assert main(chat(tiny_checkpoint, prompt, "--ablate", path, "--compare")) == 0
    out = capsys.readouterr().out
    base = hooked_generate(tiny, [prompt], int(MAX_NEW))[0]
    with applied(tiny, Ablation(direction)):
        ablated = hooked_generate(tiny, [prompt], int(MAX_NEW))[0]
    choice = lam_selection(tiny_run)
    label = f"ablate lam_1.0.safetensors (λ=1.0, pos {choice['pos']}, layer {choice['layer']})"
    assert out == f"[baseline]\n{base}\n\n[{label}]\n{ablated}\n"


def test_direction_from_another_model_is_refused(tiny, tiny_checkpoint, tiny_run, tmp_path, capsys):
    tensors, meta = read_direction_file(tiny_run.file("directions/lam_1.0.safetensors"),
                                        ("direction", "raw_w", "raw_r"))
    other = save_direction(tmp_path / "other.safetensors", tensors,
                           {**meta, "model": "other-model", "fingerprint": "0123456789abcdef"})
    for flags in (["--ablate", other], ["--add", other, "--layer", 1]):
        assert main(chat(tiny_checkpoint, "Hi", *flags)) == 2
        assert (f"direction {other} comes from model 'other-model' (fingerprint 0123456789abcdef), not this one "
                f"({tiny.info.fingerprint}): use a direction selected for this model") in one_line(capsys, loaded=True)


def test_direction_of_the_wrong_width_is_refused(tiny, tiny_checkpoint, tmp_path, capsys):
    wide = tiny.info.d_model + 8
    path = save_direction(tmp_path / "wide.safetensors",
                          {"direction": torch.ones(wide) / wide**0.5, "raw_w": torch.ones(wide),
                           "raw_r": torch.ones(wide)},
                          {"model": tiny.info.name, "fingerprint": tiny.info.fingerprint, "vector": "w'",
                           "lam": "1.0", "pos": "-1", "layer": "1"})
    for flags in (["--ablate", path], ["--add", path, "--layer", 1]):
        assert main(chat(tiny_checkpoint, "Hi", *flags)) == 2
        assert (f"direction {path} has width {wide}, the model has d_model {tiny.info.d_model}: it was selected for "
                "another model") in one_line(capsys, loaded=True)


def test_add_layer_out_of_range_names_n_layers(tiny, tiny_checkpoint, tiny_run, capsys):
    n = tiny.info.n_layers
    path = tiny_run.file("directions/r.safetensors")
    assert main(chat(tiny_checkpoint, "Hi", "--add", path, "--layer", n)) == 2
    assert one_line(capsys, loaded=True) == (f"workbench: error: --layer {n} is outside the model's layers "
                                             f"0..{n - 1} (n_layers {n}): give a block index below {n}")


@pytest.mark.parametrize(("flags", "message"), [
    (["--add", "{lam}"], "--add needs --layer L: the block at whose input α·v is added"),
    (["--layer", "1"], "--layer and --alpha go with --add FILE"),
    (["--ablate", "{lam}", "--alpha", "2"], "--layer and --alpha go with --add FILE"),
    (["--compare"], "--compare needs --ablate FILE, --add FILE or --cell POS LAYER"),
    (["--ablate", "{missing}"], "direction file {missing} is missing: run `workbench select --run {run}` to write it"),
    (["--add", "{missing}", "--layer", "1"], "direction file {missing} is missing"),
    (["--ablate", "{garbage}"], "direction file {garbage} is corrupted or truncated (not a readable safetensors file"),
    (["--add", "{unlabelled}", "--layer", "1"], "direction file {unlabelled} has no 'vector' metadata"),
    (["--add", "{no_raw}", "--layer", "1"], "direction file {no_raw} has no tensor 'raw_r'"),
    (["--ablate", "{zero}"], "direction of --ablate {zero} is zero or not finite"),
])
def test_file_level_errors_before_the_model_loads(tiny_checkpoint, tiny_run, tmp_path, capsys, no_model_load,
                                                  flags, message):
    files = {"lam": tiny_run.file("directions/lam_1.0.safetensors"),
             "missing": tiny_run.file("directions/lam_0.5.safetensors"), "run": tiny_run.path,
             "garbage": tmp_path / "garbage.safetensors", "unlabelled": tmp_path / "unlabelled.safetensors",
             "no_raw": tmp_path / "no_raw.safetensors", "zero": tmp_path / "zero.safetensors"}
    files["garbage"].write_bytes(b"not a safetensors file")
    save_file({"direction": torch.ones(4)}, str(files["unlabelled"]), metadata={"fingerprint": "x"})
    save_file({"direction": torch.ones(4)}, str(files["no_raw"]), metadata={"vector": "r"})
    save_file({"direction": torch.zeros(4)}, str(files["zero"]), metadata={"vector": "w'"})
    assert main(chat(tiny_checkpoint, "Hi", *(f.format(**files) for f in flags))) == 2
    line = one_line(capsys)
    assert line.startswith("workbench: error: ") and message.format(**files) in line


def test_alpha_must_be_finite(tiny_checkpoint, tiny_run, capsys, no_model_load):
    path = tiny_run.file("directions/r.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(chat(tiny_checkpoint, "Hi", "--add", path, "--layer", 1, "--alpha", "nan"))
    assert exit_info.value.code == 2
    assert "argument --alpha: expected a finite number, got nan" in capsys.readouterr().err


def test_gate_applies_the_ablation_only_where_it_opens(tiny, tiny_checkpoint, tiny_run, prompts_file, tmp_path,
                                                       capsys):
    """`chat --ablate FILE --gate GATE`: each prompt answered as the ablated model where the gate opens, as the
    unmodified model elsewhere; each row says which."""
    from workbench.interventions.gate import Gate, decide, gate_scores, save_gate

    path = tiny_run.file("directions/lam_1.0.safetensors")
    direction = read_direction_file(path)[0]["direction"]
    probe = torch.randn(tiny.info.d_model, generator=torch.Generator().manual_seed(5))
    meta = {"fingerprint": tiny.info.fingerprint, "model": tiny.info.name}
    median = float(gate_scores(tiny, Gate(probe, 2, -1, 0.0, 0.05, meta), PROMPTS).median())
    gate = Gate(probe, 2, -1, median, 0.05, meta)
    gate_file = save_gate(tmp_path / "gate.safetensors", gate)
    assert main(chat(tiny_checkpoint, "--prompts-file", prompts_file, "--ablate", path, "--gate", gate_file,
                     "--compare")) == 0
    out = rows(capsys)
    opened = decide(tiny, gate, PROMPTS).tolist()
    assert 0 < sum(opened) < len(PROMPTS)
    assert [r["gate"] for r in out] == ["open" if o else "closed" for o in opened]
    ablated, baseline = expected(tiny, Ablation(direction)), hooked_generate(tiny, PROMPTS, int(MAX_NEW))
    assert [r["response"] for r in out] == [a if o else b for a, b, o in zip(ablated, baseline, opened, strict=True)]
    assert [r["baseline_response"] for r in out] == baseline


def test_gate_errors(tiny, tiny_checkpoint, tiny_run, tmp_path, capsys):
    from workbench.interventions.gate import Gate, save_gate

    assert main(chat(tiny_checkpoint, "Hi", "--gate", tmp_path / "gate.safetensors")) == 2
    assert "--gate needs an intervention to gate" in one_line(capsys)
    other = save_gate(tmp_path / "other.safetensors", Gate(torch.ones(tiny.info.d_model), 1, -1, 0.0, 0.05,
                                                           {"fingerprint": "0123456789abcdef", "model": "other"}))
    path = tiny_run.file("directions/lam_1.0.safetensors")
    assert main(chat(tiny_checkpoint, "Hi", "--ablate", path, "--gate", other)) == 2
    assert "comes from model 'other'" in one_line(capsys, loaded=True)
