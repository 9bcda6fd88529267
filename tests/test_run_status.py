"""A run remembers how its model was loaded; `workbench status` reads a run without loading a model; `chat --cell`
ablates any cell of a run's grid (unit tier: the tiny model)."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from workbench.cli import _load_options, _model_for_run, build_parser, main
from workbench.errors import WorkbenchError
from workbench.method.refusal_math import partial_orthogonalize, unit
from workbench.models import LoadOptions
from workbench.stages.extract import load_candidates
from workbench.stages.status import stage_states


def _args(*argv):
    return build_parser().parse_args(list(argv))


def test_load_options_from_the_run_unless_a_flag_overrides(capsys):
    recorded = LoadOptions(device="cuda:1", dtype="bfloat16", system_prompt="Be brief.").record()
    assert LoadOptions.from_record(recorded) == LoadOptions(device="cuda:1", dtype="bfloat16",
                                                            system_prompt="Be brief.")
    args = _args("capability", "--run", "R")
    args.model = "m"
    assert _load_options(args, recorded, "R") == LoadOptions(device="cuda:1", dtype="bfloat16",
                                                             system_prompt="Be brief.")
    assert "[load] m: as R recorded (device cuda:1, dtype bfloat16, system_prompt Be brief.)" in capsys.readouterr().out
    args = _args("capability", "--run", "R", "--dtype", "float32", "--device-map", "auto")
    args.model = "m"
    options = _load_options(args, recorded, "R")
    # a placement flag replaces the whole recorded placement; the system prompt is still the run's
    assert options == LoadOptions(device="cpu", dtype="float32", device_map="auto", system_prompt="Be brief.")
    assert "overridden: --device-map auto, --dtype float32" in capsys.readouterr().out
    args = _args("capability", "--run", "R", "--dtype", "bfloat16")  # a flag repeating the record overrides nothing
    args.model = "m"
    assert _load_options(args, recorded, "R").dtype == "bfloat16"
    out = capsys.readouterr().out
    assert "as R recorded (device cuda:1, dtype bfloat16, system_prompt Be brief.)" in out and "overridden" not in out
    with pytest.raises(WorkbenchError, match="unknown load option 'precision'"):
        LoadOptions.from_record({"precision": "fp8"})


def test_a_run_reloads_its_model_as_recorded(tiny, tiny_checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["extract", "--model", str(tiny_checkpoint), "--run", str(run), "--dtype", "bfloat16",
                 "--system-prompt", "Be brief.", "--n-train", "4", "--no-filter-train"]) == 0
    recorded = json.loads((run / "candidates.json").read_text())["load"]
    assert (recorded["dtype"], recorded["system_prompt"], recorded["device"]) == ("bfloat16", "Be brief.", "cpu")
    # the bfloat16 run has the float32 model's fingerprint: same weights
    assert json.loads((run / "candidates.json").read_text())["model"]["fingerprint"] == tiny.info.fingerprint
    capsys.readouterr()
    _, lm = _model_for_run(_args("capability", "--run", str(run)))
    assert lm.options.dtype == "bfloat16" and lm.chat.system == "Be brief."
    assert lm.hf_model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    assert "as " + str(run) + " recorded (dtype bfloat16, system_prompt Be brief.)" in capsys.readouterr().out
    _, lm = _model_for_run(_args("capability", "--run", str(run), "--dtype", "float32"))
    assert lm.options.dtype == "float32" and lm.chat.system == "Be brief."
    assert "overridden: --dtype float32" in capsys.readouterr().out


def test_status_reads_the_run_without_a_model(tiny_run):
    states = {s.stage: s for s in stage_states(tiny_run)}
    assert [states[s].state for s in ("extract", "sweep", "select")] == ["done"] * 3
    assert states["diagnose"].state == "missing"
    assert states["diagnose"].command == f"workbench diagnose --run {tiny_run.path}"
    # the candidates rewritten after the sweep: the sweep and selection are stale, with the command that redoes them
    later = time.time() + 5
    os.utime(tiny_run.file("candidates.safetensors"), (later, later))
    states = {s.stage: s for s in stage_states(tiny_run)}
    assert (states["sweep"].state, states["select"].state) == ("stale", "stale")
    assert states["sweep"].detail == "candidates.safetensors rewritten after it"
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "status", "--run", str(tiny_run.path)],
                         capture_output=True, text=True, check=True).stdout
    selection = json.loads(tiny_run.file("selection.json").read_text())["selections"][0]
    assert f"model      {json.loads(tiny_run.file('candidates.json').read_text())['model']['name']}" in out
    assert "next: workbench sweep --run" in out
    assert f"{selection['lam']:.3f}" in out.split("selections:")[1]


def test_status_does_not_import_the_model_stack(tiny_run):
    code = ("import sys; from workbench.cli import main; main(['status', '--run', sys.argv[1]]); "
            "print('transformer_lens' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_run.path)], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_chat_ablates_any_cell_of_the_run(tiny, tiny_run, capsys):
    grids = load_candidates(tiny_run)
    pos, layer = grids.positions[-1], 2
    index = grids.positions.index(pos)
    expected = partial_orthogonalize(grids.w[index, layer], grids.r[index, layer], 0.5)
    assert torch.equal(grids.cell("w'", pos, layer, 0.5), expected)
    assert float(torch.dot(grids.cell("w'", pos, layer, 1.0).double(),
                           grids.r[index, layer].double())) == pytest.approx(0, abs=1e-5)
    assert torch.allclose(grids.cell("r", pos, layer), unit(grids.r[index, layer]))
    assert main(["chat", "--run", str(tiny_run.path), "--cell", str(pos), str(layer), "--lam", "0.5", "--compare",
                 "--max-new-tokens", "4", "Hello there"]) == 0
    out = capsys.readouterr().out
    assert "[baseline]" in out and f"[ablate w′ (λ=0.5) at (pos {pos}, layer {layer})]" in out
    assert main(["chat", "--run", str(tiny_run.path), "--cell", str(pos), "9", "Hi"]) == 2
    assert f"layer 9 is outside the grid's layers 0..{grids.n_layers - 1}" in capsys.readouterr().err
    assert main(["chat", "--run", str(tiny_run.path), "--cell", "-99", "1", "Hi"]) == 2
    assert "position -99 is not in the grid" in capsys.readouterr().err
    assert main(["chat", "--model", "m", "--lam", "0.5", "Hi"]) == 2
    assert "--lam and --vector go with --cell POS LAYER" in capsys.readouterr().err
    assert main(["chat", "--cell", "-1", "1", "--model", "m", "Hi"]) == 2
    assert "--cell needs --run DIR" in capsys.readouterr().err
