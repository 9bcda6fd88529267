"""A run's report as one self-contained HTML page: pure assembly from tables, figures and text (reading the run is
`workbench.stages.report`'s job).

The page works offline: plotly.js is inlined once in its head and every figure is a `<div>` drawn by it, never a
`<script src=...>`. Every text from the run (prompts, completions, config values) is HTML-escaped; a section the run
has not made yet says so with the command that makes it (`not_run_yet`).
"""

import html
import json
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

SELECTION_SCORES = ("ablation_refusal_score_pseudo_harmful", "ablation_refusal_score_harmful", "ablation_kl",
                    "steering_refusal_score", "steering_kl", "stage")
"""The per-cell scores of `selection.json` the selection table shows (beside λ, position and layer)."""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table.data { border-collapse: collapse; font-size: .88em; margin: .5em 0 1em; }
table.data th, table.data td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
table.data th { background: #f4f4f4; }
td.text { max-width: 40em; white-space: pre-wrap; word-break: break-word; }
p.missing { color: #8a4b00; background: #fff6e5; padding: .4em .6em; border-left: 3px solid #e0a030; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
nav a { margin-right: 1em; }
"""


@dataclass(frozen=True)
class Section:
    """One titled part of the page; `body` is HTML (built by this module's helpers, so already escaped)."""

    title: str
    body: str

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def not_run_yet(command: str, what: str = "") -> str:
    """The placeholder of a part the run has not made: `command` is the one that makes it."""
    prefix = f"{html.escape(what)}: " if what else ""
    return f'<p class="missing">{prefix}not run yet: <code>{html.escape(command.strip("`"))}</code></p>'


def paragraph(text: str) -> str:
    return f"<p>{escape(text)}</p>"


CONTROL_CHARACTERS = {c: f"\\x{c:02x}" for c in range(32) if chr(c) not in "\n\t"} | {127: "\\x7f"}
"""Control characters (which a small model's completions can hold, and which HTML does not allow) shown as `\\xNN`."""


def escape(text: str) -> str:
    """`text` safe in HTML: markup escaped, control characters spelled out."""
    return html.escape(text.translate(CONTROL_CHARACTERS))


def _cell(value, digits: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def html_table(frame: pd.DataFrame, index: bool = True, digits: int = 3, text_columns: tuple[str, ...] = ()) -> str:
    """A DataFrame as an HTML table, every cell escaped, floats to `digits` places (empty where missing);
    `text_columns` wrap (long prompts and completions)."""
    names = ([str(frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for key, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        cells = [f"<th>{_cell(key, digits)}</th>"] if index else []
        cells += [(f'<td class="text">{_cell(v, digits)}</td>' if str(c) in text_columns
                   else f"<td>{_cell(v, digits)}</td>") for c, v in zip(frame.columns, row, strict=True)]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def record_table(record: dict) -> str:
    """A flat dict (a model record) as a two-column table; nested values as JSON."""
    frame = pd.DataFrame({"value": [v if isinstance(v, str | int | float) else json.dumps(v, ensure_ascii=False)
                                    for v in record.values()]}, index=pd.Index(list(record), name="field"))
    return html_table(frame)


def json_block(obj, summary: str) -> str:
    """`obj` as indented JSON in a collapsed block."""
    text = html.escape(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    return f"<details><summary>{html.escape(summary)}</summary><pre>{text}</pre></details>"


def figure_block(fig: go.Figure, name: str) -> str:
    """A plotly figure as a `<div>` and the call that draws it; plotly.js itself is in the page's head."""
    return f'<div class="figure" id="fig-{html.escape(name)}">' + fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"plot-{name}") + "</div>"


def selection_frame(selection: dict) -> pd.DataFrame:
    """`selection.json` as a table: one row per λ (its cell and scores), then r (the true-refusal selection)."""
    rows = [{"vector": "w'", "lam": s.get("lam"), "pos": s.get("pos"), "layer": s.get("layer"),
             **{k: s.get(k) for k in SELECTION_SCORES}} for s in selection.get("selections", [])]
    true = selection.get("r")
    if isinstance(true, dict):
        rows.append({"vector": "r", "lam": None, "pos": true.get("pos"), "layer": true.get("layer"),
                     **{k: true.get(k) for k in SELECTION_SCORES}})
    columns = ["vector", "lam", "pos", "layer", *SELECTION_SCORES]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.dropna(axis=1, how="all").astype({c: "Int64" for c in ("pos", "layer") if c in frame})


def completions_sample(completions: pd.DataFrame, per_pair: int = 3) -> pd.DataFrame:
    """The first `per_pair` completions of every (dataset, intervention), with the prompt, the response and every
    judge's label (`refused` is the paper's substring judge; `label_<judge>` the calibrated judges')."""
    labels = [c for c in completions.columns if c == "refused" or c.startswith("label_")]
    columns = ["dataset", "intervention", "instruction", "response", *labels]
    return (completions.groupby(["dataset", "intervention"], sort=True, group_keys=False).head(per_pair)
            .sort_values(["dataset", "intervention"], kind="stable")[columns].reset_index(drop=True))


def completions_block(sample: pd.DataFrame) -> str:
    """`completions_sample` as one table per (dataset, intervention), under a heading per dataset (baseline first)."""
    parts = []
    for dataset, by_dataset in sample.groupby("dataset", sort=True):
        parts.append(f"<h3>{escape(str(dataset))}</h3>")
        for intervention in sorted(set(by_dataset.intervention), key=lambda name: (name != "baseline", name)):
            rows = by_dataset[by_dataset.intervention == intervention]
            parts.append(f"<h4>{escape(str(intervention))}</h4>")
            parts.append(html_table(rows.drop(columns=["dataset", "intervention"]), index=False,
                                    text_columns=("instruction", "response")))
    return "".join(parts)


def report_page(title: str, sections: list[Section], plotly_js: str | None) -> str:
    """The whole page: a table of contents and the sections; `plotly_js` (the library's source) inlined once in the
    head when any section draws a figure."""
    script = f'<script type="text/javascript">{plotly_js}</script>' if plotly_js else ""
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style>{script}</head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}"
            "</body></html>\n")
