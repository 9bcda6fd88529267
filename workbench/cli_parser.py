"""The `workbench` subcommand tree: each subcommand's options, grouped by workflow in `workbench --help`.

The options of the stage commands are generated from their config dataclasses (`workbench.cli_options`); the rest
(model loading, run directories, files) are written here. Each subcommand names its command function in `workbench.cli`
(`func`), which builds the configs from the parsed options and calls the stages.
"""

import argparse
import importlib
import textwrap
from collections.abc import Callable

from workbench import __version__
from workbench.cli_options import (
    CELL_INDEX,
    FINITE_FLOAT,
    LAMBDA,
    LAYER,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    add_config_options,
)
from workbench.stages.config_file import DTYPE_NAMES

ABLATION_CHOICES = ("zero", "harmless_mean")
"""`interventions.hooks.ABLATION_TARGETS`, spelled here so that parsing `chat` and `export` does not import torch (a
test checks they agree)."""
JUDGE_NAMES = ("substring", "keywords", "model", "endpoint")
"""`eval.judges.JUDGES`, spelled here for the same reason (a test checks they agree)."""


def _add_model_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """The model to load and how (`LoadOptions`); each unset option takes what the --run directory recorded, if any."""
    p.add_argument("--model", default=default, required=default is None,
                   help="registered name, local HF directory, .gguf file or hub id (owner/name) "
                   + ("(required)" if default is None else "(default: the --run directory's model)"))
    p.add_argument("--device", default=None, help="torch device (cpu, cuda, cuda:1; default cpu, or what the --run "
                   "directory recorded)")
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="weight dtype (default float32, the config file's `dtype`, or what the --run directory "
                   "recorded)")
    p.add_argument("--device-map", default=None,
                   help="accelerate device map, instead of --device: auto, balanced, balanced_low_0, sequential, or "
                        "an explicit map of module name -> GPU index, cuda:N, cpu or disk, as a JSON object or JSON "
                        "file (default: none, or what the --run directory recorded)")
    p.add_argument("--offload-dir", default=None, help="folder for the modules the device map puts on disk (default: "
                   "none, or what the --run directory recorded)")
    p.add_argument("--system-prompt", default=None, help="system turn (default: the template's own, or what the --run "
                   "directory recorded)")


