"""Unit tier: bad input at the boundaries is a one-line `WorkbenchError` that names the file or option and says what
to do; never a traceback. Run artifacts are built by hand (a tiny grid, a sweep table, the real select stage) in tmp
directories: no model is loaded (CLI tests make `load_model` fail if it is called)."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import workbench.models
from workbench.cli import build_parser, main
from workbench.data import load_prompts
from workbench.errors import WorkbenchError
from workbench.eval.capability import CapabilityConfig
from workbench.interventions.catalogue import build_interventions, choose
from workbench.interventions.directions import load_direction
from workbench.io import write_json, write_jsonl
from workbench.method.rule import SelectionRule
from workbench.stages.evaluate import EvalConfig, read_completions, summarize
from workbench.stages.extract import ExtractConfig, load_candidates
from workbench.stages.figures import run_figures
from workbench.stages.run_dir import RunDir
from workbench.stages.select import read_selection, select, selected_direction_file
from workbench.stages.sweep import SweepConfig, settings_record
from workbench.stages.sweep_algorithms import COLUMNS

pytestmark = pytest.mark.unit

FINGERPRINT, D_MODEL, N_LAYERS, POSITIONS = "fp-tiny", 8, 4, [-2, -1]


def make_run(root: Path, stages: tuple[str, ...] = ("extract", "sweep", "select")) -> RunDir:
    """A run directory as the stages write it, for a model of width 8 with 4 layers and 2 EOI positions: candidate
    grids (random), a fully scored sweep at λ=1 (score = layer + pos, KL 0.05), and the real select stage's output."""
    run = RunDir(root)
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    shape = (len(POSITIONS), N_LAYERS, D_MODEL)
    save_file({"r": torch.randn(shape, generator=generator),
               "w": torch.randn(shape, generator=generator)}, str(run.file("candidates.safetensors")))
    model = {"name": "tiny", "fingerprint": FINGERPRINT, "d_model": D_MODEL}
    write_json(run.file("candidates.json"), {"model": model, "positions": POSITIONS, "n_layers": N_LAYERS,
                                             "d_model": D_MODEL, "config": {}})
    if "sweep" in stages:
        rows = [{"vector": vector, "lam": lam, "pos": pos, "layer": layer,
                 "ablation_refusal_score_pseudo_harmful": layer + pos, "ablation_refusal_score_harmful": layer + pos,
                 "ablation_kl": 0.05, "steering_refusal_score": 1.0,
                 "steering_kl": 0.1, "screen_refusal_score": layer + pos, "screen_kl": 0.05, "stage": "full",
                 "sweep_note": ""}
                for vector, lam in (("r", math.nan), ("w'", 1.0)) for pos in POSITIONS
                for layer in range(N_LAYERS)]
        pd.DataFrame(rows, columns=COLUMNS).to_csv(run.file("sweep.csv"), index=False)
        write_json(run.file("sweep.json"), {
            "config": {**settings_record(SweepConfig(), SelectionRule()), "lams": [1.0]}, "n_layers": N_LAYERS,
            "baseline_refusal_score": {"pseudo_harmful": 2.0, "harmful": 3.0, "harmless": -2.0}, "model": model})
    if "select" in stages:
        select(run)
    return run


