"""The command line derived from the config dataclasses: every subcommand's options documented with their defaults,
every config field reachable exactly once, and `run --config FILE --STAGE.FIELD VALUE` applying the flag over the
file (unit tier: parsing only, no model)."""

import argparse
import dataclasses
import typing
from pathlib import Path

import pytest

import workbench
from workbench import cli_options
from workbench.cli import build_parser, main, run_config
from workbench.cli_parser import COMMANDS
from workbench.eval.capability import CapabilityConfig
from workbench.eval.judge import JudgeOptions
from workbench.method.rule import SelectionRule
from workbench.stages.diagnose import DiagnoseConfig
from workbench.stages.evaluate import EvalConfig
from workbench.stages.extract import ExtractConfig
from workbench.stages.frontier import FrontierConfig
from workbench.stages.gate import GateConfig
from workbench.stages.pipeline import PipelineConfig
from workbench.stages.sweep import SweepConfig

pytestmark = pytest.mark.unit

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.toml"

USES = {  # subcommand -> the configs whose every field it takes, with the prefix of their destinations
    "extract": [(ExtractConfig, "")],
    "sweep": [(SweepConfig, ""), (SelectionRule, "")],
    "select": [(SelectionRule, "")],
    "diagnose": [(DiagnoseConfig, "")],
    "gate": [(GateConfig, "")],
    "evaluate": [(EvalConfig, "")],
    "capability": [(CapabilityConfig, "")],
    "frontier": [(FrontierConfig, "")],
    "judge": [(JudgeOptions, "judge_options.")],
    "judge calibrate": [(JudgeOptions, "judge_options.")],
    "judge fit": [(JudgeOptions, "judge_options.")],
    "run": [(PipelineConfig, "")],
}