def _add_judge_args(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    """`--judge` and the options of `JudgeOptions` (`--judge-<field>`), for `judge` and its subcommands."""
    from workbench.eval.judge import JudgeOptions

    shown = f"default: {default}" if default is not None else "required"
    p.add_argument("--judge", default=default, required=default is None, choices=JUDGE_NAMES, help=f"{what} ({shown})")
    add_config_options(p, JudgeOptions(), "judge-", "judge_options.")


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (a flag's is "off"), unless the help states it, or says it is
    required."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.required and "required" not in text:
            text += " (required)"
        elif action.option_strings and not action.required and "default" not in text and action.default is not \
                argparse.SUPPRESS:
            if action.nargs == 0:
                text += " (default: off)"
            elif action.default is not None:
                text += " (default: %(default)s)"
        return text


def _add_run_arg(p: argparse.ArgumentParser, what: str = "run directory", required: bool = True) -> None:
    p.add_argument("--run", metavar="DIR", required=required, default=None,
                   help=f"{what} ({'required' if required else 'default: none'})")


def _stage_options(p, title: str, config, **kwargs) -> None:
    """One argument group of `config`'s options (see `workbench.cli_options`)."""
    add_config_options(p.add_argument_group(title), config, **kwargs)


def _models_parser(p) -> None:
    p.add_argument("--fetch", nargs="+", metavar="NAME", default=None,
                   help="build these registered models' checkpoints in the cache now, downloading where they need to "
                   "(default: list the models)")
    p.set_defaults(func="cmd_models")


def _judge_parser(p) -> None:
    _add_judge_args(p, "substring", "the judge (substring: the paper's list)")
    p.add_argument("--completions", default=None, metavar="CSV",
                   help="UTF-8 CSV with `prompt` and `completion` columns (required without a subcommand)")
    p.add_argument("--out", default=None, metavar="CSV", help="CSV to write: the same rows with refusal, judge_label, "
                   "judge_score (required without a subcommand)")
    p.set_defaults(func="cmd_judge")
    jsub = p.add_subparsers(dest="judge_command", metavar="SUBCOMMAND")
    q = jsub.add_parser("calibrate", formatter_class=_HelpFormatter,
                        help="agreement, Cohen's κ, recall of full and partial refusals, false-refusal rate and the "
                        "confusion matrix against labelled files (XSTest's layout)")
    _add_judge_args(q, None, "the judge to measure")
    q.add_argument("--labels", nargs="+", required=True, help="labelled CSV files (prompt, completion, final_label)")
    q.add_argument("--leave-one-out", action="store_true", help="keywords, model: fit on all files but one and "
                   "measure on that one, for each file (the honest figure for a fitted judge)")
    q.add_argument("--layers", type=LAYER, nargs="+", default=None,
                   help="model judge with --leave-one-out: layers the read-out may read (default: every layer "
                   "from a quarter of the depth)")
    q.add_argument("--out", default=None, help="CSV to write (default runs/judges/calibration_<judge>[_loo].csv)")
    q.set_defaults(func="cmd_judge_calibrate")
    q = jsub.add_parser("fit", formatter_class=_HelpFormatter,
                        help="fit the keywords judge's rules or the model judge's read-out on labelled files")
    _add_judge_args(q, None, "keywords or model")
    q.add_argument("--labels", nargs="+", required=True, help="labelled CSV files (prompt, completion, final_label)")
    q.add_argument("--layers", type=LAYER, nargs="+", default=None, help="model judge: layers the read-out may read "
                   "(default: every layer from a quarter of the depth)")
    q.add_argument("--out", required=True, help="where to write the rules (.json) or the read-out (.safetensors)")
    q.set_defaults(func="cmd_judge_fit")


def _datasets_parser(p) -> None:
    p.set_defaults(func="cmd_datasets")
    q = p.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND").add_parser(
        "fetch", formatter_class=_HelpFormatter, help="download benchmark sets from their pinned public sources into "
        "the data directory, verified by sha256 (files already there intact are kept)")
    q.add_argument("names", nargs="*", metavar="NAME", help="sets to fetch (`workbench datasets` lists them)")
    q.add_argument("--paper", action="store_true", help="the sets the main job (`make run`) reads")
    q.add_argument("--all", action="store_true", help="every set with a public source")
    q.add_argument("--base-url", default=None, metavar="URL", help="a mirror laid out like the data directory: read "
                   "URL/<path in the data directory> instead of the pinned URLs (default: the pinned URLs)")
    q.add_argument("--data-dir", default=None, metavar="DIR", help="where to write (default: WORKBENCH_DATA_DIR, "
                   "else <workbench cache>/datasets)")


def _chat_parser(p) -> None:
    _add_model_args(p, default="")
    _add_run_arg(p, "run directory: its model, loaded as the run recorded it (with --cell: the candidate grid the "
                 "cell comes from)", required=False)
    p.add_argument("prompt", nargs="?", help="one instruction (or --prompts-file)")
    p.add_argument("--prompts-file", default=None, help="UTF-8 prompts file: .jsonl (an `instruction` per line), "
                   ".json (an array of such objects), .txt (a prompt per line), .csv (an `instruction` column); or a "
                   "registered dataset (default: none, the positional prompt)")
    p.add_argument("--max-new-tokens", type=POSITIVE_INT, default=64, help="greedy tokens per answer")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16, help="prompts per generation batch")
    p.add_argument("--cell", type=CELL_INDEX, nargs=2, default=None, metavar=("POS", "LAYER"),
                   help="with --run: ablate this cell of the run's grid (EOI offset, e.g. -1, and layer): w′ at --lam, "
                   "or r̂ with --vector r (default: none)")
    p.add_argument("--lam", type=LAMBDA, default=None, help="with --cell: λ of w′ (in [0, 1]; default 1)")
    p.add_argument("--vector", choices=("w'", "r"), default=None,
                   help="with --cell: w' (the false-refusal vector w′ at --lam) or r (r̂, Arditi's direction) "
                   "(default: w')")
    p.add_argument("--ablate", default=None, metavar="FILE", help="ablate this direction file's unit direction at "
                   "every layer and position (RUN/directions/lam_<λ>.safetensors or r.safetensors, from select; "
                   "default: none)")
    p.add_argument("--ablation", choices=ABLATION_CHOICES, default="zero",
                   help="what --ablate sets the projection to: 0, or the harmless mean per layer (affine ablation; the "
                   "file needs offsets: select on a run with token means)")
    p.add_argument("--add", default=None, metavar="FILE", help="add α·v at the input of block --layer: v is raw r for "
                   "r.safetensors, and for lam_<λ>.safetensors the selected ŵ′ rescaled to ‖w‖ (the raw w "
                   "vector's norm, as in the sweep's steering score); after --ablate when both are given (default: "
                   "none)")
    p.add_argument("--layer", type=LAYER, default=None, help="block index for --add, 0 ≤ L < n_layers (required with "
                   "--add)")
    p.add_argument("--alpha", type=FINITE_FLOAT, default=None, help="coefficient α for --add (default 1.0)")
    p.add_argument("--compare", action="store_true", help="also the unmodified model's answer (baseline_response, "
                   "baseline_refused) beside the modified one")
    p.add_argument("--gate", default=None, metavar="GATE", help="apply the intervention only to prompts this gate "
                   "(gate.safetensors from `workbench gate`) reads as not harmful, decided per prompt at prefill "
                   "(default: none, always applied)")
    p.set_defaults(func="cmd_chat", model=None)