def make_results(run: RunDir) -> None:
    """Completions of two interventions on one dataset (written as evaluate writes them), `evaluation.csv` from them
    (the real summarize) and a `capability.csv`."""
    for name, refused in (("baseline", [True, True, False]), ("ablate_w_lam1.0", [False, True, False])):
        rows = [{"instruction": f"q{k}", "category": None, "response": f"answer {k}", "refused": r}
                for k, r in enumerate(refused)]
        write_jsonl(run.file(f"completions/xstest_safe/{name}.jsonl"), rows)
        write_json(run.file(f"completions/xstest_safe/{name}.meta.json"), {"intervention": name, "n": 3})
    summarize(run)
    pd.DataFrame([{"task": "wikitext2", "intervention": i, "metric": "perplexity", "value": v, "n": 100}
                  for i, v in (("baseline", 30.0), ("ablate_w_lam1.0", 31.0))]
                 ).to_csv(run.file("capability.csv"), index=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> RunDir:
    run = make_run(tmp_path_factory.mktemp("template") / "run")
    make_results(run)
    return run


@pytest.fixture
def run(template, tmp_path) -> RunDir:
    """A fresh copy of the template run to damage."""
    return RunDir(Path(shutil.copytree(template.path, tmp_path / "run")))


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def no_model(monkeypatch):
    """`load_model` fails the test if called: bad input must be refused before any model loads."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(workbench.models, "load_model", fail)


# ---- 1. every artifact a stage reads is checked when loaded ---------------------------------------------------


def halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(b"\x89\xff\x00 not an artifact \xfe" * 8)


def drop(key: str):
    """Rewrite the artifact without one key, column or tensor (a file from an older or foreign writer)."""

    def damage(path: Path) -> None:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            data.pop(key)
            path.write_text(json.dumps(data))
        elif path.suffix == ".csv":
            pd.read_csv(path).drop(columns=[key]).to_csv(path, index=False)
        else:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                tensors, meta = {k: f.get_tensor(k) for k in f.keys() if k != key}, f.metadata()
            save_file(tensors, str(path), metadata=meta)  # the metadata (model, fingerprint) kept

    damage.__name__ = f"drop_{key}"
    return damage


def non_number(column: str):
    def damage(path: Path) -> None:
        frame = pd.read_csv(path, keep_default_na=False)
        frame[column] = frame[column].astype(str)
        frame.loc[1, column] = "oops"
        frame.to_csv(path, index=False)

    damage.__name__ = f"non_number_{column}"
    return damage


def relabel(column: str, value: str):
    """Row 1's `column` set to `value` (a label of another vocabulary)."""
    def damage(path: Path) -> None:
        frame = pd.read_csv(path, keep_default_na=False)
        frame.loc[1, column] = value
        frame.to_csv(path, index=False)

    damage.__name__ = f"relabel_{column}"
    return damage


def interventions(run: RunDir):
    """The run's named interventions, read as `workbench evaluate` and `workbench capability` read them."""
    selection = run.read_json("selection.json", keys=("selections", "r"))
    return build_interventions(selection, run.path, FINGERPRINT, D_MODEL, alphas=(1.0,))


ARTIFACT_CASES = [
    # (artifact, damage, reader, what the error says)
    *[("candidates.safetensors", d, load_candidates, "workbench extract --model M --run")
      for d in (halve, garbage, drop("w"))],
    *[("candidates.json", d, load_candidates, "workbench extract --model M --run")
      for d in (halve, garbage, drop("positions"))],
    *[("sweep.csv", d, select, "workbench sweep --run")
      for d in (halve, garbage, drop("ablation_kl"), non_number("layer"), relabel("vector", "true"))],
    *[("sweep.json", d, select, "workbench sweep --run") for d in (halve, garbage, drop("config"))],
    *[("selection.csv", d, read_selection, "workbench select --run")
      for d in (halve, garbage, drop("kept"), non_number("ablation_kl"))],
    *[("selection.json", d, reader, "workbench select --run")
      for d in (halve, garbage, drop("selections"))
      for reader in (interventions, lambda run: selected_direction_file(run, 1.0))],
    *[("directions/lam_1.0.safetensors", d, interventions, "workbench select --run")
      for d in (halve, garbage, drop("direction"), drop("raw_w"))],
    *[("directions/r.safetensors", d, interventions, "workbench select --run")
      for d in (halve, garbage, drop("raw_r"))],
    *[("evaluation.csv", d, run_figures, "workbench evaluate --run")
      for d in (halve, garbage, drop("rate"), non_number("ci_low"), relabel("vector", "w′"))],
    *[("capability.csv", d, run_figures, "workbench capability --run")
      for d in (halve, garbage, drop("value"), non_number("value"))],
    *[("completions/xstest_safe/baseline.jsonl", d, read_completions, "workbench evaluate --run")
      for d in (halve, garbage)],
    *[("completions/xstest_safe/baseline.meta.json", d, read_completions, "workbench evaluate --run")
      for d in (halve, garbage, drop("intervention"))],
]


@pytest.mark.parametrize(("artifact", "damage", "reader", "command"), ARTIFACT_CASES,
                         ids=[f"{a}-{d.__name__}" for a, d, _, _ in ARTIFACT_CASES])
def test_damaged_artifact_names_file_and_command(run, artifact, damage, reader, command):
    if reader is run_figures:  # figures from the results only: the error must come before anything is drawn
        for name in ("sweep.csv", "selection.csv"):
            run.file(name).unlink()
    else:
        reader(run)  # the undamaged run reads fine
    damage(run.file(artifact))
    with pytest.raises(WorkbenchError) as caught:
        reader(run)
    message = str(caught.value)
    assert "\n" not in message
    assert str(run.file(artifact)) in message
    assert f"`{command} {run.path}" in message  # the stage command that rewrites it, with this run filled in


def test_completion_line_that_is_not_a_record(run):
    path = run.file("completions/xstest_safe/baseline.jsonl")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '["a", "list"]', *lines[2:]]) + "\n")
    with pytest.raises(WorkbenchError, match=r"baseline.jsonl is corrupted .*line 2 is not an object with 'response'"):
        read_completions(run)
    path.write_text(lines[0] + "\n" + '{"instruction": "q", "response": "r"}\n')
    with pytest.raises(WorkbenchError, match="line 2 is not an object with 'response' and a boolean 'refused'"):
        read_completions(run)


