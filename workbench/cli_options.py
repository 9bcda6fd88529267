"""Command-line options derived from the config dataclasses: one option per field, named after it, its attribute
docstring as help, its default shown, enumerations as choices, numbers parsed by checked types.

The rule, for a field `n_val` of a config:

- the option is `--n-val` (`--STAGE.n-val` on `workbench run`, where every stage's config is one table, as in the
  TOML file); the fields of a nested options dataclass such as `judge_options` are `--judge-<field>`;
- a `bool` field is a pair `--x` / `--no-x` (`--STAGE.x` / `--STAGE.no-x`), a `tuple[...]` field takes its
  values in a row (none at all for an empty tuple), a field that may be None also takes the word `none`;
- the option's default is "not given" (argparse.SUPPRESS): `config_from_args` replaces on a base config (the
  dataclass defaults, a `--config` file, a run's recorded rule) exactly the fields whose options were given, so
  flags override the base by one rule and nothing needs a second list of which flags exist.

Argparse is kept (rather than tyro, simple-parsing, jsonargparse or cyclopts) because the options of a subcommand
are built only when that subcommand runs (the config dataclasses live in modules that import torch, and `workbench
status` must not), config files are already read strictly by `stages.config_file.from_dict`, and errors keep
argparse's one-line form (`argument --n-val: expected an integer ≥ 1, got 0`).
"""

import argparse
import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from typing import Any


def _number(kind: type, low: float, inclusive: bool = True, high: float | None = None, what: str = ""):
    """An argparse type: a `kind` number ≥ low (or > low unless `inclusive`) and ≤ high; refused before any model
    loads, with the option named by argparse."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what or kind.__name__}, got {text!r}") from None
        if (value != value or (value < low if inclusive else value <= low) or (high is not None and value > high)
                or value in (math.inf, -math.inf)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in "invalid <type> value" messages
    return parse


POSITIVE_INT = _number(int, 1, what="an integer ≥ 1")
COUNT_OR_ALL = _number(int, 0, what="an integer ≥ 0 (0: all)")
LAMBDA = _number(float, 0.0, high=1.0, what="λ in [0, 1]")
FRACTION = _number(float, 0.0, high=0.99, what="a fraction in [0, 0.99]")
POSITIVE_FLOAT = _number(float, 0.0, inclusive=False, what="a number > 0")
NON_NEGATIVE_FLOAT = _number(float, 0.0, high=math.inf, what="a finite number ≥ 0")
NON_NEGATIVE_INT = _number(int, 0, what="an integer ≥ 0")
RERANK_K = _number(int, 2, what="an integer ≥ 2")
FINITE_FLOAT = _number(float, -math.inf, inclusive=False, high=math.inf, what="a finite number")
LAYER = _number(int, 0, what="a layer index ≥ 0")
EOI_OFFSET = _number(int, -10**6, high=-1, what="a negative EOI offset (-1 is the last template token)")
SHARE = _number(float, 0.0, high=1.0, what="a share in [0, 1]")
STRENGTH = _number(float, 0.0, high=1.0, inclusive=False, what="β in (0, 1]")
LEVEL = _number(float, 0.0, high=0.9999, inclusive=False, what="a level in (0, 1)")
CELL_INDEX = _number(int, -10**6, high=10**6, what="an integer (an EOI offset such as -1, then a layer)")

FIELD_TYPES: dict[str, Any] = {
    # counts of prompts, questions, tokens, candidates
    "batch_size": POSITIVE_INT, "n_train": POSITIVE_INT, "n_val": POSITIVE_INT, "n_screen": POSITIVE_INT,
    "n_finalists": POSITIVE_INT, "min_finalists": POSITIVE_INT, "n_fit": POSITIVE_INT, "n_contrast": POSITIVE_INT,
    "limit": POSITIVE_INT, "max_new_tokens": POSITIVE_INT, "rerank_n": POSITIVE_INT,
    "rerank_max_new_tokens": POSITIVE_INT, "perplexity_tokens": POSITIVE_INT, "window": POSITIVE_INT,
    "n_mmlu": COUNT_OR_ALL, "n_arc": COUNT_OR_ALL, "n_truthfulqa": NON_NEGATIVE_INT, "mmlu_shots": NON_NEGATIVE_INT,
    "max_completion_tokens": POSITIVE_INT, "rerank_top_k": NON_NEGATIVE_INT, "seed": NON_NEGATIVE_INT,
    "seeds": NON_NEGATIVE_INT,
    # grid coordinates
    "layers": LAYER, "positions": EOI_OFFSET,
    # dials, bounds and margins
    "lams": LAMBDA, "lam": LAMBDA, "betas": STRENGTH, "alphas": FINITE_FLOAT, "steering_coeff": FINITE_FLOAT,
    "min_steering_refusal_score": FINITE_FLOAT, "stop_margin": NON_NEGATIVE_FLOAT,
    "screen_kl_margin": NON_NEGATIVE_FLOAT, "prune_layer_fraction": FRACTION, "max_ablation_kl": POSITIVE_FLOAT,
    "r_max_ablation_kl": POSITIVE_FLOAT, "max_harmful_drop": NON_NEGATIVE_FLOAT,
    "rerank_max_harmful_rise": SHARE, "bound": SHARE, "gate_bounds": SHARE, "ci_level": LEVEL,
}  # fmt: skip
"""The checked type of every numeric config field, by field name (a name means one range wherever it appears); a
numeric field missing here is an error when its option is built."""


def _modes():
    from workbench.stages.sweep import MODES

    return MODES


def _ablations():
    from workbench.interventions.hooks import ABLATION_TARGETS

    return tuple(ABLATION_TARGETS)


def _judges():
    from workbench.eval.judges import JUDGES

    return tuple(JUDGES)


def _tasks():
    from workbench.eval.capability import TASKS

    return TASKS


def _dtypes():
    from workbench.stages.config_file import DTYPE_NAMES

    return DTYPE_NAMES


def _stages():
    from workbench.stages.pipeline import STAGES

    return STAGES


CHOICES = {"mode": _modes, "ablation": _ablations, "judge": _judges, "rerank_judge": _judges, "tasks": _tasks,
           "dtype": _dtypes, "stages": _stages}
"""The enumerations among the config fields, by field name: each from its registry (imported when needed)."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass's fields (the string literal right after each annotated field),
    whitespace collapsed."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without `| None`, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return " ".join(map(_show, value)) if value else "(none)"
    return str(value)