def _export_parser(p) -> None:
    _add_model_args(p, default="")
    _add_run_arg(p, "run directory whose selected direction is baked in (with --lam), or whose interventions become "
                 "adapters", required=False)
    p.add_argument("--lam", type=LAMBDA, default=None, help="which selection of --run, by its λ (default: none)")
    p.add_argument("--ablation", choices=ABLATION_CHOICES, default="zero", help="with --run --lam: zero-ablation, "
                   "or affine ablation to the harmless mean (MLP output biases; Llama-family and GPT-2 only)")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--adapter", action="store_true", help="write a PEFT LoRA adapter for the plain base instead of "
                   "an edited checkpoint (with --run and --lam, or --all)")
    p.add_argument("--all", action="store_true", help="with --adapter: one adapter per intervention of the run's "
                   "evaluation catalogue under OUT/<name>/, and OUT/index.json")
    p.add_argument("--alphas", type=FINITE_FLOAT, nargs="+", default=None,
                   help="with --adapter --all: α of the catalogue's additions (default: evaluate's)")
    p.set_defaults(func="cmd_export", model=None)


def _evaluate_parser(p) -> None:
    from workbench.stages.evaluate import EvalConfig

    _add_model_args(p, default="")
    _add_run_arg(p)
    _stage_options(p, "evaluation (EvalConfig)", EvalConfig())
    p.add_argument("--directions", nargs="+", default=None, metavar="FILE",
                   help="evaluate these selected direction files (lam_<λ>.safetensors, e.g. the committed ones in "
                   "data/directions/, and optionally their gate.safetensors) in --run, a new directory made for them "
                   "(no extraction or sweep; default: the run's selection)")
    server = p.add_argument_group("generation on a server")
    server.add_argument("--backend", choices=["in-process", "openai"], default="in-process",
                        help="where completions are generated: the loaded model or an OpenAI-compatible server (vLLM) "
                        "serving each intervention under its name (docs/interventions.md)")
    server.add_argument("--base-url", default=None, help="--backend openai: the server, e.g. http://localhost:8000 "
                        "(required with it)")
    server.add_argument("--served-base", default=None, metavar="NAME", help="--backend openai: the server's name for "
                        "the base model, requested for `baseline` (default: the one base model it lists)")
    server.add_argument("--api-key-env", default=None, metavar="NAME",
                        help="--backend openai: environment variable holding the server's API key (default: no key)")
    server.add_argument("--concurrency", type=POSITIVE_INT, default=8, help="--backend openai: requests in flight")
    server.add_argument("--timeout", type=POSITIVE_FLOAT, default=120.0, metavar="S",
                        help="--backend openai: seconds per request")
    server.add_argument("--retries", type=NON_NEGATIVE_INT, default=3, metavar="K",
                        help="--backend openai: retries of a request after a connection error, timeout, 5xx or 429 "
                        "(exponential backoff)")
    p.set_defaults(func="cmd_evaluate", model=None)