def test_the_undamaged_results_read_back(template):
    """The readers return what was written (so the damage tests above start from working artifacts)."""
    completions = read_completions(template)
    assert len(completions) == 6 and completions.refused.tolist() == [False, True, False, True, True, False]
    evaluation = pd.read_csv(template.file("evaluation.csv")).set_index("intervention")
    assert set(evaluation.judge) == {"substring"}  # the only judge these completions carry
    assert evaluation.loc["baseline", "rate"] == pytest.approx(1 / 3)
    assert evaluation.loc["ablate_w_lam1.0", "rate"] == pytest.approx(2 / 3)
    assert evaluation.loc["ablate_w_lam1.0", "k"] == 2 and evaluation.loc["ablate_w_lam1.0", "vector"] == "w'"
    assert selected_direction_file(template, 1.0) == template.file("directions/lam_1.0.safetensors")
    names = [i.name for i in interventions(template)]
    assert names == ["baseline", "ablate_w_lam1.0", "ablate_w_raw", "ablate_r", "actadd_r_a1.0",
                     "ablate_w_lam1.0+actadd_r_a1.0"]


def test_candidates_json_without_a_model_name(run):
    record = json.loads(run.file("candidates.json").read_text())
    run.file("candidates.json").write_text(json.dumps({**record, "model": "tiny"}))
    with pytest.raises(WorkbenchError, match="candidates.json is corrupted .*no name and fingerprint"):
        run.model_record()


def test_selection_entry_without_its_file(run):
    record = json.loads(run.file("selection.json").read_text())
    del record["selections"][0]["direction_file"]
    run.file("selection.json").write_text(json.dumps(record))
    with pytest.raises(WorkbenchError, match=r"selection.json is corrupted \(selection 0 has no 'direction_file'\)"):
        interventions(run)


def test_missing_direction_file(run):
    run.file("directions/lam_1.0.safetensors").unlink()
    message = f"lam_1.0.safetensors is missing: run `workbench select --run {run.path}` to write it"
    with pytest.raises(WorkbenchError, match=message):
        interventions(run)


# ---- 2. prompt files ------------------------------------------------------------------------------------------

GOOD_PROMPT_FILES = {
    ".jsonl": '{"instruction": "first"}\n{"instruction": "second", "category": "c"}\n{"instruction": "third"}\n',
    ".json": '[\n{"instruction": "first"},\n{"instruction": "second", "category": "c"},\n{"instruction": "third"}\n]\n',
    ".txt": "first\nsecond\n\nthird\n",
    ".csv": "instruction,category\nfirst,\nsecond,c\nthird,\n",
}