class _NoneWord:
    """The word `none` on the command line, for a field that may be None."""

    def __repr__(self) -> str:
        return "none"


NONE = _NoneWord()


def _or_none(parse):
    def parse_or_none(text: str):
        return NONE if text == "none" else parse(text)

    parse_or_none.__name__ = getattr(parse, "__name__", "value")
    parse_or_none.checked = parse  # the type it wraps
    return parse_or_none


class _Flag(argparse.Action):
    """A bool field: `--x` sets it, `--no-x` (the second option string) clears it."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string != self.option_strings[1])

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


class _Store(argparse.Action):
    """Store a field's value: a tuple for `nargs='+'`, None for the word `none` (alone)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(values, list):
            if any(v is NONE for v in values):
                if len(values) > 1:
                    raise argparse.ArgumentError(self, "`none` goes alone")
                values = None
            else:
                values = tuple(values)
        elif values is NONE:
            values = None
        setattr(namespace, self.dest, values)


def nested_prefix(name: str) -> str:
    """The option prefix of a nested options dataclass's fields: `judge_options` -> `judge-`."""
    return name.removesuffix("_options").replace("_", "-") + "-"


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One field's option: its flag, its destination in the parsed namespace, the config class it belongs to."""

    flag: str
    dest: str
    cls: type
    field: str


def add_config_options(parser: "argparse._ActionsContainer", config: Any, flag_prefix: str = "", dest_prefix: str = "",
                       skip: tuple[str, ...] = (), default_note: str | None = None) -> list[ConfigOption]:
    """Add one option per field of the dataclass instance `config` (its values are the defaults shown) to `parser`
    (or an argument group), except the fields in `skip`; returns them. `default_note` says what the default is when
    the shown value is only the fallback (e.g. "the rule the sweep was screened for")."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = getattr(config, f.name)
        annotation, optional = _unwrap(hints[f.name])
        if dataclasses.is_dataclass(annotation):
            added += add_config_options(parser, default, flag_prefix + nested_prefix(f.name),
                                        f"{dest_prefix}{f.name}.", default_note=default_note)
            continue
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring: every config field needs one (its help)")
        flag, dest = f"--{flag_prefix}{f.name.replace('_', '-')}", f"{dest_prefix}{f.name}"
        shown = f"default: {_show(default)}" if default_note is None else \
            f"default: {default_note}, else {_show(default)}"
        help_text = f"{docs[f.name].removesuffix('.')} ({shown})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            parser.add_argument(flag, f"--{flag_prefix}no-{f.name.replace('_', '-')}", action=_Flag, **kwargs)
            added.append(ConfigOption(flag, dest, cls, f.name))
            continue
        many = typing.get_origin(annotation) is tuple
        item = typing.get_args(annotation)[0] if many else annotation
        kwargs["metavar"] = f.name.upper()
        if f.name in CHOICES:
            parse, kwargs["choices"] = str, CHOICES[f.name]()
            listed = ",".join(kwargs["choices"])
            if len(listed) <= 40:
                kwargs["metavar"] = "{" + listed + "}"
            else:
                kwargs["help"] = help_text[:-1] + f"; choices: {', '.join(kwargs['choices'])})"
        elif item in (int, float):
            if f.name not in FIELD_TYPES:
                raise TypeError(f"{cls.__name__}.{f.name}: a numeric field without a checked type (add it to "
                                "workbench.cli_options.FIELD_TYPES)")
            parse = FIELD_TYPES[f.name]
        elif item is str:
            parse = str
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for {hints[f.name]!r}")
        parser.add_argument(flag, action=_Store, type=_or_none(parse) if optional else parse,
                            nargs=("+" if optional else "*") if many else None, **kwargs)
        added.append(ConfigOption(flag, dest, cls, f.name))
    return added


def given_values(args: argparse.Namespace, cls: type, dest_prefix: str = "") -> dict[str, Any]:
    """The fields of `cls` whose options were given, as {field: value} (nested options dataclasses as dicts)."""
    values = vars(args)
    hints = typing.get_type_hints(cls)
    given: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        annotation = _unwrap(hints[f.name])[0]
        if dataclasses.is_dataclass(annotation):
            nested = given_values(args, annotation, f"{dest_prefix}{f.name}.")
            if nested:
                given[f.name] = nested
        elif f"{dest_prefix}{f.name}" in values:
            given[f.name] = values[f"{dest_prefix}{f.name}"]
    return given


def flat(given: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`given_values`' nested dicts as {"evaluate.judge_options.model": value}."""
    out = {}
    for key, value in given.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def config_from_args(args: argparse.Namespace, base: Any, dest_prefix: str = "") -> Any:
    """`base` (a config dataclass instance) with the fields whose options were given replaced by their values."""
    return _replace(base, given_values(args, type(base), dest_prefix))


def _replace(base: Any, given: dict[str, Any]) -> Any:
    values = {k: _replace(getattr(base, k), v) if isinstance(v, dict) else v for k, v in given.items()}
    return dataclasses.replace(base, **values)