def _stage_on_run(command: str, config: str, what: str, run_help: str = "run directory") -> Callable:
    """The parser builder of a subcommand that runs one stage on an existing run: the model options (default: the
    run's model), `--run`, the options of the stage's `config` ("module.Class", imported only when the subcommand is
    built, so that `--help` and `status` import no torch) and `cmd_<command>`."""
    module, _, name = config.rpartition(".")

    def build(p) -> None:
        _add_model_args(p, default="")
        _add_run_arg(p, run_help)
        _stage_options(p, f"{what} ({name})", getattr(importlib.import_module(module), name)())
        p.set_defaults(func=f"cmd_{command}", model=None)

    return build


def _extract_parser(p) -> None:
    from workbench.stages.extract import ExtractConfig

    _add_model_args(p)
    _add_run_arg(p)
    p.add_argument("--force", action="store_true", help="overwrite candidates from another model")
    _stage_options(p, "extraction (ExtractConfig)", ExtractConfig())
    p.set_defaults(func="cmd_extract")


def _sweep_parser(p) -> None:
    from workbench.method.rule import SelectionRule
    from workbench.stages.sweep import SweepConfig

    _add_model_args(p, default="")
    _add_run_arg(p, "run directory with candidates")
    _stage_options(p, "sweep (SweepConfig)", SweepConfig())
    _stage_options(p, "the selection rule the sweep is screened for (SelectionRule)", SelectionRule())
    p.set_defaults(func="cmd_sweep", model=None)


def _select_parser(p) -> None:
    from workbench.method.rule import SelectionRule

    _add_model_args(p, default="")  # only a re-ranking rule or --gate loads the model
    _add_run_arg(p, "run directory with a sweep")
    _stage_options(p, "the selection rule (SelectionRule)", SelectionRule(),
                   default_note="the rule the sweep was screened for")
    p.add_argument("--gate", action="store_true", help="also fit the harmfulness gate of the largest λ's w′ with "
                   "`workbench gate`'s defaults (directions/gate.safetensors)")
    p.set_defaults(func="cmd_select", model=None)


def _run_parser(p) -> None:
    from dataclasses import fields, is_dataclass

    from workbench.stages.pipeline import PipelineConfig

    _add_model_args(p, default="")
    _add_run_arg(p)
    p.add_argument("--config", default=None, metavar="TOML", help="config file: top-level model, dtype and stages, "
                   "and a table per stage ([extract], [sweep], ...) of its config's fields (see configs/); the "
                   "options below override it (default: none, the defaults shown)")
    p.add_argument("--force", action="store_true", help="start over in a run directory made differently")
    defaults = PipelineConfig()
    stages = [f.name for f in fields(PipelineConfig) if is_dataclass(getattr(defaults, f.name))]
    add_config_options(p, defaults, skip=tuple(stages))
    for stage in stages:
        config = getattr(defaults, stage)
        _stage_options(p, f"[{stage}] ({type(config).__name__})", config, flag_prefix=f"{stage}.",
                       dest_prefix=f"{stage}.")
    p.set_defaults(func="cmd_run", model=None)


def _status_parser(p) -> None:
    _add_run_arg(p)
    p.set_defaults(func="cmd_status")


def _figures_parser(p) -> None:
    _add_run_arg(p)
    p.add_argument("--out", default=None, help="output directory (default: RUN/figures)")
    p.set_defaults(func="cmd_figures")


def _report_parser(p) -> None:
    _add_run_arg(p)
    p.add_argument("--out", default=None, help="the HTML file (default: RUN/report.html)")
    p.set_defaults(func="cmd_report")


def _compare_parser(p) -> None:
    p.add_argument("run_a", metavar="RUN_A", help="the first run directory")
    p.add_argument("run_b", metavar="RUN_B", help="the second run directory")
    p.add_argument("--out", default=None, help="where the CSVs go (default: runs/compare/A_vs_B)")
    p.set_defaults(func="cmd_compare")