@pytest.mark.parametrize("suffix", GOOD_PROMPT_FILES)
def test_prompt_files_of_each_type_load(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    path.write_text(GOOD_PROMPT_FILES[suffix], encoding="utf-8")
    prompts = load_prompts(str(path))
    assert [p.instruction for p in prompts] == ["first", "second", "third"]
    assert load_prompts(str(path), limit=2)[-1].instruction == "second"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_PROMPT_FILES[suffix].encode())  # a byte-order mark is fine
    assert [p.instruction for p in load_prompts(str(path))] == ["first", "second", "third"]


@pytest.mark.parametrize("suffix", GOOD_PROMPT_FILES)
def test_prompt_file_not_utf8_names_file_and_line(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    good = GOOD_PROMPT_FILES[suffix].encode()
    third_line = good.index(b"third")  # line 4 of the .json and .csv files, line 3 (4 for .txt) of the others
    line = good[:third_line].count(b"\n") + 1
    path.write_bytes(good[:third_line] + "thérd".encode("latin-1") + good[third_line + 5 :])
    with pytest.raises(WorkbenchError, match=rf"p\{suffix}:{line}: not UTF-8 text \(byte 0xe9 at offset "
                                             rf"{third_line + 2}\): save the file as UTF-8"):
        load_prompts(str(path))


@pytest.mark.parametrize(("suffix", "text"), [(".jsonl", "\n"), (".json", "[]"), (".txt", "\n \n"),
                                              (".csv", "instruction,category\n")])
def test_empty_prompt_file(tmp_path, suffix, text):
    path = tmp_path / f"empty{suffix}"
    path.write_text(text)
    with pytest.raises(WorkbenchError, match=f"prompts file {path} has no prompts"):
        load_prompts(str(path))


@pytest.mark.parametrize(("name", "text", "message"), [
    ("p.jsonl", '{"instruction": "ok"}\n["not", "an object"]\n',
     r"p.jsonl:2: malformed row: expected a JSON object with the field 'instruction', got list"),
    ("p.jsonl", '{"instruction": "ok"}\n{"prompt": "wrong field"}\n',
     r"p.jsonl:2: malformed row: missing or empty field 'instruction'"),
    ("p.jsonl", '{"instruction": "ok"}\n{"instruction": "cut',
     r"p.jsonl:2: malformed row: invalid JSON"),
    ("p.json", '{"instruction": "ok"}', r"p.json: expected a JSON array of prompt objects"),
    ("p.csv", "prompt\nhello\n", r"p.csv: no column 'instruction'"),
    ("p.yaml", "- hello\n", r"p.yaml: unsupported file type \(give a file ending in .jsonl, .json, .txt, .csv\)"),
    ("missing.jsonl", None, r"prompts file .*missing.jsonl does not exist"),
])
def test_malformed_prompt_files(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(WorkbenchError, match=message):
        load_prompts(str(path))


def test_chat_refuses_a_bad_prompts_file_before_loading(tmp_path, capsys, no_model):
    path = tmp_path / "p.jsonl"
    data = b'{"instruction": "fine"}\n{"instruction": "caf\xe9"}\n'
    path.write_bytes(data)
    assert main(["chat", "--model", "m", "--prompts-file", str(path)]) == 2
    assert one_line(capsys) == (f"workbench: error: {path}:2: not UTF-8 text (byte 0xe9 at offset "
                                f"{data.index(0xE9)}): save the file as UTF-8")
    assert main(["chat", "--model", "m", "--prompts-file", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl does not exist" in one_line(capsys)
    assert main(["chat", "--model", "m", "  "]) == 2
    assert "the prompt is empty" in one_line(capsys)


# ---- 3. numeric options out of range are refused by argparse, before any model loads ---------------------------

BAD_OPTIONS = [
    (["chat", "--model", "m", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["chat", "--model", "m", "hi", "--batch-size", "-4"], "--batch-size"),
    (["export", "--model", "m", "--out", "o", "--lam", "1.5"], "--lam"),
    (["evaluate", "--run", "r", "--limit", "0"], "--limit"),
    (["evaluate", "--run", "r", "--max-new-tokens", "ten"], "--max-new-tokens"),
    (["evaluate", "--run", "r", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--run", "r", "--alphas", "inf"], "--alphas"),
    (["evaluate", "--run", "r", "--alphas", "nan"], "--alphas"),
    (["capability", "--run", "r", "--perplexity-tokens", "0"], "--perplexity-tokens"),
    (["capability", "--run", "r", "--n-mmlu", "-1"], "--n-mmlu"),
    (["capability", "--run", "r", "--n-arc", "-5"], "--n-arc"),
    (["extract", "--model", "m", "--run", "r", "--n-train", "0"], "--n-train"),
    (["extract", "--model", "m", "--run", "r", "--batch-size", "0"], "--batch-size"),
    (["sweep", "--run", "r", "--lams", "1", "1.5"], "--lams"),
    (["sweep", "--run", "r", "--lams", "-0.1"], "--lams"),
    (["sweep", "--run", "r", "--n-val", "0"], "--n-val"),
    (["sweep", "--run", "r", "--n-screen", "0"], "--n-screen"),
    (["sweep", "--run", "r", "--n-finalists", "-1"], "--n-finalists"),
    (["sweep", "--run", "r", "--layers", "-1"], "--layers"),
    (["sweep", "--run", "r", "--positions", "0"], "--positions"),
    (["sweep", "--run", "r", "--max-ablation-kl", "0"], "--max-ablation-kl"),
    (["sweep", "--run", "r", "--r-max-ablation-kl", "-0.1"], "--r-max-ablation-kl"),
    (["sweep", "--run", "r", "--prune-layer-fraction", "1"], "--prune-layer-fraction"),
    (["select", "--run", "r", "--max-ablation-kl", "nan"], "--max-ablation-kl"),
    (["run", "--run", "r", "--sweep.lams", "2"], "--sweep.lams"),
    (["run", "--run", "r", "--extract.batch-size", "0"], "--extract.batch-size"),
    (["run", "--run", "r", "--evaluate.ci-level", "1"], "--evaluate.ci-level"),
    (["gate", "--run", "r", "--bound", "1.5"], "--bound"),
    (["frontier", "--run", "r", "--betas", "0"], "--betas"),
    (["organism", "distill", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["organism", "train", "--steps", "0"], "--steps"),
    (["organism", "report", "--limit", "0"], "--limit"),
]


@pytest.mark.parametrize(("argv", "option"), BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_out_of_range_option_is_refused_by_argparse(argv, option, capsys, no_model):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and "expected" in err


CHECKED_TYPES = {"POSITIVE_INT", "COUNT_OR_ALL", "LAMBDA", "FRACTION", "POSITIVE_FLOAT", "FINITE_FLOAT", "LAYER",
                 "EOI_OFFSET", "NON_NEGATIVE_FLOAT", "NON_NEGATIVE_INT", "CELL_INDEX", "SHARE", "STRENGTH", "LEVEL"}


def test_every_numeric_option_has_a_checked_type():
    """No option parses a number with a bare int/float (which takes 0, -1, nan, inf); `--seed` may be any integer."""
    import argparse

    import workbench.cli_options as options

    checked = {getattr(options, name) for name in CHECKED_TYPES}
    parsers, numeric, unchecked = [build_parser()], [], []
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
                continue
            default = action.default[0] if isinstance(action.default, list) and action.default else action.default
            kind = getattr(action.type, "checked", action.type)  # a field that may be None: its type, or `none`
            is_number = kind in (int, float) or kind in checked or (
                isinstance(default, int | float) and not isinstance(default, bool))
            if is_number and action.dest != "seed":
                numeric.append(action.option_strings[0])
                if kind not in checked:
                    unchecked.append(f"{parser.prog} {action.option_strings[0]}")
    assert unchecked == []
    assert len(numeric) >= 30  # the walk reached every subcommand's options


@pytest.mark.parametrize(("table", "message"), [
    ("[sweep]\nn_val = 0", "sweep n_val must be at least 1"),
    ("[sweep]\nlams = [1.0, 1.5]", "λ must be in [0, 1], got 1.5"),
    ("[sweep]\nscreen_kl_margin = -1.0", "sweep screen_kl_margin must be ≥ 0"),
    ("[extract]\nbatch_size = 0", "extract batch_size must be at least 1"),
    ("[extract]\nharmful = \"nope\"", "unknown dataset 'nope'"),
    ("[select]\nmax_ablation_kl = 0.0", "max_ablation_kl must be > 0"),
    ("[select]\nprune_layer_fraction = 1.0", "prune_layer_fraction must be in [0, 1)"),
    ("[evaluate]\nmax_new_tokens = 0", "evaluate max_new_tokens must be at least 1"),
    ("[evaluate]\nlimit = -3", "evaluate limit must be at least 1"),
    ("[evaluate]\ndatasets = [\"mmlu\"]", "dataset 'mmlu' is not a prompt set"),
    ("[evaluate]\nalphas = [inf]", "evaluate alphas must be finite"),
    ("[capability]\nbatch_size = 0", "capability batch_size must be at least 1"),
    ("[capability]\nn_arc = -1", "capability n_arc must be ≥ 0"),
    ("stages = [\"extract\", \"plot\"]", "unknown stage 'plot'"),
])
def test_config_file_out_of_range_is_refused_before_loading(tmp_path, capsys, no_model, table, message):
    config = tmp_path / "c.toml"
    config.write_text(table + "\n")
    assert main(["run", "--run", str(tmp_path / "r"), "--config", str(config)]) == 2
    assert message in one_line(capsys)


def test_config_file_not_utf8(tmp_path, capsys, no_model):
    config = tmp_path / "c.toml"
    config.write_bytes(b'model = "smollm2-135m-safety"\n# caf\xe9\n')
    assert main(["run", "--run", str(tmp_path / "r"), "--config", str(config)]) == 2
    assert f"{config}:2: not UTF-8 text" in one_line(capsys)


def test_config_validate_checks_values_directly():
    with pytest.raises(WorkbenchError, match="capability mmlu_shots must be ≥ 0"):
        CapabilityConfig(mmlu_shots=-1).validate()
    with pytest.raises(WorkbenchError, match="evaluate alphas must be finite numbers, got inf"):
        EvalConfig(alphas=(1.0, math.inf)).validate()
    with pytest.raises(WorkbenchError, match="sweep steering_coeff must be finite"):
        SweepConfig(steering_coeff=math.nan).validate()
    with pytest.raises(WorkbenchError, match="prompts file .*h.jsonl does not exist"):
        ExtractConfig(harmful="h.jsonl").validate()


# ---- 4. other first-day mistakes ---------------------------------------------------------------------------------


def test_select_without_a_sweep(tmp_path, capsys):
    run = make_run(tmp_path / "run", stages=("extract",))
    assert main(["select", "--run", str(run.path)]) == 2
    assert one_line(capsys) == (f"workbench: error: {run.file('sweep.json')} is missing: run `workbench sweep --run "
                                f"{run.path}` first")


@pytest.mark.parametrize(("command", "stages", "message"), [
    (["evaluate"], ("extract", "sweep"), "selection.json is missing: run `workbench select --run {run}` first"),
    (["capability"], ("extract",), "selection.json is missing: run `workbench select --run {run}` first"),
    (["evaluate"], (), "candidates.json is missing: run `workbench extract --model M --run {run}` first"),
    (["export", "--lam", "0.5", "--out", "o"], ("extract", "sweep", "select"),
     "{run} has no selected direction at λ=0.5 (selected: 1.0)"),
])
def test_stage_prerequisites_are_checked_before_loading(tmp_path, capsys, no_model, command, stages, message):
    run = make_run(tmp_path / "run", stages=stages) if stages else RunDir(tmp_path / "run")
    run.path.mkdir(exist_ok=True)
    assert main([command[0], "--run", str(run.path), *command[1:]]) == 2
    assert message.format(run=run.path) in one_line(capsys)


@pytest.mark.parametrize(("command", "missing"), [
    (["evaluate", "--datasets", "xstest_safe", "bundled_harmful_test"], "xstest_safe"),
    (["capability", "--tasks", "wikitext2"], "wikitext2"),
])
def test_benchmark_sets_are_checked_before_loading(tmp_path, capsys, no_model, monkeypatch, command, missing):
    """A follow-up command on a run names every benchmark set it would read that the data directory lacks, and the
    command that fetches them, before the model loads (bundled sets need nothing)."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    run = make_run(tmp_path / "run")
    assert main([command[0], "--run", str(run.path), *command[1:]]) == 2
    assert one_line(capsys) == (f"workbench: error: benchmark data missing from {tmp_path / 'data'} (from "
                                f"WORKBENCH_DATA_DIR): {missing}: run `workbench datasets fetch {missing}`")


def test_the_main_job_checks_its_benchmark_sets_before_loading(tmp_path, capsys, no_model, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    assert main(["run", "--run", str(tmp_path / "run")]) == 2
    assert "benchmark data missing from" in one_line(capsys) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["evaluate"], ["capability"], ["sweep"], ["select"], ["figures"],
                                     ["export", "--lam", "1", "--out", "o"]])
def test_run_directory_that_does_not_exist(tmp_path, capsys, no_model, command):
    missing = tmp_path / "no_such_run"
    assert main([command[0], "--run", str(missing), *command[1:]]) == 2
    assert one_line(capsys).startswith(f"workbench: error: run directory {missing} does not exist: make one with "
                                       f"`workbench run --run {missing}`")


def test_figures_on_an_empty_directory(tmp_path, capsys):
    assert main(["figures", "--run", str(tmp_path)]) == 2
    message = one_line(capsys)
    assert f"{tmp_path} has neither sweep.csv nor evaluation.csv" in message
    assert f"`workbench run --run {tmp_path}`" in message


def test_unknown_intervention_lists_the_known_ones(template):
    with pytest.raises(WorkbenchError) as caught:
        choose(interventions(template), ("baseline", "ablate_w_lam0.5"))
    assert str(caught.value) == ("unknown intervention(s) ablate_w_lam0.5; this run defines: baseline, "
                                 "ablate_w_lam1.0, ablate_w_raw, ablate_r, actadd_r_a1.0, "
                                 "ablate_w_lam1.0+actadd_r_a1.0")


@pytest.mark.parametrize(("argv", "message"), [
    (["evaluate", "--datasets", "xstest_safe", "nope"], "unknown dataset 'nope': use one of harmful_train"),
    (["evaluate", "--datasets", "mmlu"], "dataset 'mmlu' is not a prompt set (it holds multiple_choice)"),
    (["sweep", "--harmful-val", "harmfull_val"], "unknown dataset 'harmfull_val'"),
    (["extract", "--model", "m", "--pseudo-harmful", "mine.jsonl"], "prompts file mine.jsonl does not exist"),
])
def test_unknown_names_are_refused_before_loading(template, capsys, no_model, argv, message):
    assert main([*argv, "--run", str(template.path)]) == 2
    assert message in one_line(capsys)


def test_direction_from_another_model_or_width(template, tmp_path):
    path = template.file("directions/lam_1.0.safetensors")
    direction, meta = load_direction(path, FINGERPRINT, D_MODEL)
    assert direction.shape == (D_MODEL,) and math.isclose(direction.norm().item(), 1.0, rel_tol=1e-5)
    assert meta["lam"] == "1.0" and meta["fingerprint"] == FINGERPRINT
    with pytest.raises(WorkbenchError, match=r"comes from model 'tiny' \(fingerprint fp-tiny\), not this one "
                                             r"\(fp-other\): use a direction selected for this model"):
        load_direction(path, "fp-other", D_MODEL)
    with pytest.raises(WorkbenchError, match="has width 8, the model has d_model 16: it was selected for another"):
        load_direction(path, FINGERPRINT, 16)
    grid = tmp_path / "grid.safetensors"
    save_file({"direction": torch.ones(2, D_MODEL)}, str(grid), metadata={"fingerprint": FINGERPRINT})
    with pytest.raises(WorkbenchError, match=r"holds a tensor of shape \(2, 8\), not one vector"):
        load_direction(grid, FINGERPRINT, D_MODEL)
    with pytest.raises(WorkbenchError, match=r"has no tensor 'direction' \(not a file written by `workbench select`"):
        load_direction(template.file("candidates.safetensors"))


# ---- the command an error names repairs the damage (the tiny random model: the stages really run) --------------


@pytest.mark.parametrize(("artifact", "reruns"), [
    ("candidates.json", ("extract", "sweep", "select")),
    ("candidates.safetensors", ("extract", "sweep", "select")),
    ("sweep.csv", ("sweep", "select")),
    ("sweep.json", ("sweep", "select")),
    ("selection.csv", ("select",)),
    ("directions/lam_1.0.safetensors", ("select",)),
])
def test_rerunning_the_pipeline_repairs_a_damaged_artifact(tiny, tiny_run, capsys, artifact, reruns):
    """A stage counts a damaged output as not done, so `workbench run` (like the stage command) writes it again."""
    from tiny_model import TINY_RUN_EXTRACT, TINY_RUN_RULE, TINY_RUN_SWEEP

    from workbench.stages.pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig(extract=TINY_RUN_EXTRACT, sweep=TINY_RUN_SWEEP, select=TINY_RUN_RULE,
                            stages=("extract", "sweep", "select"))
    first = run_pipeline(tiny, tiny_run.path, config)
    assert capsys.readouterr().out.count("up to date, skipped") == 3
    halve(tiny_run.file(artifact))
    second = run_pipeline(tiny, tiny_run.path, config)
    log = capsys.readouterr().out
    for stage in ("extract", "sweep", "select"):
        assert (f"[{stage}] running" if stage in reruns else f"[{stage}] up to date, skipped") in log
    cells = [[(s["lam"], s["pos"], s["layer"]) for s in result["selections"]] for result in (first, second)]
    assert cells[0] == cells[1] and len(cells[0]) == 2  # the same (deterministic) selection at λ = 1 and 0
    load_candidates(tiny_run), read_selection(tiny_run)  # every artifact reads back
    load_direction(tiny_run.file("directions/lam_1.0.safetensors"), tiny.info.fingerprint, tiny.info.d_model)


def test_evaluate_regenerates_a_damaged_completions_file(tiny, tiny_run):
    from workbench.stages.evaluate import evaluate

    config = EvalConfig(datasets=("bundled_harmful_test",), interventions=("baseline", "ablate_w_lam1.0"), limit=2,
                        max_new_tokens=3, batch_size=2)
    evaluate(tiny, tiny_run, config, progress=False)
    path = tiny_run.file("completions/bundled_harmful_test/ablate_w_lam1.0.jsonl")
    other = tiny_run.file("completions/bundled_harmful_test/baseline.jsonl")
    written, other_mtime = path.read_bytes(), other.stat().st_mtime_ns
    halve(path)
    with pytest.raises(WorkbenchError, match=f"re-run `workbench evaluate --run {tiny_run.path}`"):
        read_completions(tiny_run)
    evaluate(tiny, tiny_run, config, progress=False)
    assert path.read_bytes() == written  # generated again (greedy: the same completions) ...
    assert other.stat().st_mtime_ns == other_mtime  # ... and only the damaged pair


def test_capability_rescores_after_a_damaged_table(tiny, tiny_run, monkeypatch, capsys):
    import workbench.stages.capability as capability

    calls = []

    def score_task(task, *args):
        calls.append(task)
        return [{"metric": "perplexity", "value": 42.0, "n": 7}]

    monkeypatch.setattr(capability, "score_task", score_task)
    config = CapabilityConfig(tasks=("wikitext2",), interventions=("baseline",))
    capability.measure_capability(tiny, tiny_run, config, progress=False)
    capability.measure_capability(tiny, tiny_run, config, progress=False)
    assert calls == ["wikitext2"]  # the second call reused the table
    halve(tiny_run.file("capability.csv"))
    table = capability.measure_capability(tiny, tiny_run, config, progress=False)
    assert calls == ["wikitext2", "wikitext2"]
    assert "capability.csv or capability.meta.json is damaged: scoring every task again" in capsys.readouterr().out
    assert table[["task", "intervention", "value", "n"]].values.tolist() == [["wikitext2", "baseline", 42.0, 7]]
    assert pd.read_csv(tiny_run.file("capability.csv")).value.tolist() == [42.0]