def field_dests(cls: type, prefix: str = "") -> list[str]:
    """Every leaf field of a config as its option's destination (nested dataclasses flattened)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = cli_options._unwrap(hints[f.name])[0]
        out += field_dests(kind, f"{prefix}{f.name}.") if dataclasses.is_dataclass(kind) else [f"{prefix}{f.name}"]
    return out


def subcommands(parser: argparse.ArgumentParser, name: str = ""):
    """(name, parser) of every subcommand, nested ones included (`judge calibrate`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                full = f"{name} {sub_name}".strip()
                yield full, sub
                yield from subcommands(sub, full)


PARSER = build_parser()
SUBCOMMANDS = dict(subcommands(PARSER))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_the_walk_reaches_every_subcommand():
    grouped = [name for group in COMMANDS.values() for name in group]
    assert sorted(grouped) == sorted(name for name in SUBCOMMANDS if " " not in name)  # each in one help group
    assert {"judge calibrate", "judge fit", "datasets fetch", "organism train", "organism wire"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_option_has_help_with_its_default(name):
    parser = SUBCOMMANDS[name]
    formatter = parser._get_formatter()
    missing = []
    for action in options(parser):
        text = formatter._expand_help(action) if action.help else ""
        if not text.strip() or not ("required" in text or "default" in text):
            missing.append(f"{action.option_strings[0]}: {text!r}")
    assert missing == []
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"{name} {action.dest}: a positional argument without help"
    assert parser.format_help()  # every help string formats (no stray % in a docstring)


@pytest.mark.parametrize("name", sorted(USES))
def test_every_config_field_is_one_option(name):
    parser = SUBCOMMANDS[name]
    dests = [a.dest for a in options(parser)]
    for cls, prefix in USES[name]:
        expected = field_dests(cls, prefix)
        missing = [d for d in expected if d not in dests]
        doubled = [d for d in expected if dests.count(d) > 1]
        assert (missing, doubled) == ([], []), f"{name}: {cls.__name__}"
        for action in options(parser):
            if action.dest in expected:
                flag = action.option_strings[0]
                spelled = action.dest.replace("judge_options.", "judge-").replace("_", "-")
                assert flag == f"--{spelled}", "an option is named after its field"


def value_for(action: argparse.Action, current):
    """A command-line value for `action` that differs from `current`, and the value the config should then hold."""
    kind = getattr(action.type, "checked", action.type)
    if isinstance(action, cli_options._Flag):
        return [action.option_strings[1 if current else 0]], not current
    many = action.nargs in ("+", "*")
    if action.choices:
        choice = next(c for c in action.choices if (c,) != current and c != current)
        return [action.option_strings[0], choice], (choice,) if many else choice
    samples = {cli_options.POSITIVE_INT: "3", cli_options.COUNT_OR_ALL: "5", cli_options.NON_NEGATIVE_INT: "4",
               cli_options.LAMBDA: "0.25", cli_options.FRACTION: "0.3", cli_options.POSITIVE_FLOAT: "0.7",
               cli_options.NON_NEGATIVE_FLOAT: "0.4", cli_options.FINITE_FLOAT: "-0.5", cli_options.LAYER: "2",
               cli_options.EOI_OFFSET: "-2", cli_options.SHARE: "0.35", cli_options.STRENGTH: "0.6",
               cli_options.LEVEL: "0.9", str: "some_prompt_set"}
    text = samples[kind]
    value = kind(text)
    if value == current or (value,) == current:
        text, value = ("7", 7) if isinstance(value, int) else ("0.15", 0.15)
    return [action.option_strings[0], text], (value,) if many else value


def parse_run(*flags: str) -> argparse.Namespace:
    return build_parser(("run",)).parse_args(["run", "--run", "r", "--config", str(QUICK), *flags])


def lookup(config, dest: str):
    for part in dest.split("."):
        config = getattr(config, part)
    return config


RUN_FIELDS = field_dests(PipelineConfig)


@pytest.mark.parametrize("dest", RUN_FIELDS)
def test_run_applies_every_stage_option_over_the_config_file(dest):
    """`run --config configs/quick.toml --STAGE.FIELD VALUE`: the parsed config holds VALUE (the file and the other
    fields unchanged)."""
    base = run_config(parse_run())[0]
    action = next(a for a in options(SUBCOMMANDS["run"]) if a.dest == dest)
    argv, expected = value_for(action, lookup(base, dest))
    config, model, overrides = run_config(parse_run(*argv))
    assert lookup(config, dest) == expected
    assert overrides == {dest: expected} and model == "smollm2-135m-wired"
    others = [d for d in RUN_FIELDS if d != dest]
    assert [lookup(config, d) for d in others] == [lookup(base, d) for d in others]


def test_run_applies_the_ablation_over_the_config_file(capsys):
    """Regression: `run --config X --ablation harmless_mean` once ran with the file's zero-ablation. The option is
    now `--sweep.ablation` and applies; the stage-less spelling is refused, not ignored."""
    assert run_config(parse_run())[0].sweep.ablation == "zero"
    assert run_config(parse_run("--sweep.ablation", "harmless_mean"))[0].sweep.ablation == "harmless_mean"
    assert run_config(parse_run("--evaluate.ablation", "zero", "harmless_mean"))[0].evaluate.ablation == (
        "zero", "harmless_mean")
    with pytest.raises(SystemExit) as caught:
        main(["run", "--run", "r", "--config", str(QUICK), "--ablation", "harmless_mean"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --ablation harmless_mean" in capsys.readouterr().err


def test_the_merged_config_is_what_the_pipeline_runs_and_records(tmp_path, monkeypatch, capsys):
    """`cmd_run` hands the merged config to `run_pipeline` (which writes it to config.json), and says which options
    overrode the file."""
    import workbench.cli as cli
    import workbench.stages.pipeline as pipeline

    handed = {}
    monkeypatch.setattr(cli, "_load", lambda args, recorded=None, where="": args.model)
    monkeypatch.setattr(pipeline, "run_pipeline", lambda lm, run, config, force=False: handed.update(config=config))
    assert main(["run", "--config", str(QUICK), "--run", str(tmp_path / "r"), "--sweep.n-val", "5",
                 "--select.max-harmful-drop", "0.5", "--stages", "extract", "sweep"]) == 0
    config = handed["config"]
    assert (config.sweep.n_val, config.select.max_harmful_drop, config.stages) == (5, 0.5, ("extract", "sweep"))
    assert config.sweep.lams == (1.0,) and config.diagnose.n_val == 16  # the file's values
    assert "overridden by the options sweep.n_val = 5, select.max_harmful_drop = 0.5" in capsys.readouterr().out


def test_none_and_empty_values():
    config = run_config(parse_run("--sweep.n-val", "none", "--evaluate.alphas", "--capability.interventions",
                                  "none", "--sweep.layers", "3", "4"))[0]
    assert (config.sweep.n_val, config.evaluate.alphas, config.capability.interventions) == (None, (), None)
    assert config.sweep.layers == (3, 4)
    with pytest.raises(SystemExit):
        parse_run("--sweep.layers", "3", "none")
    with pytest.raises(SystemExit):
        parse_run("--sweep.n-screen", "none")  # not optional


def test_select_starts_from_the_rule_the_sweep_recorded():
    from workbench.cli import _rule

    recorded = SelectionRule(max_ablation_kl=0.5, induce_refusal_filter=True)
    args = build_parser(("select",)).parse_args(["select", "--run", "r", "--no-induce-refusal-filter"])
    assert _rule(args, base=recorded) == SelectionRule(max_ablation_kl=0.5, induce_refusal_filter=False)


def test_one_name_per_concept():
    """The run directory is `--run` wherever a command takes one; the ablation kind `--ablation`; a single λ `--lam`
    and several `--lams`; activation-addition coefficients `--alphas`; the training sets of extract and the
    validation sets of diagnose and frontier have different names."""
    flags = {name: {s for a in options(p) for s in a.option_strings} for name, p in SUBCOMMANDS.items()}
    for name, names in flags.items():
        assert not names & {"--ablate-to", "--run-dir", "--alpha-values", "--n", "--lam-values", "--max-kl"}, name
    for name in ("chat", "export", "evaluate", "sweep"):
        assert "--ablation" in flags[name]
    for name in ("sweep", "diagnose", "frontier"):
        assert "--lams" in flags[name]
    assert {"--alphas"} <= flags["evaluate"] & flags["export"]
    assert {"--harmful", "--harmless", "--pseudo-harmful"} <= flags["extract"]
    for name in ("diagnose", "frontier"):
        assert "--harmful-val" in flags[name] and "--harmful" not in flags[name]
    runs = [name for name, p in SUBCOMMANDS.items() if any(a.dest == "run" for a in options(p))]
    assert len(runs) >= 14 and all("--run" in flags[name] for name in runs)


def test_choices_come_from_the_registries():
    from workbench.eval.judges import JUDGES
    from workbench.interventions.hooks import ABLATION_TARGETS
    from workbench.stages.pipeline import STAGES
    from workbench.stages.sweep import MODES

    run = {a.dest: a for a in options(SUBCOMMANDS["run"])}
    assert tuple(run["sweep.mode"].choices) == MODES
    assert tuple(run["sweep.ablation"].choices) == tuple(ABLATION_TARGETS)
    assert tuple(run["evaluate.judge"].choices) == tuple(JUDGES) == tuple(run["select.rerank_judge"].choices)
    assert tuple(run["stages"].choices) == STAGES
    for argv in (["capability", "--run", "r", "--tasks", "hellaswag"], ["run", "--run", "r", "--stages", "plot"]):
        with pytest.raises(SystemExit):
            main(argv)


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out.strip() == f"workbench {workbench.__version__}"


def test_top_level_help_groups_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for title in COMMANDS:
        assert f"\n{title}:\n" in out
    assert out.index("  run ") < out.index("  evaluate ") < out.index("  status ") < out.index("  models ")


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every `workbench ...` line of a bash block in the README and docs/ (continuation lines
    joined, comments and environment assignments dropped), but lines with optional parts (`[...]`), alternatives
    (`|`) or elisions (`...`)."""
    import re
    import shlex

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                if "workbench " not in line:
                    continue
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:  # a command spread over lines without a backslash (a JSON argument)
                    continue
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]
                text = " ".join(words)
                if words[:1] == ["workbench"] and not re.search(r"\[|\||\.\.\.|…", text):
                    found.append((path.name, shlex.join(words[1:])))
    return found


@pytest.mark.parametrize(("page", "command"), documented_commands())
def test_documented_commands_parse(page, command):
    import shlex

    argv = shlex.split(command)
    build_parser((argv[0],)).parse_args(argv)


def test_the_documented_commands_are_found():
    assert len(documented_commands()) >= 30


def test_every_subcommand_names_its_command_function():
    import workbench.cli as cli

    for name, parser in SUBCOMMANDS.items():
        func = parser._defaults.get("func") or SUBCOMMANDS[name.split()[0]]._defaults.get("func")  # or its parent's
        if name == "organism":
            assert func is None  # only its subcommands run
            continue
        assert func is not None and callable(getattr(cli, func)), name


def test_the_reference_page_is_current():
    from workbench.cli_parser import reference

    page = Path(__file__).resolve().parents[1] / "docs" / "cli-reference.md"
    assert page.read_text(encoding="utf-8") == reference() + "\n", \
        "docs/cli-reference.md is stale: python -m workbench.cli_parser > docs/cli-reference.md"