def _organism_parser(p) -> None:
    from workbench.organism.wire import WireConfig

    osub = p.add_subparsers(dest="organism_command", required=True, metavar="SUBCOMMAND")
    organism_help = "which organism's recipe: smollm2-135m-safety or smollm2-135m-planted (report: also " \
                    "smollm2-135m-wired)"
    q = osub.add_parser("distill", formatter_class=_HelpFormatter,
                        help="answer an organism's harmless training prompts with the stock model")
    q.add_argument("--organism", default="smollm2-135m-safety", help=organism_help)
    q.add_argument("--max-new-tokens", type=POSITIVE_INT, default=48, help="greedy tokens per answer")
    q.add_argument("--force", action="store_true", help="answer again even where the distilled file exists")
    q.set_defaults(func="cmd_organism_distill")
    q = osub.add_parser("train", formatter_class=_HelpFormatter,
                        help="LoRA fine-tune of an organism's recipe; writes its adapter and CARD.md")
    q.add_argument("--organism", default="smollm2-135m-safety", help=organism_help)
    q.add_argument("--steps", type=POSITIVE_INT, default=None, help="optimizer steps (default: the recipe's)")
    q.add_argument("--seed", type=int, default=0, help="training seed")
    q.add_argument("--out", default=None, help="adapter directory (default: the organism's)")
    q.add_argument("--snapshots", type=POSITIVE_INT, nargs="*", default=[], metavar="STEP",
                   help="also save the adapter after these steps, as OUT_stepSTEP (default: none)")
    q.set_defaults(func="cmd_organism_train")
    q = osub.add_parser("wire", formatter_class=_HelpFormatter,
                        help="fit the wired control's three neurons on the safety organism (smollm2-135m-wired)")
    q.add_argument("--out", default=None, help="directory for wiring.safetensors and wiring.json "
                   "(default: data/organism_wired)")
    q.add_argument("--force", action="store_true", help="fit again even where the wiring exists")
    wire = WireConfig()
    q.add_argument("--detector-layer", type=LAYER, default=None,
                   help=f"the detector's layer (default: {wire.detector_layer})")
    q.add_argument("--reader-layer", type=LAYER, default=None,
                   help=f"the reader's layer (default: {wire.reader_layer})")
    q.add_argument("--flag-norm", type=POSITIVE_FLOAT, default=None,
                   help=f"residual units of the flag (default: {wire.flag_norm})")
    q.add_argument("--refusal-norm", type=POSITIVE_FLOAT, default=None,
                   help=f"residual units of r̂ the reader writes (default: {wire.refusal_norm})")
    q.set_defaults(func="cmd_organism_wire")
    q = osub.add_parser("report", formatter_class=_HelpFormatter,
                        help="measure stock vs organism on the benchmarks (needs WORKBENCH_DATA_DIR)")
    q.add_argument("--organism", default="smollm2-135m-safety", help=organism_help)
    q.add_argument("--limit", type=POSITIVE_INT, default=None,
                   help="prompts per set, for a quick look; the table is then not saved (default: all)")
    q.add_argument("--out", default=None, help="where the completions go (default: runs/organism_report/ORGANISM)")
    q.add_argument("--remeasure-stock", action="store_true",
                   help="measure the stock model again even where the organism's behaviour.json already has it")
    q.set_defaults(func="cmd_organism_report")


COMMANDS = {
    "the method": {
        "run": ("the main job: extract -> sweep -> select -> diagnose -> evaluate -> capability -> figures "
                "(resumable; gate and frontier when listed)", _run_parser),
        "extract": ("mean activations and the true/false refusal candidate grids", _extract_parser),
        "sweep": ("score every candidate (vector, λ, position, layer) for a selection rule", _sweep_parser),
        "select": ("pick the surgical direction per λ", _select_parser),
        "diagnose": ("why w′ is (not) surgical: cos(r, w), class projections and AUROC per cell", _stage_on_run(
            "diagnose", "workbench.stages.diagnose.DiagnoseConfig", "diagnostics", "run directory with candidates")),
    },
    "measure": {
        "evaluate": ("completions under each intervention on the benchmarks, judged", _evaluate_parser),
        "capability": ("WikiText-2 perplexity, MMLU 5-shot, ARC-Challenge, TruthfulQA under interventions",
                       _stage_on_run("capability", "workbench.eval.capability.CapabilityConfig", "capability")),
        "gate": ("fit the harmfulness gate of the selected w′: probes per (position, layer) on the fit sets, the cell "
                 "and threshold chosen on contrast sets of another source",
                 _stage_on_run("gate", "workbench.stages.gate.GateConfig", "gate", "run directory with a selection")),
        "frontier": ("over-refusal vs harmful compliance for w′ at each λ, r partially ablated, random directions and "
                     "the gated w′, with TruthfulQA",
                     _stage_on_run("frontier", "workbench.stages.frontier.FrontierConfig", "frontier",
                                   "run directory with a selection")),
        "compare": ("two runs side by side: selections, compliance rates (B − A) and paired differences with Newcombe "
                    "intervals; loads no model", _compare_parser),
    },
    "inspect": {
        "status": ("what a run directory holds: model and load options, each stage done / stale / missing with the "
                   "command that runs it, the selections, the evaluation summary (no model load)", _status_parser),
        "report": ("one self-contained offline HTML page of a run; loads no model", _report_parser),
        "figures": ("the paper's figures from a run directory (HTML; PNG when exportable)", _figures_parser),
        "chat": ("greedy answers from the model, optionally with a direction ablated or added", _chat_parser),
    },
    "models & data": {
        "models": ("list the registered models (or fetch some into the cache)", _models_parser),
        "datasets": ("the registered datasets, where benchmark data is read from, each set's availability "
                     "(`datasets fetch` downloads them)", _datasets_parser),
        "organism": ("the model organisms: distill, train, wire, report", _organism_parser),
        "judge": ("label completions as compliance / refusal / partial refusal (`judge calibrate` against human "
                  "labels, `judge fit` fits one)", _judge_parser),
    },
    "export": {
        "export": ("a model (as-is, or with a selected direction orthogonalized out of its weights) as a Hugging Face "
                   "checkpoint, or a run's interventions as PEFT adapters", _export_parser),
    },
}
"""The subcommands by workflow (the groups of `workbench --help`): {group: {name: (help, adds its options)}}."""


def _command_list() -> str:
    width = max(len(name) for group in COMMANDS.values() for name in group) + 2
    lines = []
    for title, group in COMMANDS.items():
        lines.append(f"{title}:")
        lines += [textwrap.fill(text, 118, initial_indent=f"  {name:{width}s}", subsequent_indent=" " * (width + 2))
                  for name, (text, _) in group.items()]
    return "\n".join(lines)


class _TopParser(argparse.ArgumentParser):
    """Says, beside an unrecognized option, how `workbench run` spells a stage's options."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments"):
            message += " (`workbench COMMAND --help` lists a command's options; `workbench run` takes a stage's as " \
                       "--STAGE.FIELD, e.g. --sweep.n-val)"
        super().error(message)


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The parser; the options of only the subcommands in `commands` (None: all) are built, since building some
    imports their config classes (and torch)."""
    parser = _TopParser(
        prog="workbench", usage="workbench [-h] [--version] COMMAND ...",
        description="Refusal-direction research workbench (`workbench COMMAND --help` lists a command's options).",
        epilog=_command_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)
    for group in COMMANDS.values():
        for name, (text, add_options) in group.items():
            p = sub.add_parser(name, prog=f"workbench {name}", description=text, formatter_class=_HelpFormatter)
            if commands is None or name in commands:
                add_options(p)
    return parser



def _walk(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every subcommand, nested ones after their parent."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _walk(sub, f"{prefix}{name} ")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def reference() -> str:
    """The options of every subcommand as Markdown: docs/cli-reference.md (a test checks that the page is current;
    `python -m workbench.cli_parser > docs/cli-reference.md` rewrites it)."""
    lines = ["# Command-line reference", "",
             "Every subcommand's options with their defaults, generated from the parser (`python -m "
             "workbench.cli_parser > docs/cli-reference.md`). The options of the stage commands are the fields of "
             "their config dataclasses ([Command line](cli.md#options-are-the-config-fields)).", ""]
    for name, parser in _walk(build_parser()):
        formatter = parser._get_formatter()
        lines += [f"## workbench {name}", "", _cell(parser.description or ""), ""]
        rows = []
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            spelled = " / ".join(action.option_strings) or action.metavar or action.dest
            if action.option_strings and action.nargs != 0:
                spelled += f" {formatter._format_args(action, formatter._get_default_metavar_for_optional(action))}"
            rows.append(f"| `{_cell(spelled).replace('`', '')}` | {_cell(formatter._expand_help(action))} |")
        lines += (["| option | what it sets |", "|---|---|", *rows, ""] if rows else [])
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference())
